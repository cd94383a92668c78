package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
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

// TestCommand runs the command on a small configuration with real
// ansible-playbook: the exit code says whether every job succeeded, the
// summary names each job and why one failed, -report writes the report,
// and a broken queue file exits 2 with a message.
func TestCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job: {name: passes, parent: null, run: playbooks/run.yaml}
- job: {name: fails, parent: null, run: playbooks/run.yaml, vars: {fail_it: true}}
`,
		"cfg/playbooks/run.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: asked to fail
      when: fail_it | default(false)
`,
		"p/README":    "p\n",
		"ok.yaml":     "changes: [{project: x/p, change: 1, src: p, jobs: [passes]}]\n",
		"fail.yaml":   "changes: [{project: x/p, change: 1, src: p, jobs: [passes, fails]}]\n",
		"bad.yaml":    "changes: [{project: x/p, change: 1, jobs: [passes]}]\n",
		"noconf.yaml": "changes: [{project: x/p, change: 1, src: p, jobs: [passes]}]\n",
	})
	cfg := filepath.Join(dir, "cfg") + "=site/config"
	for _, tc := range []struct {
		name, queue string
		args        []string
		code        int
		stdout      []string
		stderr      string
	}{
		{"success", "ok.yaml", nil, 0, []string{"change 1,1 of x/p (check): SUCCESS", "passes", "SUCCESS"}, ""},
		{"failure", "fail.yaml", nil, 1, []string{"fails", "FAILURE", `task "ansible.builtin.fail" on localhost failed: asked to fail`}, ""},
		{"bad queue", "bad.yaml", nil, 2, nil, "src is required"},
		{"unknown job", "noconf.yaml", []string{"-config", filepath.Join(dir, "p")}, 1, []string{"ERROR", "job passes is not defined"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := tc.args
			if args == nil {
				args = []string{"-config", cfg}
			}
			report := filepath.Join(t.TempDir(), "report.json")
			args = append(args, "-work", t.TempDir(), "-report", report, filepath.Join(dir, tc.queue))
			code := run(args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			if tc.stderr != "" && !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
			if tc.code != 2 {
				raw, err := os.ReadFile(report)
				if err != nil {
					t.Fatal(err)
				}
				var rep struct {
					Items []struct{ Result string } `json:"items"`
				}
				if err := json.Unmarshal(raw, &rep); err != nil || len(rep.Items) != 1 {
					t.Errorf("report: %v %s", err, raw)
				}
			}
		})
	}
}
