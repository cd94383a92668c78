package ansible

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"github.com/imagegate/imagegate/pkg/redact"
)

// Redacted replaces the value of a no_log parameter wherever it would be
// printed, as Ansible's own modules do.
const Redacted = redact.Mask

// noLogPlaceholder is what Ansible shows for no_log values in
// invocation.module_args.
const noLogPlaceholder = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"

// Control holds the _ansible_* keys of the args file that imagegate honours.
type Control struct {
	CheckMode  bool
	Diff       bool
	NoLog      bool
	Verbosity  int
	TmpDir     string
	ModuleName string
}

// Module is one invocation of a module: its control keys, a logger and the
// warnings collected so far.
type Module struct {
	Control
	// Log writes to stderr, redacted, at a level set by Ansible's verbosity:
	// warnings by default, info at -vv, debug at -vvv.
	Log *slog.Logger

	name     string
	stderr   io.Writer
	secrets  *redact.Set
	warnings []string
}

// Warn adds a warning to the result; Ansible shows it to the user.
func (m *Module) Warn(format string, args ...any) {
	m.warnings = append(m.warnings, fmt.Sprintf(format, args...))
}

// AddSecret registers a value that must never be printed, for example a
// password read from a file or a token obtained during the run.
func (m *Module) AddSecret(s string) { m.secrets.Add(s) }

// Stderr is the redacting writer behind Log, for tools that want an
// io.Writer for progress output.
func (m *Module) Stderr() io.Writer { return m.stderr }

// Progress is where a module streams a long operation's progress (a build
// log): Stderr at verbosity 2 (-vv) and above, nil below, where Ansible
// would not show it.
func (m *Module) Progress() io.Writer {
	if m.Verbosity >= 2 {
		return m.stderr
	}
	return nil
}

// Diff is one before/after pair shown by ansible-playbook --diff.
type Diff struct {
	Before       string `json:"before"`
	After        string `json:"after"`
	BeforeHeader string `json:"before_header,omitempty"`
	AfterHeader  string `json:"after_header,omitempty"`
}

// Result is what a module returns. Data holds the module-specific keys; a
// value is marshalled with encoding/json.
type Result struct {
	Changed  bool
	Skipped  bool
	Msg      string
	Warnings []string
	Diff     []Diff
	Data     map[string]any
}

// Outcome is the part of a module's result that every module has: whether
// it changed something, its message, its warnings and, for --diff, what
// changed. The result type of a package function a module calls embeds it,
// beside its own fields, whose json names are the module's return keys
// (documented in RETURN). Main turns such a result into the module's.
type Outcome struct {
	Changed bool `json:"-"`
	// Skipped reports that the module decided there was nothing for it to
	// do in this job (Ansible shows the task as skipped).
	Skipped  bool     `json:"-"`
	Msg      string   `json:"-"`
	Warnings []string `json:"-"`
	// Diff is filled only when the caller asked for it (diff mode).
	Diff []Diff `json:"-"`
}

func (o *Outcome) outcome() *Outcome { return o }

// Warn adds a warning.
func (o *Outcome) Warn(format string, args ...any) {
	o.Warnings = append(o.Warnings, fmt.Sprintf(format, args...))
}

// outcomer is a result type that embeds Outcome.
type outcomer interface{ outcome() *Outcome }

// resultOf turns what a module body returned into its Result: a *Result as
// it is, or a pointer to a struct embedding Outcome, whose other exported
// fields become the result's keys by their json names.
func resultOf(v any) (*Result, error) {
	switch r := v.(type) {
	case nil:
		return nil, nil
	case *Result:
		return r, nil
	case outcomer:
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			return nil, nil
		}
		o := r.outcome()
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding the result: %w", err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(b, &keys); err != nil {
			return nil, fmt.Errorf("encoding the result: %w", err)
		}
		res := &Result{Changed: o.Changed, Skipped: o.Skipped, Msg: o.Msg, Warnings: o.Warnings, Diff: o.Diff}
		for k, raw := range keys {
			res.Set(k, raw)
		}
		return res, nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return nil, nil
	}
	return nil, fmt.Errorf("a module returned %T, which is neither *ansible.Result nor a result embedding ansible.Outcome", v)
}

