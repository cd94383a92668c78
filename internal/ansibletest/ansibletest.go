// Package ansibletest holds test helpers for imagegate modules: building
// module binaries as `make build` does (once per test package: Main,
// Library), running a binary on an args file as Ansible does (RunBinary),
// checking that a module's sidecar documentation agrees with its parameter
// struct (CheckDocs) and renders with ansible-doc (CheckAnsibleDoc), and
// running ansible-playbook in a private environment (Playbook,
// PlaybookEnv).
package ansibletest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/ansible"
)

// Sidecar is the content of a module's <name>.yml.
type Sidecar struct {
	Documentation struct {
		Module           string               `yaml:"module"`
		ShortDescription string               `yaml:"short_description"`
		Description      any                  `yaml:"description"`
		Options          map[string]DocOption `yaml:"options"`
		Attributes       map[string]struct {
			Support string `yaml:"support"`
		} `yaml:"attributes"`
	} `yaml:"DOCUMENTATION"`
	Examples string               `yaml:"EXAMPLES"`
	Return   map[string]yaml.Node `yaml:"RETURN"`
}

// DocOption is one documented option.
type DocOption struct {
	Description any                  `yaml:"description"`
	Type        string               `yaml:"type"`
	Elements    string               `yaml:"elements"`
	Required    bool                 `yaml:"required"`
	NoLog       bool                 `yaml:"no_log"`
	Default     any                  `yaml:"default"`
	Choices     []any                `yaml:"choices"`
	Aliases     []string             `yaml:"aliases"`
	Suboptions  map[string]DocOption `yaml:"suboptions"`
}

// LoadSidecar parses a module's sidecar documentation file.
func LoadSidecar(path string) (*Sidecar, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Sidecar
	if err := yaml.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return &s, nil
}

// CheckDocs fails t when the sidecar at path and the parameter struct of
// params disagree: an option missing on either side, or a different type,
// element type, required flag, no_log flag, default or choice list. It also
// requires a description for every option, the check_mode, diff_mode and
// idempotent attributes, EXAMPLES and RETURN.
func CheckDocs(t testing.TB, path string, params any) {
	t.Helper()
	sc, err := LoadSidecar(path)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if sc.Documentation.Module != name {
		t.Errorf("%s: DOCUMENTATION.module is %q, want %q", path, sc.Documentation.Module, name)
	}
	if sc.Documentation.ShortDescription == "" || sc.Documentation.Description == nil {
		t.Errorf("%s: short_description and description are required", path)
	}
	for _, a := range []string{"check_mode", "diff_mode", "idempotent"} {
		if _, ok := sc.Documentation.Attributes[a]; !ok {
			t.Errorf("%s: attribute %s is not documented", path, a)
		}
	}
	if strings.TrimSpace(sc.Examples) == "" {
		t.Errorf("%s: EXAMPLES is empty", path)
	}
	if len(sc.Return) == 0 {
		t.Errorf("%s: RETURN is empty", path)
	}
	opts, err := ansible.Options(reflect.TypeOf(params))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Compare("", opts, sc.Documentation.Options) {
		t.Errorf("%s: %s", path, p)
	}
}

