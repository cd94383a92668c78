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
	Changed bool
	Skipped bool
	Msg     string
	Diff    []Diff
	Data    map[string]any
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

// Func is the body of a module: it receives the decoded parameters.
type Func[P any] func(ctx context.Context, m *Module, p *P) (*Result, error)

// Main runs fn as an Ansible module and exits. It never returns.
func Main[P any](fn Func[P]) {
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
func Run[P any](ctx context.Context, argsPath string, out, stderr io.Writer, fn Func[P]) int {
	return run(ctx, argsPath, out, stderr, fn)
}

func run[P any](ctx context.Context, argsPath string, out, stderr io.Writer, fn Func[P]) int {
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
		res, err = fn(ctx, m, &p)
		return res, invocation, err
	}()
	_ = rstderr.Flush()

	obj := map[string]any{}
	if res != nil {
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