// ResultKeys returns the keys a module whose body returns values of type t
// sets: the json names of the exported fields of t (a struct embedding
// Outcome, or a pointer to one). The documentation tests compare them with
// RETURN.
func ResultKeys(t reflect.Type) ([]string, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || !reflect.PointerTo(t).Implements(reflect.TypeFor[outcomer]()) {
		return nil, fmt.Errorf("%s does not embed ansible.Outcome", t)
	}
	return jsonFields(t), nil
}

// jsonFields returns the json names of the exported fields of the struct
// type t (a pointer is followed), as encoding/json marshals it: embedded
// structs without a name contribute their fields, "-" is skipped.
func jsonFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// Set adds a module-specific key to the result.
func (r *Result) Set(key string, v any) *Result {
	if r.Data == nil {
		r.Data = map[string]any{}
	}
	r.Data[key] = v
	return r
}

// reserved keys a module must not set through Data.
var reserved = map[string]bool{
	"changed": true, "failed": true, "skipped": true, "msg": true,
	"warnings": true, "diff": true, "invocation": true,
}

// Func is the body of a module: it receives the decoded parameters and
// returns a *Result, or the result of the package function it called, a
// pointer to a struct embedding Outcome.
type Func[P, R any] func(ctx context.Context, m *Module, p *P) (R, error)

// Main runs fn as an Ansible module and exits. It never returns.
func Main[P, R any](fn Func[P, R]) {
	out := guardStdout()
	args := ""
	if len(os.Args) > 1 {
		args = os.Args[1]
	}
	code := run(context.Background(), args, out, os.Stderr, fn)
	os.Exit(code)
}

// Run runs fn as Main does, with the args file at argsPath, writing the JSON
// result to out and logs to stderr. It returns the exit code. It exists so
// tests can run a module in-process.
func Run[P, R any](ctx context.Context, argsPath string, out, stderr io.Writer, fn Func[P, R]) int {
	return run(ctx, argsPath, out, stderr, fn)
}

func run[P, R any](ctx context.Context, argsPath string, out, stderr io.Writer, fn Func[P, R]) int {
	secrets := &redact.Set{}
	// Line-buffered: a secret split between two writes (a tool's progress
	// output) is caught; a last line without a newline is flushed when the
	// module's work is done.
	rstderr := secrets.Writer(stderr)
	defer rstderr.Flush()
	m := &Module{stderr: rstderr, secrets: secrets, name: moduleName()}
	m.Log = slog.New(slog.NewTextHandler(rstderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	res, invocation, err := func() (res *Result, invocation map[string]any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("internal error (please report): %v", r)
			}
		}()
		raw, err := readArgs(argsPath)
		if err != nil {
			return nil, nil, err
		}
		m.Control = parseControl(raw)
		if m.ModuleName != "" {
			m.name = m.ModuleName
		}
		level := slog.LevelWarn
		switch {
		case m.Verbosity >= 3:
			level = slog.LevelDebug
		case m.Verbosity >= 2:
			level = slog.LevelInfo
		}
		m.Log = slog.New(slog.NewTextHandler(rstderr, &slog.HandlerOptions{Level: level}))
		var p P
		s, derr := Decode(raw, &p)
		secrets.Add(s...)
		invocation = moduleArgs(raw, &p)
		if derr != nil {
			return nil, invocation, derr
		}
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		r, err := fn(ctx, m, &p)
		res, rerr := resultOf(r)
		if rerr != nil {
			return nil, invocation, fmt.Errorf("internal error (please report): %w", rerr)
		}
		return res, invocation, err
	}()
	_ = rstderr.Flush()

	obj := map[string]any{}
	if res != nil {
		m.warnings = append(m.warnings, res.Warnings...)
		for k, v := range res.Data {
			if reserved[k] {
				continue
			}
			obj[k] = v
		}
		obj["changed"] = res.Changed
		if res.Skipped {
			obj["skipped"] = true
		}
		if res.Msg != "" {
			obj["msg"] = res.Msg
		}
		if len(res.Diff) > 0 && m.Diff {
			obj["diff"] = res.Diff
		}
	} else {
		obj["changed"] = false
	}
	obj["failed"] = err != nil
	if err != nil {
		obj["msg"] = err.Error()
	}
	if len(m.warnings) > 0 {
		obj["warnings"] = m.warnings
	}
	if invocation != nil {
		obj["invocation"] = map[string]any{"module_args": invocation}
	}
	b, merr := json.Marshal(obj)
	if merr != nil {
		b, _ = json.Marshal(map[string]any{"failed": true, "changed": false,
			"msg": fmt.Sprintf("internal error (please report): encoding the result: %v", merr)})
	}
	b = secrets.Bytes(b)
	b = append(b, '\n')
	if _, werr := out.Write(b); werr != nil {
		fmt.Fprintf(rstderr, "writing result: %v\n", werr)
		return 2
	}
	if err != nil {
		return 1
	}
	return 0
}

