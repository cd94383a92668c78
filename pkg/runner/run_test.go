package runner

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// These tests run fake jobs (debug, copy and shell tasks) through real
// ansible-playbook: the jobs are toys, the executor semantics are not.

// record is a playbook that appends "<label> <zuul.job>" to the order file
// and writes the given expression as JSON to <work_root>/<label>.json.
func record(label, expr string) string {
	return `- hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the order
      ansible.builtin.shell: echo "` + label + ` {{ zuul.job }}" >> {{ order_file }}
    - name: Record what this playbook sees
      ansible.builtin.copy:
        content: "{{ (` + expr + `) | to_json }}"
        dest: "{{ zuul.executor.work_root }}/` + label + `.json"
`
}

// runQueue runs queue on the tree files with opts, and returns the report
// and the tree's directory.
func runQueue(t *testing.T, queue string, files map[string]string, opts ...Option) (*Report, string) {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, files)
	q, err := ParseQueue([]byte(queue), dir)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	r, err := New(append([]Option{WithWorkDir(filepath.Join(dir, "work")), WithProgress(&progress)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), q)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	t.Logf("progress:\n%s\n%s", progress.String(), rep.Summary())
	return rep, dir
}

func readJSON(t *testing.T, b *BuildReport, label string) any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.Dir, "work", label+".json"))
	if err != nil {
		t.Fatalf("%s of %s: %v", label, b.Job, err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v: %s", label, err, raw)
	}
	return v
}

