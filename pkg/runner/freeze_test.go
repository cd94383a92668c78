package runner

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeTree writes files (path -> content) under dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const noop = "- hosts: localhost\n  gather_facts: false\n  tasks: []\n"

func layoutFrom(t *testing.T, config string, playbooks ...string) (*Layout, *Source) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"zuul.d/jobs.yaml": config}
	for _, p := range playbooks {
		files[p] = noop
	}
	writeTree(t, dir, files)
	src := &Source{Project: "site/config", Root: dir}
	l := NewLayout()
	if err := l.LoadSource(src); err != nil {
		t.Fatal(err)
	}
	return l, src
}

func staticSecrets(data map[string]map[string]any) SecretLookup {
	return func(ref SecretRef, job *JobDef) (map[string]any, error) {
		d, ok := data[ref.Secret]
		if !ok {
			return nil, configErr("secret %s is not defined", ref.Secret)
		}
		return d, nil
	}
}

func TestFreezeInheritance(t *testing.T) {
	t.Parallel()
	l, _ := layoutFrom(t, `
- job:
    name: base
    parent: null
    pre-run: pb/base-pre.yaml
    post-run: [pb/base-post.yaml]
    run: pb/base-run.yaml
    vars: {a: base, nested: {x: 1, y: 1}, keep: base}
    secrets: [{name: base_secret, secret: s1}]
    timeout: 100
- job:
    name: middle
    parent: base
    pre-run: pb/middle-pre.yaml
    post-run: pb/middle-post.yaml
    vars: {a: middle, nested: {y: 2}}
    requires: [images]
    secrets:
      - {name: mid_secret, secret: s2}
- job:
    name: leaf
    parent: middle
    pre-run: pb/leaf-pre.yaml
    run: pb/leaf-run.yaml
    post-run:
      - pb/leaf-post.yaml
      - {name: pb/leaf-cleanup.yaml, cleanup: true}
    vars: !override {a: leaf}
    provides: images
    requires: other
    secrets:
      - {name: passed, secret: s3, pass-to-parent: true}
      - {name: own, secret: s4}
    nodeset: {nodes: [{name: n1, label: ubuntu}]}
    dependencies: [{name: registry, soft: true}]
`, "pb/base-pre.yaml", "pb/base-post.yaml", "pb/base-run.yaml", "pb/middle-pre.yaml", "pb/middle-post.yaml",
		"pb/leaf-pre.yaml", "pb/leaf-run.yaml", "pb/leaf-post.yaml", "pb/leaf-cleanup.yaml")
	secrets := staticSecrets(map[string]map[string]any{
		"s1": {"v": 1}, "s2": {"v": 2}, "s3": {"v": 3}, "s4": {"v": 4}})
	fj, err := l.Freeze("leaf", secrets)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"pre-run pb/base-pre.yaml", "pre-run pb/middle-pre.yaml", "pre-run pb/leaf-pre.yaml",
		"run pb/leaf-run.yaml",
		"post-run pb/leaf-post.yaml", "post-run pb/middle-post.yaml", "post-run pb/base-post.yaml",
		"cleanup-run pb/leaf-cleanup.yaml",
	}
	if got := fj.Phases(); !reflect.DeepEqual(got, want) {
		t.Errorf("phases:\n got %v\nwant %v", got, want)
	}
	if !reflect.DeepEqual(fj.Vars, map[string]any{"a": "leaf"}) {
		t.Errorf("!override vars: %v", fj.Vars)
	}
	if !reflect.DeepEqual(fj.Requires, []string{"images", "other"}) || !reflect.DeepEqual(fj.Provides, []string{"images"}) {
		t.Errorf("requires %v provides %v", fj.Requires, fj.Provides)
	}
	if len(fj.Nodeset.Nodes) != 1 || fj.Nodeset.Nodes[0].Name != "n1" || fj.Timeout.Seconds() != 100 {
		t.Errorf("nodeset %+v timeout %v", fj.Nodeset, fj.Timeout)
	}
	if len(fj.Dependencies) != 1 || !fj.Dependencies[0].Soft {
		t.Errorf("dependencies %+v", fj.Dependencies)
	}
	// Secrets: each playbook gets its own job's, plus pass-to-parent ones.
	secretNames := func(pb Playbook) []string {
		var n []string
		for k := range pb.Secrets {
			n = append(n, k)
		}
		return sortedStrings(n)
	}
	for _, tc := range []struct {
		pb   Playbook
		want []string
	}{
		{fj.PreRun[0], []string{"base_secret", "passed"}},
		{fj.PreRun[1], []string{"mid_secret", "passed"}},
		{fj.PreRun[2], []string{"own", "passed"}},
		{fj.Run[0], []string{"own", "passed"}},
		{fj.PostRun[2], []string{"base_secret", "passed"}},
	} {
		if got := secretNames(tc.pb); !reflect.DeepEqual(got, sortedStrings(tc.want)) {
			t.Errorf("%s secrets = %v, want %v", tc.pb.Name, got, tc.want)
		}
	}

	// Without !override, variables merge deeply from parent to child.
	mid, err := l.Freeze("middle", secrets)
	if err != nil {
		t.Fatal(err)
	}
	wantVars := map[string]any{"a": "middle", "keep": "base", "nested": map[string]any{"x": 1, "y": 2}}
	if !reflect.DeepEqual(mid.Vars, wantVars) {
		t.Errorf("merged vars = %v, want %v", mid.Vars, wantVars)
	}
	if mid.Run[0].Name != "pb/base-run.yaml" {
		t.Errorf("inherited run = %s", mid.Run[0].Name)
	}
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestFreezeErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, config, job string
		playbooks         []string
		want              string
	}{
		{"missing playbook", `
- job: {name: j, parent: null, run: pb/missing.yaml}`, "j", nil, "playbook pb/missing.yaml does not exist in project site/config"},
		{"no run", `
- job: {name: j, parent: null, pre-run: pb/pre.yaml}`, "j", []string{"pb/pre.yaml"}, "job j has no run playbook"},
		{"abstract", `
- job: {name: j, parent: null, abstract: true, run: pb/run.yaml}`, "j", []string{"pb/run.yaml"}, "job j is abstract"},
		{"undefined parent", `
- job: {name: j, parent: nope, run: pb/run.yaml}`, "j", []string{"pb/run.yaml"}, "job nope is not defined"},
		{"undefined job", `
- job: {name: j, parent: null, run: pb/run.yaml}`, "other", []string{"pb/run.yaml"}, "job other is not defined"},
		{"undefined secret", `
- job: {name: j, parent: null, run: pb/run.yaml, secrets: [nope]}`, "j", []string{"pb/run.yaml"}, "secret nope is not defined"},
		{"inheritance loop", `
- job: {name: a, parent: b, run: pb/run.yaml}
- job: {name: b, parent: a}`, "a", []string{"pb/run.yaml"}, "inherits from itself"},
		{"final parent", `
- job: {name: a, parent: null, final: true, run: pb/run.yaml}
- job: {name: b, parent: a}`, "b", []string{"pb/run.yaml"}, "it is final"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := layoutFrom(t, tc.config, tc.playbooks...)
			_, err := l.Freeze(tc.job, staticSecrets(nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, config, want string }{
		{"unknown attribute", "- job: {name: j, runn: x}", `unknown job attribute "runn"`},
		{"not a list", "job: {name: j}", "is a list of stanzas"},
		{"unknown stanza", "- jobb: {name: j}", `unknown stanza "jobb"`},
		{"reserved var", "- job: {name: j, vars: {zuul: 1}}", `"zuul" is reserved`},
		{"bad playbook path", "- job: {name: j, run: ../x.yaml}", "must be a path inside the project"},
		{"unnamed job", "- job: {run: x.yaml}", "a job needs a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLayout()
			err := l.Parse(&Source{Project: "p", Root: "/nonexistent"}, "/nonexistent/zuul.yaml", []byte(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestQueueErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"src/README": "x", "known_hosts": ""})
	for _, tc := range []struct{ name, queue, want string }{
		{"no changes", "tenant: t\n", "changes is empty"},
		{"no src", "changes: [{project: a/b, change: 1}]", "src is required"},
		{"missing src", "changes: [{project: a/b, change: 1, src: nope}]", "is not a directory"},
		{"later depends-on", "changes: [{project: a/b, change: 1, src: src, depends-on: [2]}, {project: a/c, change: 2, src: src}]", "must appear earlier"},
		{"unknown key", "changes: [{project: a/b, change: 1, src: src, dependson: [2]}]", "field dependson not found"},
		{"bad manager", "pipelines: {gate: {manager: x}}\nchanges: [{project: a/b, src: src}]", "use dependent or independent"},
		{"known-hosts without ssh", "node: {known-hosts: known_hosts}\nchanges: [{project: a/b, src: src}]", "node.known-hosts is for connection ssh"},
		{"missing known-hosts", "node: {connection: ssh, known-hosts: nope}\nchanges: [{project: a/b, src: src}]", "is not a file"},
		{"known-hosts with a space", "node: {connection: ssh, known-hosts: 'a b'}\nchanges: [{project: a/b, src: src}]", "must not hold spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQueue([]byte(tc.queue), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestQueueKnownHosts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"src/README": "x", "keys/known_hosts": ""})
	q, err := ParseQueue([]byte("node: {connection: ssh, known-hosts: keys/known_hosts}\nchanges: [{project: a/b, src: src}]"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "keys/known_hosts"); q.Node.KnownHosts != want {
		t.Errorf("node.known-hosts = %s, want %s (relative to the queue file)", q.Node.KnownHosts, want)
	}
}

func TestQueuePathsInHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"src/README": "x"})
	writeTree(t, home, map[string]string{".ssh/known_hosts": ""})
	q, err := ParseQueue([]byte("node: {connection: ssh, private-key: ~/.ssh/id_ed25519, known-hosts: ~/.ssh/known_hosts}\nchanges: [{project: a/b, src: src}]"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(home, ".ssh/id_ed25519"); q.Node.PrivateKey != want {
		t.Errorf("node.private-key = %s, want %s (~ is the home directory)", q.Node.PrivateKey, want)
	}
	if want := filepath.Join(home, ".ssh/known_hosts"); q.Node.KnownHosts != want {
		t.Errorf("node.known-hosts = %s, want %s (~ is the home directory)", q.Node.KnownHosts, want)
	}
}

func TestDeepMerge(t *testing.T) {
	t.Parallel()
	base := map[string]any{"a": 1, "m": map[string]any{"x": 1, "l": []any{1}}}
	over := map[string]any{"b": 2, "m": map[string]any{"y": 2, "l": []any{2}}}
	got := deepMerge(base, over)
	want := map[string]any{"a": 1, "b": 2, "m": map[string]any{"x": 1, "y": 2, "l": []any{2}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	if _, ok := base["b"]; ok {
		t.Error("base was modified")
	}
}