func moduleName() string {
	n := os.Args[0]
	if i := strings.LastIndexByte(n, '/'); i >= 0 {
		n = n[i+1:]
	}
	return n
}

func readArgs(path string) (map[string]any, error) {
	if path == "" {
		return nil, errors.New("no arguments file: this is an Ansible module; run it from a playbook, or pass the path of a JSON file holding its parameters")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading module arguments: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading module arguments from %s: not a JSON object: %v", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("reading module arguments from %s: trailing data after the JSON object", path)
	}
	if raw == nil {
		raw = map[string]any{}
	}
	return raw, nil
}

func parseControl(raw map[string]any) Control {
	c := Control{}
	c.CheckMode, _ = toBool(orFalse(raw["_ansible_check_mode"]))
	c.Diff, _ = toBool(orFalse(raw["_ansible_diff"]))
	c.NoLog, _ = toBool(orFalse(raw["_ansible_no_log"]))
	if v, ok := raw["_ansible_verbosity"]; ok {
		n, _ := toInt(v)
		c.Verbosity = int(n)
	}
	if v, ok := raw["_ansible_tmpdir"].(string); ok {
		c.TmpDir = v
	}
	if v, ok := raw["_ansible_module_name"].(string); ok {
		c.ModuleName = v
	}
	return c
}

func orFalse(v any) any {
	if v == nil {
		return false
	}
	return v
}

// moduleArgs is invocation.module_args: the parameters as decoded, with
// no_log values masked.
func moduleArgs(raw map[string]any, p any) map[string]any {
	opts, err := Options(reflect.TypeOf(p))
	if err != nil {
		return nil
	}
	out := map[string]any{}
	maskInto(out, opts, raw)
	return out
}

func maskInto(out map[string]any, opts []Option, raw map[string]any) {
	for _, o := range opts {
		v, ok := lookup(o, raw)
		if !ok {
			if o.Default != nil {
				out[o.Name] = defaultValue(o)
			} else {
				out[o.Name] = nil
			}
			continue
		}
		out[o.Name] = maskValue(o, v)
	}
}

func maskValue(o Option, v any) any {
	if o.NoLog {
		return noLogPlaceholder
	}
	if len(o.Suboptions) == 0 {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		if o.Keyed {
			m := map[string]any{}
			for k, e := range x {
				m[k] = maskValue(Option{Name: k, Suboptions: o.Suboptions}, e)
			}
			return m
		}
		m := map[string]any{}
		maskInto(m, o.Suboptions, x)
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			if mm, ok := e.(map[string]any); ok {
				m := map[string]any{}
				maskInto(m, o.Suboptions, mm)
				l[i] = m
			} else {
				l[i] = e
			}
		}
		return l
	}
	return v
}

// defaultValue is the typed value of an option's default, as it is after
// decoding: ["latest"] rather than "latest".
func defaultValue(o Option) any {
	if o.seconds {
		// Shown in seconds, as given.
		if n, err := toInt(*o.Default); err == nil {
			return n
		}
	}
	v := reflect.New(o.goType).Elem()
	var val any = *o.Default
	if o.Type == "list" && *o.Default == "" {
		val = []any{}
	}
	d := &decoder{}
	if err := d.decodeValue(o.Name, o, val, v); err != nil {
		return *o.Default
	}
	return v.Interface()
}

// Redact returns text with every registered secret replaced by Redacted.
func (m *Module) Redact(text string) string { return m.secrets.String(text) }