// Compare returns the differences between declared options and documented
// ones, one line each.
func Compare(prefix string, opts []ansible.Option, docs map[string]DocOption) []string {
	var problems []string
	seen := map[string]bool{}
	for _, o := range opts {
		name := prefix + o.Name
		seen[o.Name] = true
		d, ok := docs[o.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("option %s is a parameter but is not documented", name))
			continue
		}
		if d.Description == nil {
			problems = append(problems, fmt.Sprintf("option %s has no description", name))
		}
		wantType := o.Type
		if d.Type != wantType {
			problems = append(problems, fmt.Sprintf("option %s: documented type %q, parameter type %q", name, d.Type, wantType))
		}
		if o.Elements != "" && d.Elements != o.Elements {
			problems = append(problems, fmt.Sprintf("option %s: documented elements %q, parameter elements %q", name, d.Elements, o.Elements))
		}
		if d.Required != o.Required {
			problems = append(problems, fmt.Sprintf("option %s: documented required=%v, parameter required=%v", name, d.Required, o.Required))
		}
		if d.NoLog != o.NoLog {
			problems = append(problems, fmt.Sprintf("option %s: documented no_log=%v, parameter no_log=%v", name, d.NoLog, o.NoLog))
		}
		if got, want := docDefault(d.Default), optDefault(o); got != want {
			problems = append(problems, fmt.Sprintf("option %s: documented default %q, parameter default %q", name, got, want))
		}
		var dc []string
		for _, c := range d.Choices {
			dc = append(dc, fmt.Sprint(c))
		}
		if strings.Join(dc, ",") != strings.Join(o.Choices, ",") {
			problems = append(problems, fmt.Sprintf("option %s: documented choices %v, parameter choices %v", name, dc, o.Choices))
		}
		if strings.Join(d.Aliases, ",") != strings.Join(o.Aliases, ",") {
			problems = append(problems, fmt.Sprintf("option %s: documented aliases %v, parameter aliases %v", name, d.Aliases, o.Aliases))
		}
		if len(o.Suboptions) > 0 || len(d.Suboptions) > 0 {
			problems = append(problems, Compare(name+".", o.Suboptions, d.Suboptions)...)
		}
	}
	var extra []string
	for k := range docs {
		if !seen[k] {
			extra = append(extra, prefix+k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		problems = append(problems, fmt.Sprintf("option %s is documented but is not a parameter", k))
	}
	return problems
}

func optDefault(o ansible.Option) string {
	if o.Default == nil {
		return ""
	}
	if o.Type == "list" {
		if *o.Default == "" {
			return "[]"
		}
		return "[" + *o.Default + "]"
	}
	return *o.Default
}

func docDefault(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case []any:
		var s []string
		for _, e := range x {
			s = append(s, fmt.Sprint(e))
		}
		return "[" + strings.Join(s, ",") + "]"
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return fmt.Sprint(v)
}

// Output is what a module printed and how it exited.
type Output struct {
	Result map[string]any
	Stdout []byte
	Stderr []byte
	Exit   int
}

// Failed reports the result's failed key.
func (o *Output) Failed() bool { b, _ := o.Result["failed"].(bool); return b }

// Changed reports the result's changed key.
func (o *Output) Changed() bool { b, _ := o.Result["changed"].(bool); return b }

// Msg is the result's msg key.
func (o *Output) Msg() string { s, _ := o.Result["msg"].(string); return s }

// CheckNoSecrets fails t when the module's stdout or stderr holds any of
// secrets, as they are or JSON-escaped: passwords given as no_log
// parameters or read from files must never be printed.
func (o *Output) CheckNoSecrets(t testing.TB, secrets ...string) {
	t.Helper()
	for i, s := range secrets {
		if s == "" {
			t.Fatalf("CheckNoSecrets: secret %d is empty", i)
		}
		esc, _ := json.Marshal(s)
		for _, form := range []string{s, string(esc[1 : len(esc)-1])} {
			for stream, out := range map[string][]byte{"stdout": o.Stdout, "stderr": o.Stderr} {
				if bytes.Contains(out, []byte(form)) {
					t.Errorf("the module's %s holds secret %d (%.4s...)", stream, i, s)
				}
			}
		}
	}
}

// CheckFailure fails t unless the module failed without changing anything,
// with a msg holding each of want.
func (o *Output) CheckFailure(t testing.TB, want ...string) {
	t.Helper()
	if !o.Failed() || o.Changed() {
		t.Fatalf("want a failure that changed nothing, got: %s\nstderr: %s", o.Stdout, o.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(o.Msg(), w) {
			t.Errorf("msg %q does not contain %q", o.Msg(), w)
		}
	}
}

// RunBinary runs the module binary bin on args, as Ansible does: args are
// written to a file whose path is the only argument. It fails t when stdout
// is not exactly one JSON object or when failed is not set explicitly.
func RunBinary(t testing.TB, bin string, args map[string]any, env ...string) *Output {
	t.Helper()
	argsFile := filepath.Join(t.TempDir(), "args")
	writeJSON(t, argsFile, args)
	return RunBinaryFile(t, bin, argsFile, env...)
}

// RunBinaryFile runs bin on an existing args file.
func RunBinaryFile(t testing.TB, bin, argsFile string, env ...string) *Output {
	t.Helper()
	cmd := exec.Command(bin, argsFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	o := &Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ee, ok := err.(*exec.ExitError); ok {
		o.Exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", bin, err)
	}
	dec := json.NewDecoder(bytes.NewReader(o.Stdout))
	if err := dec.Decode(&o.Result); err != nil {
		t.Fatalf("%s: stdout is not a JSON object: %v\nstdout: %s\nstderr: %s", bin, err, o.Stdout, o.Stderr)
	}
	if dec.More() {
		t.Fatalf("%s: stdout holds more than one JSON value: %s", bin, o.Stdout)
	}
	if _, ok := o.Result["failed"].(bool); !ok {
		t.Fatalf("%s: result does not set failed explicitly: %s", bin, o.Stdout)
	}
	return o
}

// BuildModule compiles the main package pkg (a module or a command: an
// import path, or a relative directory other than ".") into a temporary
// directory as `make build` does (static, -trimpath, stripped) and returns
// the binary's path. env is added to the
// go command's environment (GOARCH=arm64, ...).
func BuildModule(t testing.TB, pkg string, env ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if err := build(pkg, out, env...); err != nil {
		t.Fatal(err)
	}
	return out
}
