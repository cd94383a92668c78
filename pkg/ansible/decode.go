package ansible

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ParamError is a parameter that could not be accepted. Path names the
// parameter as a user writes it, for example "docker_images[0].context".
type ParamError struct {
	Path string
	Msg  string
}

func (e *ParamError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return fmt.Sprintf("parameter %s: %s", e.Path, e.Msg)
}

// Decode converts the task arguments in args into dst, a pointer to a
// parameter struct, with Ansible's conversions and checks. It returns the
// values of every no_log parameter that was set, so they can be redacted.
func Decode(args map[string]any, dst any) (secrets []string, err error) {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("decode destination must be a pointer to a struct, not %T", dst)
	}
	opts, err := Options(v.Type())
	if err != nil {
		return nil, err
	}
	d := &decoder{}
	// Collect secrets first so that a later failure cannot leak them.
	d.collectSecrets(opts, args)
	if err := d.decodeStruct("", opts, args, v.Elem(), true); err != nil {
		return d.secrets, err
	}
	return d.secrets, nil
}

type decoder struct {
	secrets []string
}

func (d *decoder) addSecret(v any) {
	switch s := v.(type) {
	case string:
		if s != "" {
			d.secrets = append(d.secrets, s)
		}
	case json.Number:
		d.secrets = append(d.secrets, s.String())
	case []any:
		for _, e := range s {
			d.addSecret(e)
		}
	case map[string]any:
		for _, e := range s {
			d.addSecret(e)
		}
	}
}

func (d *decoder) collectSecrets(opts []Option, args map[string]any) {
	for _, o := range opts {
		val, ok := lookup(o, args)
		if !ok {
			continue
		}
		if o.NoLog {
			d.addSecret(val)
			continue
		}
		if len(o.values) > 0 {
			if x, ok := val.(map[string]any); ok {
				for _, v := range x {
					if m, ok := v.(map[string]any); ok {
						d.collectSecrets(o.values, m)
					}
				}
			}
			continue
		}
		if len(o.Suboptions) == 0 {
			continue
		}
		switch x := val.(type) {
		case map[string]any:
			d.collectSecrets(o.Suboptions, x)
		case []any:
			for _, e := range x {
				if m, ok := e.(map[string]any); ok {
					d.collectSecrets(o.Suboptions, m)
				}
			}
		case string:
			if m, err := parseDict(x); err == nil {
				d.collectSecrets(o.Suboptions, m)
			}
		}
	}
}

