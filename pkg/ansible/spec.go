package ansible

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"
)

// Option describes one module parameter as derived from a parameter struct.
// The documentation tests compare it with the DOCUMENTATION of the sidecar.
type Option struct {
	Name     string
	Type     string // str, bool, int, float, list, dict, path, raw
	Elements string // element type for lists
	Required bool
	NoLog    bool
	Default  *string
	Choices  []string
	Aliases  []string
	// Suboptions holds the options of a nested dict, or of the dict elements
	// of a list.
	Suboptions []Option

	// values holds the options of each value of a dict of dicts (a map
	// of structs keyed by name, like container_registry_credentials):
	// they decode and redact each value; the documentation describes
	// the dict by its keys' meaning, so they are not Suboptions.
	values []Option

	field   []int
	goType  reflect.Type
	raw     bool
	path    bool
	seconds bool
}

var specCache sync.Map // reflect.Type -> []Option

// Options returns the options declared by the parameter struct type t (a
// struct or a pointer to one), in declaration order.
//
// A field's ansible tag is "name[,flag...]", with the flags required,
// no_log, path (a str expanded like a path), raw (decoded from JSON as is)
// and seconds (a time.Duration given as an int of seconds); the default,
// choices and aliases tags complete it. An embedded struct field without an
// ansible tag contributes its options at the same level: a module's
// parameters can be a package's spec plus the module's own options.
func Options(t reflect.Type) ([]Option, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v, ok := specCache.Load(t); ok {
		return v.([]Option), nil
	}
	opts, err := buildSpec(t, nil)
	if err != nil {
		return nil, err
	}
	specCache.Store(t, opts)
	return opts, nil
}

func buildSpec(t reflect.Type, seen []reflect.Type) ([]Option, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("parameter type %s is not a struct", t)
	}
	for _, s := range seen {
		if s == t {
			return nil, fmt.Errorf("parameter type %s is recursive", t)
		}
	}
	seen = append(seen, t)
	var opts []Option
	names := map[string]bool{}
	add := func(o Option) error {
		for _, n := range append([]string{o.Name}, o.Aliases...) {
			if names[n] {
				return fmt.Errorf("%s: option %q declared twice", t, n)
			}
			names[n] = true
		}
		opts = append(opts, o)
		return nil
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("ansible")
		if !ok && f.Anonymous && f.Type.Kind() == reflect.Struct {
			inner, err := buildSpec(f.Type, seen)
			if err != nil {
				return nil, err
			}
			for _, o := range inner {
				o.field = append([]int{i}, o.field...)
				if err := add(o); err != nil {
					return nil, err
				}
			}
			continue
		}
		if !ok || tag == "-" {
			continue
		}
		if !f.IsExported() {
			return nil, fmt.Errorf("%s.%s: tagged field must be exported", t, f.Name)
		}
		parts := strings.Split(tag, ",")
		o := Option{Name: parts[0], field: f.Index, goType: f.Type}
		if o.Name == "" {
			return nil, fmt.Errorf("%s.%s: empty option name", t, f.Name)
		}
		for _, flag := range parts[1:] {
			switch flag {
			case "required":
				o.Required = true
			case "no_log":
				o.NoLog = true
			case "path":
				o.path = true
			case "raw":
				o.raw = true
			case "seconds":
				if f.Type != reflect.TypeFor[time.Duration]() {
					return nil, fmt.Errorf("%s.%s: flag seconds needs a time.Duration", t, f.Name)
				}
				o.seconds = true
			default:
				return nil, fmt.Errorf("%s.%s: unknown flag %q", t, f.Name, flag)
			}
		}
		if d, ok := f.Tag.Lookup("default"); ok {
			o.Default = &d
		}
		if c, ok := f.Tag.Lookup("choices"); ok {
			o.Choices = strings.Split(c, ",")
		}
		if a, ok := f.Tag.Lookup("aliases"); ok {
			o.Aliases = strings.Split(a, ",")
		}
		if err := o.setType(seen); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t, f.Name, err)
		}
		if err := add(o); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

func (o *Option) setType(seen []reflect.Type) error {
	t := o.goType
	if o.raw {
		o.Type = "raw"
		if t.Kind() == reflect.Map || (t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct) || t.Kind() == reflect.Struct {
			o.Type = "dict"
		}
		if t.Kind() == reflect.Slice {
			o.Type = "list"
		}
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		o.Type = "str"
		if o.path {
			o.Type = "path"
		}
	case reflect.Bool:
		o.Type = "bool"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		o.Type = "int"
	case reflect.Float64:
		o.Type = "float"
	case reflect.Slice:
		o.Type = "list"
		switch e := t.Elem(); e.Kind() {
		case reflect.String:
			o.Elements = "str"
		case reflect.Struct:
			o.Elements = "dict"
			sub, err := buildSpec(e, seen)
			if err != nil {
				return err
			}
			o.Suboptions = sub
		case reflect.Slice:
			if e.Elem().Kind() != reflect.String {
				return fmt.Errorf("unsupported list element type %s", e)
			}
			o.Elements = "list"
		case reflect.Interface:
			o.Elements = "raw"
		default:
			return fmt.Errorf("unsupported list element type %s", e)
		}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return fmt.Errorf("map keys must be strings")
		}
		o.Type = "dict"
		if e := t.Elem(); e.Kind() == reflect.Struct {
			sub, err := buildSpec(e, seen)
			if err != nil {
				return err
			}
			o.values = sub
		}
	case reflect.Struct:
		o.Type = "dict"
		sub, err := buildSpec(t, seen)
		if err != nil {
			return err
		}
		o.Suboptions = sub
	case reflect.Interface:
		o.Type = "raw"
	default:
		return fmt.Errorf("unsupported parameter type %s", t)
	}
	return nil
}

func optionNames(opts []Option) []string {
	var names []string
	for _, o := range opts {
		names = append(names, o.Name)
		names = append(names, o.Aliases...)
	}
	sort.Strings(names)
	return names
}