// TestRunInheritancePauseAndVariables runs a paused registry-like job and a
// dependent job on a node, and checks the playbook order (parent pre-run
// first, child post-run first, the paused job's post-run last), what each
// playbook sees (variable precedence, secrets per level, parent data and
// secret_data, artifacts), and that no secret is left in the build
// directories.
func TestRunInheritancePauseAndVariables(t *testing.T) {
	t.Parallel()
	const secretPW = "hunter2-very-secret-password"
	const returnedPW = "returned-secret-data-password"
	// A short token and a key holding a quote and a backslash: the log
	// must not show them, as written or JSON-escaped.
	const shortToken, quotedKey = "Xq7Zp", `ke"y\with-quotes`
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job:
    name: base
    parent: null
    pre-run: playbooks/base-pre.yaml
    post-run: playbooks/base-post.yaml
    vars: {order_file: "` + "{{ zuul.executor.work_root }}/../../../order.txt" + `"}
- job:
    name: registry
    parent: base
    run: playbooks/registry-run.yaml
    secrets:
      - name: creds
        secret: site-creds
- job:
    name: consumer
    parent: base
    pre-run: playbooks/consumer-pre.yaml
    run: playbooks/consumer-run.yaml
    post-run: playbooks/consumer-post.yaml
    nodeset:
      nodes: [{name: node1, label: test}]
    vars:
      shared: job-var
      shared_secret: job-var
      mysecret: job-var
    extra-vars:
      ev: extra-var
    host-vars:
      node1: {hv: host-var}
    secrets:
      - {name: ev, secret: other}
      - {name: mysecret, secret: other}
`,
		"cfg/playbooks/base-pre.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.stat:
        path: "{{ zuul.executor.result_data_file }}"
      register: rd
    - ansible.builtin.assert:
        that: [rd.stat.exists, rd.stat.size == 0]
        fail_msg: the result data file must exist and be empty when the job starts
` + strings.SplitN(record("base-pre", "{'creds': creds is defined}"), "\n", 4)[3],
		"cfg/playbooks/base-post.yaml": record("base-post", "{'success': zuul_success}"),
		"cfg/playbooks/registry-run.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.shell: echo "registry-run {{ zuul.job }}" >> {{ order_file }}
    - zuul_return:
        data:
          zuul:
            pause: true
            artifacts: [{name: registry, url: "docker://10.0.0.1:5000/x:y", metadata: {type: test}}]
          shared: parent-data
          only_parent: parent-data
        secret_data:
          sd_var: "` + returnedPW + `"
          shared_secret: parent-secret
    - ansible.builtin.debug:
        msg: "the password is {{ creds.password }}"
    - ansible.builtin.debug:
        msg: "the token is {{ creds.token }}, the key {{ creds.api_key }}"
`,
		"cfg/playbooks/consumer-pre.yaml":  record("consumer-pre", "{'creds': creds is defined}"),
		"cfg/playbooks/consumer-post.yaml": record("consumer-post", "{'success': zuul_success}"),
		"cfg/playbooks/consumer-run.yaml": `- hosts: all
  tasks:
    - ansible.builtin.shell: echo "consumer-run {{ zuul.job }}" >> {{ order_file }}
      delegate_to: localhost
    - name: Read the source through the relative src_dir, in the node's home
      ansible.builtin.command: cat {{ zuul.project.src_dir }}/hello.txt
      register: hello
    - ansible.builtin.set_fact:
        seen:
          shared: "{{ shared }}"
          only_parent: "{{ only_parent }}"
          sd_var_sha1: "{{ sd_var | hash('sha1') }}"
          shared_secret: "{{ shared_secret }}"
          ev: "{{ ev }}"
          mysecret: "{{ mysecret }}"
          hv: "{{ hv }}"
          hello: "{{ hello.stdout }}"
          artifacts: "{{ zuul.artifacts }}"
          zuul: "{{ zuul }}"
    - ansible.builtin.set_fact:
        sd_var: set-fact-wins
    - ansible.builtin.copy:
        content: "{{ seen | combine({'after_set_fact': sd_var}) | to_json }}"
        dest: "{{ zuul.executor.work_root }}/consumer-run.json"
      delegate_to: localhost
`,
		"proj/hello.txt": "hello from the change\n",
	}
	queue := `
tenant: example
pipeline: check
config: [{path: cfg, project: site/config}]
secrets:
  site-creds: {username: zuul, password: ` + secretPW + `, token: ` + shortToken + `, api_key: '` + quotedKey + `'}
  other: {value: secret}
changes:
  - project: myorg/proj
    change: 4242
    patchset: 3
    src: proj
    message: "Add {{ templates }} that must not be rendered"
    jobs:
      - registry
      - consumer:
          dependencies: [registry]
`
	rep, dir := runQueue(t, queue, files)
	it := rep.Items[0]
	if it.Result != Success {
		t.Fatalf("item %s: %s\n%s", it.Result, it.Message, rep.Summary())
	}
	order, err := os.ReadFile(filepath.Join(dir, "work", "order.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"base-pre registry", "registry-run registry",
		"base-pre consumer", "consumer-pre consumer", "consumer-run consumer", "consumer-post consumer", "base-post consumer",
		"base-post registry",
	}
	if got := strings.Split(strings.TrimSpace(string(order)), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("order:\n%s\nwant %q", order, want)
	}
	reg, cons := it.Build("registry"), it.Build("consumer")
	if reg.Paused <= 0 {
		t.Errorf("registry was not paused: %+v", reg)
	}
	// Secrets reach only the playbooks of the job that declares them.
	if v := readJSON(t, reg, "base-pre"); !reflect.DeepEqual(v, map[string]any{"creds": false}) {
		t.Errorf("base pre-run of registry saw creds: %v", v)
	}
	if v := readJSON(t, cons, "consumer-pre"); !reflect.DeepEqual(v, map[string]any{"creds": false}) {
		t.Errorf("consumer saw the registry's secret: %v", v)
	}
	if v := readJSON(t, cons, "consumer-post"); !reflect.DeepEqual(v, map[string]any{"success": true}) {
		t.Errorf("consumer post-run zuul_success: %v", v)
	}
	seen := readJSON(t, cons, "consumer-run").(map[string]any)
	for k, want := range map[string]any{
		"shared":         "job-var",                                       // job vars beat parent data
		"only_parent":    "parent-data",                                   // parent data reaches dependents
		"sd_var_sha1":    fmt.Sprintf("%x", sha1.Sum([]byte(returnedPW))), // secret_data reaches dependents
		"shared_secret":  "job-var",                                       // job vars beat secret_data
		"after_set_fact": "set-fact-wins",                                 // so does set_fact
		"ev":             "extra-var",                                     // extra-vars beat secrets
		"mysecret":       map[string]any{"value": "secret"},               // secrets beat job vars
		"hv":             "host-var",
		"hello":          "hello from the change",
	} {
		if !reflect.DeepEqual(seen[k], want) {
			t.Errorf("%s = %v, want %v", k, seen[k], want)
		}
	}
	arts, _ := seen["artifacts"].([]any)
	if len(arts) != 1 || arts[0].(map[string]any)["job"] != "registry" || arts[0].(map[string]any)["change"] != "4242" {
		t.Errorf("artifacts = %v", seen["artifacts"])
	}
	z := seen["zuul"].(map[string]any)
	for k, want := range map[string]any{
		"change": "4242", "patchset": "3", "pipeline": "check", "tenant": "example", "job": "consumer",
		"build": cons.UUID, "buildset": it.Buildset, "change_message": "Add {{ templates }} that must not be rendered",
	} {
		if z[k] != want {
			t.Errorf("zuul.%s = %v, want %v", k, z[k], want)
		}
	}
	proj := z["project"].(map[string]any)
	if proj["src_dir"] != "src/review.example.org/myorg/proj" || proj["short_name"] != "proj" || proj["canonical_name"] != "review.example.org/myorg/proj" {
		t.Errorf("zuul.project = %v", proj)
	}
	ex := z["executor"].(map[string]any)
	if ex["result_data_file"] != filepath.Join(cons.Dir, "work", "results.json") || ex["src_root"] != filepath.Join(cons.Dir, "work", "src") {
		t.Errorf("zuul.executor = %v", ex)
	}
	if _, ok := z["projects"].(map[string]any)["review.example.org/myorg/proj"]; !ok {
		t.Errorf("zuul.projects = %v", z["projects"])
	}

	// Nothing secret is left behind, and build directories are private.
	err = filepath.Walk(filepath.Join(dir, "work"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || info.Mode()&os.ModeSymlink != 0 {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range []string{secretPW, returnedPW, shortToken, quotedKey, `ke\"y\\with-quotes`} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a secret", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range it.Builds {
		st, err := os.Stat(b.Dir)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("build dir %s: %v %v", b.Dir, st.Mode(), err)
		}
	}
	log, _ := os.ReadFile(reg.Log)
	if !strings.Contains(string(log), "the password is ********") {
		t.Errorf("the registry log does not show the redacted password:\n%s", log)
	}
	if !strings.Contains(string(log), "the token is ********, the key ********") {
		t.Errorf("the registry log does not show the redacted token and key:\n%s", log)
	}
}