func lookup(o Option, args map[string]any) (any, bool) {
	if v, ok := args[o.Name]; ok {
		return v, true
	}
	for _, a := range o.Aliases {
		if v, ok := args[a]; ok {
			return v, true
		}
	}
	return nil, false
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func (d *decoder) decodeStruct(prefix string, opts []Option, args map[string]any, dst reflect.Value, top bool) error {
	known := map[string]bool{}
	for _, o := range opts {
		known[o.Name] = true
		for _, a := range o.Aliases {
			known[a] = true
		}
	}
	var unknown []string
	for k := range args {
		if top && strings.HasPrefix(k, "_ansible_") {
			continue
		}
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		where := "Unsupported parameters"
		if prefix != "" {
			where = fmt.Sprintf("Unsupported parameters in %s", prefix)
		}
		return &ParamError{Msg: fmt.Sprintf("%s: %s. Supported parameters include: %s.",
			where, strings.Join(unknown, ", "), strings.Join(optionNames(opts), ", "))}
	}
	for _, o := range opts {
		path := join(prefix, o.Name)
		val, ok := lookup(o, args)
		if ok && val == nil {
			ok = false // YAML null: treat as not given, as Ansible does
		}
		if !ok {
			if o.Required {
				return &ParamError{Path: path, Msg: "is required but was not given"}
			}
			if o.Default == nil {
				continue
			}
			val = *o.Default
			if o.Type == "list" && *o.Default == "" {
				val = []any{}
			}
		}
		if err := d.decodeValue(path, o, val, dst.FieldByIndex(o.field)); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) decodeValue(path string, o Option, val any, dst reflect.Value) error {
	if o.raw {
		b, err := json.Marshal(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		if s, ok := val.(string); ok && (o.Type == "dict" || o.Type == "list") {
			// Ansible passes a templated dict through as a JSON string in
			// some contexts; accept it.
			if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
				b = []byte(t)
			}
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(dst.Addr().Interface()); err != nil {
			return &ParamError{Path: path, Msg: fmt.Sprintf("must be a %s: %v", o.Type, err)}
		}
		return nil
	}
	t := dst.Type()
	if t.Kind() == reflect.Pointer {
		p := reflect.New(t.Elem())
		if err := d.decodeValue(path, o, val, p.Elem()); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		s, err := toString(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		if o.path && s != "" {
			s = expandPath(s)
		}
		if len(o.Choices) > 0 && !contains(o.Choices, s) {
			return &ParamError{Path: path, Msg: fmt.Sprintf("must be one of: %s; got %q", strings.Join(o.Choices, ", "), s)}
		}
		dst.SetString(s)
	case reflect.Bool:
		b, err := toBool(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := toInt(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		if o.seconds {
			if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
				return &ParamError{Path: path, Msg: fmt.Sprintf("%d seconds is out of range", n)}
			}
			n *= int64(time.Second)
		}
		if dst.OverflowInt(n) {
			return &ParamError{Path: path, Msg: fmt.Sprintf("%d is out of range", n)}
		}
		dst.SetInt(n)
	case reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := toInt(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		if n < 0 || dst.OverflowUint(uint64(n)) {
			return &ParamError{Path: path, Msg: fmt.Sprintf("%d is out of range", n)}
		}
		dst.SetUint(uint64(n))
	case reflect.Float64:
		f, err := toFloat(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		dst.SetFloat(f)
	case reflect.Slice:
		items, err := toList(val, t.Elem().Kind() == reflect.String || t.Elem().Kind() == reflect.Slice)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		out := reflect.MakeSlice(t, len(items), len(items))
		eo := Option{Name: o.Name, Suboptions: o.Suboptions, Choices: o.Choices, path: o.path}
		for i, it := range items {
			ip := fmt.Sprintf("%s[%d]", path, i)
			if it == nil {
				return &ParamError{Path: ip, Msg: "must not be null"}
			}
			if err := d.decodeValue(ip, eo, it, out.Index(i)); err != nil {
				return err
			}
		}
		dst.Set(out)
	case reflect.Map:
		m, err := toDict(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for k, v := range m {
			ev := reflect.New(t.Elem()).Elem()
			eo := Option{Name: k}
			if len(o.values) > 0 {
				eo.Suboptions = o.values
			}
			if err := d.decodeValue(path+"."+k, eo, v, ev); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		dst.Set(out)
	case reflect.Struct:
		m, err := toDict(val)
		if err != nil {
			return &ParamError{Path: path, Msg: err.Error()}
		}
		return d.decodeStruct(path, o.Suboptions, m, dst, false)
	case reflect.Interface:
		dst.Set(reflect.ValueOf(val))
	default:
		return &ParamError{Path: path, Msg: fmt.Sprintf("unsupported type %s", t)}
	}
	return nil
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a dict"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func toString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", fmt.Errorf("must be a string, not %s", typeName(v))
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case json.Number:
		switch x.String() {
		case "1", "1.0":
			return true, nil
		case "0", "0.0":
			return false, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "yes", "on", "1", "true", "y", "t", "1.0":
			return true, nil
		case "no", "off", "0", "false", "n", "f", "0.0":
			return false, nil
		}
		return false, fmt.Errorf("must be a boolean (yes/no, true/false, 1/0), got %q", x)
	}
	return false, fmt.Errorf("must be a boolean, not %s", typeName(v))
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		if f, err := x.Float64(); err == nil && f == math.Trunc(f) {
			return int64(f), nil
		}
		return 0, fmt.Errorf("must be an integer, got %s", x)
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("must be an integer, got %q", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("must be an integer, not %s", typeName(v))
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("must be a number, got %q", x)
		}
		return f, nil
	}
	return 0, fmt.Errorf("must be a number, not %s", typeName(v))
}

// toList follows Ansible's check_type_list: a list stays a list, a string is
// split on commas, and another scalar becomes a one-element list.
func toList(v any, scalars bool) ([]any, error) {
	switch x := v.(type) {
	case []any:
		return x, nil
	case string:
		t := strings.TrimSpace(x)
		if strings.HasPrefix(t, "[") {
			var l []any
			dec := json.NewDecoder(strings.NewReader(t))
			dec.UseNumber()
			if err := dec.Decode(&l); err == nil {
				return l, nil
			}
		}
		if !scalars {
			return nil, fmt.Errorf("must be a list of dicts, not a string")
		}
		if t == "" {
			return []any{}, nil
		}
		var out []any
		for _, p := range strings.Split(x, ",") {
			out = append(out, strings.TrimSpace(p))
		}
		return out, nil
	case json.Number, bool:
		if scalars {
			return []any{x}, nil
		}
	}
	return nil, fmt.Errorf("must be a list, not %s", typeName(v))
}

func toDict(v any) (map[string]any, error) {
	switch x := v.(type) {
	case map[string]any:
		return x, nil
	case string:
		m, err := parseDict(x)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	return nil, fmt.Errorf("must be a dict, not %s", typeName(v))
}

// parseDict follows Ansible's check_type_dict: a JSON object, or k=v pairs
// separated by commas or spaces.
func parseDict(s string) (map[string]any, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(t))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("must be a dict: invalid JSON: %v", err)
		}
		return m, nil
	}
	m := map[string]any{}
	for _, f := range strings.FieldsFunc(t, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("must be a dict, or key=value pairs, got %q", s)
		}
		m[k] = v
	}
	return m, nil
}

func expandPath(p string) string {
	p = os.ExpandEnv(p)
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = home + p[1:]
		}
	}
	return p
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

// ApplyDefaults sets the top-level options of the parameter struct *dst
// that hold their zero value to their default tag, as Decode does for an
// option not given: the options named, or every option when none is named.
// It lets a package that takes a module's parameters as its spec state each
// default once, in the tag, for Go callers too. A bool is left alone (false
// is a value, not an absence), and so is an option without a default.
func ApplyDefaults(dst any, names ...string) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("ApplyDefaults needs a pointer to a struct, not %T", dst)
	}
	opts, err := Options(v.Type())
	if err != nil {
		return err
	}
	d := &decoder{}
	for _, o := range opts {
		f := v.Elem().FieldByIndex(o.field)
		if o.Default == nil || !f.IsZero() || f.Kind() == reflect.Bool || (len(names) > 0 && !contains(names, o.Name)) {
			continue
		}
		var val any = *o.Default
		if o.Type == "list" && *o.Default == "" {
			val = []any{}
		}
		if err := d.decodeValue(o.Name, o, val, f); err != nil {
			return fmt.Errorf("default of %s: %w", o.Name, err)
		}
	}
	return nil
}
