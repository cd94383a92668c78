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
		{"bad parent", "- job: {name: j, parent: [a]}", "job j: parent must be a job name or null"},
		{"bad timeout", "- job: {name: j, timeout: -1}", "job j: timeout must be a non-negative integer"},
		{"bad voting", "- job: {name: j, voting: maybe}", "job j: voting must be true or false"},
		{"bad abstract", "- job: {name: j, abstract: [x]}", "job j: abstract must be true or false"},
		{"bad requires", "- job: {name: j, requires: {a: b}}", "job j: requires must be a string or a list of strings"},
		{"bad vars", "- job: {name: j, vars: [a]}", "job j: vars must be a mapping of variable names to values"},
		{"bad host-vars", "- job: {name: j, host-vars: {n: 1}}", "job j: host-vars.n must be a mapping of variables"},
		{"unknown playbook key", "- job: {name: j, run: [{name: x.yaml, clean: true}]}", `job j: run: unknown key "clean" in a playbook entry`},
		{"playbook without name", "- job: {name: j, post-run: [{cleanup: true}]}", "job j: post-run: a playbook entry needs a name"},
		{"secrets not a list", "- job: {name: j, secrets: {name: a, secret: b}}", "job j: secrets must be a list"},
		{"unknown secret entry key", "- job: {name: j, secrets: [{name: a, secret: b, pass_to_parent: true}]}", `unknown key "pass_to_parent" in a secret entry`},
		{"secret entry without secret", "- job: {name: j, secrets: [{name: a}]}", "each entry needs name (the variable) and secret (the definition)"},
		{"unknown dependency key", "- job: {name: j, dependencies: [{name: a, hard: true}]}", `job j: dependencies: unknown key "hard" in a dependency entry`},
		{"galaxy role", "- job: {name: j, roles: [{galaxy: x}]}", "galaxy roles are not supported"},
		{"roles not a list", "- job: {name: j, roles: x}", "job j: roles must be a list of {zuul: <project>}"},
		{"bad nodeset", "- job: {name: j, nodeset: [a]}", "job j: nodeset must be a nodeset name or a mapping with nodes"},
		{"unknown nodeset attribute", "- nodeset: {name: n, nodez: []}", `unknown nodeset attribute "nodez"`},
		{"unnamed nodeset", "- nodeset: {nodes: []}", "a nodeset needs a name"},
		{"unknown node key", "- nodeset: {name: n, nodes: [{name: a, lable: x}]}", `unknown key "lable" in a node`},
		{"unnamed node", "- nodeset: {name: n, nodes: [{label: x}]}", "a node needs a name"},
		{"unnamed group", "- nodeset: {name: n, groups: [{nodes: [a]}]}", "a group needs a name"},
		{"secret without data", "- secret: {name: s}", "secret s needs a data mapping"},
		{"unknown secret attribute", "- secret: {name: s, data: {a: b}, dta: 1}", `unknown secret attribute "dta"`},
		{"unnamed template", "- project-template: {check: {jobs: [a]}}", "a project-template needs a name"},
		{"pipeline not a mapping", "- project: {check: [a]}", "pipeline check must be a mapping with jobs"},
		{"unknown pipeline key", "- project: {check: {jobz: [a]}}", `pipeline check: unknown key "jobz"`},
		{"name in a job list entry", "- project: {check: {jobs: [{j: {name: x}}]}}", "job j: name is given by the key"},
		{"job list entry", "- project: {check: {jobs: [{a: {}, b: {}}]}}", "a job entry is a name or {name: {attributes}}"},
		{"unsupported tag", "- job: {name: j, vars: {a: !vault x}}", "unsupported YAML tag !vault"},
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

// TestParseShapes: the shapes Zuul accepts for one attribute decode alike;
// attributes the runner ignores are accepted; YAML merge keys work, the
// stanza's own keys winning.
func TestParseShapes(t *testing.T) {
	t.Parallel()
	l := NewLayout()
	err := l.Parse(&Source{Project: "p", Root: "/nonexistent"}, "/nonexistent/zuul.yaml", []byte(`
- job: &base
    name: base
    parent: null
    run: pb/run.yaml
    pre-run: [pb/a.yaml, {name: pb/b.yaml, semaphores: [s]}]
    dependencies: registry
    requires: !override images
    nodeset: ubuntu
    branches: master
    files: [Dockerfile]
    required-projects: [a/b, {name: c/d, override-checkout: main}]
- job:
    <<: *base
    name: child
    parent: base
    run:
- nodeset:
    name: ubuntu
    nodes: [{name: [primary, alias], label: ubuntu}]
    groups: [{name: g, nodes: primary}]
    alternatives: []
- project:
    templates: t
    check:
      queue: q
      jobs: [base, {child: {voting: false}}, {other: }]
`))
	if err != nil {
		t.Fatal(err)
	}
	base := l.Jobs["base"][0]
	if got := []PlaybookRef{{Name: "pb/a.yaml"}, {Name: "pb/b.yaml"}}; !reflect.DeepEqual(base.PreRun, got) {
		t.Errorf("pre-run %v, want %v", base.PreRun, got)
	}
	if !base.DependenciesSet || !reflect.DeepEqual(base.Dependencies, []Dependency{{Name: "registry"}}) {
		t.Errorf("dependencies %v (set %v)", base.Dependencies, base.DependenciesSet)
	}
	if !reflect.DeepEqual(base.Requires, []string{"images"}) || !base.RequiresReplace {
		t.Errorf("requires %v (replace %v)", base.Requires, base.RequiresReplace)
	}
	if base.NodesetName != "ubuntu" || !reflect.DeepEqual(base.RequiredProjects, []string{"a/b", "c/d"}) {
		t.Errorf("nodeset %q, required-projects %v", base.NodesetName, base.RequiredProjects)
	}
	child := l.Jobs["child"][0]
	if child.Parent == nil || *child.Parent != "base" || child.Run == nil || len(child.Run) != 0 {
		t.Errorf("child: parent %v, run %v (set to nothing)", child.Parent, child.Run)
	}
	if !reflect.DeepEqual(child.PreRun, base.PreRun) {
		t.Errorf("child pre-run %v: the merge key did not bring the base's", child.PreRun)
	}
	ns := l.Nodesets["ubuntu"]
	if !reflect.DeepEqual(ns.Nodes, []Node{{Name: "primary", Label: "ubuntu"}}) || !reflect.DeepEqual(ns.Groups, []Group{{Name: "g", Nodes: []string{"primary"}}}) {
		t.Errorf("nodeset %+v", ns)
	}
	p := l.Projects["p"][0]
	jobs := p.Pipelines["check"].Jobs
	if !reflect.DeepEqual(p.Templates, []string{"t"}) || len(jobs) != 3 || jobs[1].Name != "child" || jobs[1].Voting == nil || *jobs[1].Voting || jobs[2].Name != "other" {
		t.Errorf("project %+v, check jobs %v", p, jobs)
	}
}