// TestRunAcrossChanges checks artifacts between changes (requires and
// provides), a failed provider failing the requiring job, and a dependent
// pipeline dequeuing a change whose dependency failed.
func TestRunAcrossChanges(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job:
    name: producer
    parent: null
    run: playbooks/produce.yaml
    provides: image
- job:
    name: needs-image
    parent: null
    run: playbooks/consume.yaml
    requires: image
- job:
    name: plain
    parent: null
    run: playbooks/consume.yaml
`,
		"cfg/playbooks/produce.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: producer asked to fail
      when: fail_producer | default(false)
    - zuul_return:
        data:
          zuul:
            artifacts:
              - name: "myorg/base:latest"
                url: "docker://ir:5000/myorg/base:{{ zuul.build }}_latest"
                metadata: {type: container_image, repository: myorg/base, tag: latest}
`,
		"cfg/playbooks/consume.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ {'artifacts': zuul.artifacts | default([]), 'items': zuul['items'] | map(attribute='change') | list, 'projects': zuul.projects.keys() | list} | to_json }}"
        dest: "{{ zuul.executor.work_root }}/seen.json"
`,
		"a/README": "a\n", "b/README": "b\n",
	}
	queue := `
config: [{path: cfg, project: site/config}]
changes:
  - {project: myorg/base, change: 1, src: a, jobs: [producer]}
  - {project: myorg/app, change: 2, src: b, depends-on: [1], jobs: [needs-image, plain]}
  - {project: myorg/base, change: 3, src: a, pipeline: gate, vars: {fail_producer: true}, jobs: [producer]}
  - {project: myorg/app, change: 4, src: b, depends-on: [3], jobs: [needs-image]}
  - {project: myorg/app, change: 5, src: b, pipeline: gate, depends-on: [3], jobs: [plain]}
`
	rep, _ := runQueue(t, queue, files)
	prod := rep.Item(1, "").Build("producer")
	if prod.Result != Success {
		t.Fatalf("producer: %s %s", prod.Result, prod.Message)
	}
	c2 := rep.Item(2, "")
	seen := readJSON(t, c2.Build("needs-image"), "seen").(map[string]any)
	arts := seen["artifacts"].([]any)
	if len(arts) != 1 {
		t.Fatalf("needs-image got %d artifacts: %v", len(arts), seen)
	}
	a := arts[0].(map[string]any)
	if a["url"] != "docker://ir:5000/myorg/base:"+prod.UUID+"_latest" || a["change"] != "1" || a["project"] != "myorg/base" || a["job"] != "producer" {
		t.Errorf("artifact = %v", a)
	}
	if !reflect.DeepEqual(seen["items"], []any{"1", "2"}) {
		t.Errorf("zuul.items changes = %v", seen["items"])
	}
	if len(seen["projects"].([]any)) != 2 {
		t.Errorf("zuul.projects = %v", seen["projects"])
	}
	if plain := readJSON(t, c2.Build("plain"), "seen").(map[string]any); len(plain["artifacts"].([]any)) != 0 {
		t.Errorf("a job without requires got artifacts: %v", plain)
	}
	if c3 := rep.Item(3, ""); c3.Result != Failure || !strings.Contains(c3.Build("producer").Message, "producer asked to fail") {
		t.Errorf("change 3: %s %+v", c3.Result, c3.Build("producer"))
	}
	c4 := rep.Item(4, "").Build("needs-image")
	if c4.Result != Failure || c4.UUID != "" || !strings.Contains(c4.Message, "job producer of change 3,1, which provides it, did not succeed") {
		t.Errorf("change 4: %+v", c4)
	}
	if c5 := rep.Item(5, ""); c5.Result != Dequeued || len(c5.Builds) != 0 || !strings.Contains(c5.Message, "depends on change 3") {
		t.Errorf("change 5: %+v", c5)
	}
	if !rep.Failed() {
		t.Error("report does not say it failed")
	}
}

// TestRunConfigErrors checks that a broken job graph fails the change
// before any playbook runs, with a message naming what to fix.
func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job: {name: ok, parent: null, run: playbooks/ok.yaml}
- job: {name: missing-playbook, parent: null, run: playbooks/ok.yaml, post-run: playbooks/nope.yaml}
- job: {name: a, parent: null, run: playbooks/ok.yaml}
- secret:
    name: enc
    data: {password: !encrypted/pkcs1-oaep [abc]}
- job: {name: uses-enc, parent: null, run: playbooks/ok.yaml, secrets: [enc]}
`,
		"cfg/playbooks/ok.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.shell: "echo ran >> {{ zuul.executor.work_root }}/../../../ran.txt"
`,
		"p/README": "p\n",
	}
	queue := `
config: [{path: cfg, project: site/config}]
changes:
  - {project: x/p, change: 1, src: p, jobs: [ok, missing-playbook]}
  - {project: x/p, change: 2, src: p, jobs: [ok, {a: {dependencies: [absent]}}]}
  - {project: x/p, change: 3, src: p, jobs: [{ok: {dependencies: [a]}}, {a: {dependencies: [ok]}}]}
  - {project: x/p, change: 4, src: p, jobs: [uses-enc]}
  - {project: x/p, change: 5, src: p, jobs: [ok, {a: {dependencies: [{name: absent, soft: true}]}}]}
`
	rep, dir := runQueue(t, queue, files)
	for change, want := range map[int]string{
		1: "job missing-playbook: playbook playbooks/nope.yaml does not exist in project site/config",
		2: "job a depends on job absent, which does not run for this change",
		3: "cycle",
		4: "secret enc is encrypted",
	} {
		it := rep.Item(change, "")
		if it.Result != ErrorResult || !strings.Contains(it.Message, want) || len(it.Builds) != 0 {
			t.Errorf("change %d: %s %q, want ERROR with %q", change, it.Result, it.Message, want)
		}
	}
	if it := rep.Item(5, ""); it.Result != Success {
		t.Errorf("change 5 (soft dependency on a job that does not run): %s %s", it.Result, it.Message)
	}
	ran, _ := os.ReadFile(filepath.Join(dir, "work", "ran.txt"))
	if got := strings.Count(string(ran), "ran"); got != 2 {
		t.Errorf("%d playbooks ran, want 2 (change 5's jobs only)", got)
	}
}

// TestRunRetries checks pre-run retries: a failing pre-run is retried up
// to the job's attempts (each attempt a new build) and reported as
// RETRY_LIMIT, unless the job returned zuul.retry: false, which makes the
// failure final at once (FAILURE).
func TestRunRetries(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job:
    name: flaky-pre
    parent: null
    attempts: 2
    pre-run: playbooks/fail.yaml
    run: playbooks/fail.yaml
- job:
    name: config-error
    parent: null
    attempts: 3
    pre-run: playbooks/no-retry.yaml
    run: playbooks/fail.yaml
`,
		"cfg/playbooks/fail.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.shell: "echo {{ zuul.job }} >> {{ zuul.executor.work_root }}/../../../attempts.txt"
    - ansible.builtin.fail:
        msg: pre-run failed
`,
		"cfg/playbooks/no-retry.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.shell: "echo {{ zuul.job }} >> {{ zuul.executor.work_root }}/../../../attempts.txt"
    - zuul_return:
        data:
          zuul:
            retry: false
    - ansible.builtin.fail:
        msg: a configuration error
`,
		"p/README": "p\n",
	}
	rep, dir := runQueue(t, `
config: [{path: cfg, project: site/config}]
changes:
  - {project: x/p, change: 1, src: p, jobs: [flaky-pre, config-error]}
`, files, WithMaxAttempts(5))
	it := rep.Items[0]
	if b := it.Build("flaky-pre"); b.Result != RetryLimit || b.Attempts != 2 || !strings.Contains(b.Message, "pre-run failed") {
		t.Errorf("flaky-pre: %+v", b)
	}
	if b := it.Build("config-error"); b.Result != Failure || b.Attempts != 1 || !strings.Contains(b.Message, "a configuration error") {
		t.Errorf("config-error: %+v", b)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "work", "attempts.txt"))
	if got := strings.Fields(string(raw)); strings.Join(got, ",") != "flaky-pre,flaky-pre,config-error" {
		t.Errorf("pre-run playbooks ran for %v", got)
	}
}

// TestRunConcurrencyAndTimeout runs two independent jobs at once (each
// waits, with a deadline, for the other to have started), a job depending
// on both after them, and a job whose run exceeds its timeout: its
// ansible-playbook is killed and the build is TIMED_OUT.
func TestRunConcurrencyAndTimeout(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job: {name: left, parent: null, run: playbooks/meet.yaml, vars: {me: left, other: right}}
- job: {name: right, parent: null, run: playbooks/meet.yaml, vars: {me: right, other: left}}
- job: {name: after, parent: null, run: playbooks/after.yaml}
- job: {name: slow, parent: null, run: playbooks/slow.yaml, timeout: 3}
`,
		"cfg/playbooks/meet.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: started
        dest: "{{ zuul.executor.work_root }}/../../../{{ me }}"
    - name: Wait for the other job, which runs at the same time
      ansible.builtin.wait_for:
        path: "{{ zuul.executor.work_root }}/../../../{{ other }}"
        timeout: 120
`,
		"cfg/playbooks/after.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.stat:
        path: "{{ zuul.executor.work_root }}/../../../{{ item }}"
      loop: [left, right]
      register: met
    - ansible.builtin.assert:
        that: met.results | map(attribute='stat.exists') | list == [true, true]
`,
		"cfg/playbooks/slow.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - name: Wait for a file that never comes, longer than the job's timeout
      ansible.builtin.wait_for:
        path: /nonexistent/imagegate-runner-test
        timeout: 600
`,
		"p/README": "p\n",
	}
	rep, _ := runQueue(t, `
config: [{path: cfg, project: site/config}]
changes:
  - project: x/p
    change: 1
    src: p
    jobs:
      - left
      - right
      - after: {dependencies: [left, right]}
      - slow
`, files, WithConcurrency(2))
	it := rep.Items[0]
	for _, j := range []string{"left", "right", "after"} {
		if b := it.Build(j); b.Result != Success {
			t.Errorf("%s: %s %s", j, b.Result, b.Message)
		}
	}
	if b := it.Build("slow"); b.Result != TimedOut || !strings.Contains(b.Message, "timed out") {
		t.Errorf("slow: %+v", b)
	}
}
