package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func registryArg(r transfertest.Registry) map[string]any {
	host, port, _ := strings.Cut(r.Host, ":")
	p, _ := strconv.Atoi(port)
	return map[string]any{"host": host, "port": p, "username": r.Username, "password": r.Password, "cert": string(r.CA)}
}

func irOf(r transfertest.Registry) (string, int) {
	host, port, _ := strings.Cut(r.Host, ":")
	p, _ := strconv.Atoi(port)
	return host, p
}

// artifact returns the artifact a change ahead's push module returned,
// with the keys Zuul adds.
func artifact(ir transfertest.Registry, repo, tag, build string) map[string]any {
	host, port := irOf(ir)
	a := zuul.NewContainerImageArtifact(host, port, repo, tag, build+"_"+tag)
	return map[string]any{"name": a.Name, "url": a.URL, "metadata": a.Metadata,
		"project": "org/ahead", "change": "41", "patchset": "2", "job": "build-image"}
}

// lib holds the modules, built once as `make build` builds them, beside their
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) {
	ansibletest.Main(m, &lib, "intermediate_registry_pull", "intermediate_registry_push")
}

func TestPullModule(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("intermediate_registry_pull")
	br, ir := transfertest.Ours(t), transfertest.Distribution(t)
	base := transfertest.Layer(1, 300_000)
	app := transfertest.Push(t, ir, ir.Host+"/myorg/app:abc_latest", transfertest.Image(t, false, base, transfertest.Layer(2, 1000)))
	multi := transfertest.Push(t, ir, ir.Host+"/quay.io/myorg/multi:abc_v1", transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, base, transfertest.Layer(3, 1000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, base, transfertest.Layer(4, 1000))))
	hub := transfertest.Push(t, ir, ir.Host+"/docker.io/myorg/hub:abc_latest", transfertest.Image(t, false, base, transfertest.Layer(5, 1000)))
	arts := []any{
		artifact(ir, "myorg/app", "latest", "abc"),
		map[string]any{"name": "logs", "url": "https://logs.example.org/41/"},
		artifact(ir, "quay.io/myorg/multi", "v1", "abc"),
		map[string]any{"name": "docs", "url": "https://docs.example.org/", "metadata": map[string]any{"type": "docs_site"}},
		artifact(ir, "docker.io/myorg/hub", "latest", "abc"),
	}
	args := map[string]any{
		"zuul":                  map[string]any{"build": "def", "artifacts": arts},
		"buildset_registry":     registryArg(br),
		"intermediate_registry": registryArg(ir),
	}
	args["_ansible_check_mode"] = true
	out := ansibletest.RunBinary(t, bin, args)
	if out.Failed() || !out.Changed() {
		t.Fatalf("check mode: %s", out.Stdout)
	}
	delete(args, "_ansible_check_mode")
	if _, err := transfertest.ManifestErr(br, br.Host+"/myorg/app:latest"); err == nil {
		t.Fatal("check mode copied an image")
	}

	out = ansibletest.RunBinary(t, bin, args)
	if out.Failed() || !out.Changed() {
		t.Fatalf("pull: %s\n%s", out.Stdout, out.Stderr)
	}
	for ref, want := range map[string]string{"myorg/app:latest": app, "quay.io/myorg/multi:v1": multi, "myorg/hub:latest": hub} {
		if _, d := transfertest.Manifest(t, br, br.Host+"/"+ref); d != want {
			t.Errorf("buildset registry: %s is %s, want %s", ref, d, want)
		}
	}
	var res struct {
		Images []struct {
			Name, Target, Digest string
			Changed              bool
		}
		Ignored []struct{ Name, Reason string }
	}
	b, _ := json.Marshal(out.Result)
	json.Unmarshal(b, &res)
	if len(res.Images) != 3 || len(res.Ignored) != 2 || res.Images[0].Digest != app || res.Images[2].Target != br.Host+"/myorg/hub:latest" {
		t.Errorf("result: %s", out.Stdout)
	}
	out.CheckNoSecrets(t, br.Password, ir.Password)
	again := ansibletest.RunBinary(t, bin, args)
	if again.Failed() || again.Changed() {
		t.Errorf("second run: %s", again.Stdout)
	}

	// zuul_artifacts overrides zuul.artifacts; an empty list does nothing.
	args["zuul_artifacts"] = []any{}
	if none := ansibletest.RunBinary(t, bin, args); none.Failed() || none.Changed() || len(none.Result["images"].([]any)) != 0 {
		t.Errorf("empty zuul_artifacts: %s", none.Stdout)
	}
}

func TestPullBadInput(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("intermediate_registry_pull")
	br, ir := transfertest.Distribution(t), transfertest.Ours(t)
	transfertest.Push(t, ir, ir.Host+"/myorg/app:abc_latest", transfertest.Image(t, false, transfertest.Layer(6, 1000)))
	good := artifact(ir, "myorg/app", "latest", "abc")
	wrongBR := registryArg(br)
	wrongBR["password"] = "wrong-password"
	deadIR := registryArg(ir)
	deadIR["port"] = 1
	tests := []struct {
		name   string
		change func(a map[string]any)
		msg    string
	}{
		{"malformed url", func(a map[string]any) {
			a["zuul_artifacts"] = []any{good, map[string]any{"name": "bad", "url": "docker:/nohost",
				"metadata": map[string]any{"type": "container_image", "repository": "x", "tag": "y"}}}
		}, `artifact "bad": url "docker:/nohost" is not of the form docker://`},
		{"missing image", func(a map[string]any) { a["zuul_artifacts"] = []any{artifact(ir, "myorg/app", "latest", "zzz")} },
			`artifact "myorg/app:latest": reading source manifest`},
		{"wrong buildset password", func(a map[string]any) { a["buildset_registry"] = wrongBR }, "check the username and password"},
		{"unreachable intermediate registry", func(a map[string]any) {
			a["intermediate_registry"] = deadIR
			a["zuul_artifacts"] = []any{map[string]any{"name": "x", "url": "docker://127.0.0.1:1/myorg/app:abc_latest",
				"metadata": map[string]any{"type": "container_image", "repository": "myorg/app", "tag": "latest"}}}
		}, "connection refused"},
		{"no buildset registry", func(a map[string]any) { delete(a, "buildset_registry") }, "buildset_registry is not set"},
		{"no intermediate registry", func(a map[string]any) { delete(a, "intermediate_registry") }, "parameter intermediate_registry: is required"},
		{"artifacts not a list", func(a map[string]any) { a["zuul_artifacts"] = "nope" }, "parameter zuul_artifacts: must be a list"},
		// Every parameter is checked before anything, even when there is
		// nothing to copy.
		{"bad intermediate registry cert, nothing to copy", func(a map[string]any) {
			bad := registryArg(ir)
			bad["cert"] = "not a certificate"
			a["intermediate_registry"] = bad
			a["zuul_artifacts"] = []any{}
		}, "intermediate_registry.cert: no PEM certificate found"},
		{"corrupt result data file, nothing to copy", func(a map[string]any) {
			delete(a, "buildset_registry")
			f := filepath.Join(t.TempDir(), "results.json")
			os.WriteFile(f, []byte(`{"secret_data": {`), 0o600)
			a["zuul"] = map[string]any{"executor": map[string]any{"result_data_file": f}}
			a["zuul_artifacts"] = []any{}
		}, "results.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := map[string]any{
				"zuul":                  map[string]any{"artifacts": []any{good}},
				"buildset_registry":     registryArg(br),
				"intermediate_registry": registryArg(ir),
				"retries":               1,
			}
			tc.change(a)
			out := ansibletest.RunBinary(t, bin, a)
			out.CheckFailure(t, tc.msg)
			out.CheckNoSecrets(t, br.Password, ir.Password)
			if tc.name == "malformed url" {
				if _, err := transfertest.ManifestErr(br, br.Host+"/myorg/app:latest"); err == nil {
					t.Errorf("the good artifact was copied although another was malformed")
				}
			}
		})
	}
}

// TestPlaybook runs both modules through real ansible-playbook, as the
// upstream roles run on the executor: a job pushes its images to the
// intermediate registry and returns artifacts; a later change's job pulls
// them into its own buildset registry (read from the job's result data
// file); running it again changes nothing; check mode copies nothing.
func TestPlaybook(t *testing.T) {
	t.Parallel()
	br1, br2, ir := transfertest.Ours(t), transfertest.Ours(t), transfertest.Distribution(t)
	want := transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(7, 100_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(8, 100_000))))
	dir := t.TempDir()
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		var b []byte
		if s, ok := v.(string); ok {
			b = []byte(s)
		} else {
			b, _ = json.Marshal(v)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// run runs a playbook with ansible-core's own output (the json stdout
	// callback is not part of ansible-core) and returns the play recap's
	// line for localhost.
	run := func(pb string, vars string, extra ...string) string {
		t.Helper()
		args := append([]string{"-i", "localhost,", "-c", "local", "-e", "@" + vars}, extra...)
		cmd := exec.Command("ansible-playbook", append(args, pb)...)
		cmd.Dir = dir
		cmd.Env = append(append(os.Environ(), ansibletest.PlaybookEnv(t, dir, lib.Dir)...),
			"ANSIBLE_PYTHON_INTERPRETER=auto_silent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ansible-playbook %s: %v\n%s", pb, err, out)
		}
		for _, secret := range []string{br1.Password, br2.Password, ir.Password} {
			if strings.Contains(string(out), secret) {
				t.Errorf("ansible-playbook %s: a password is in the output", pb)
			}
		}
		recap := regexp.MustCompile(`(?m)^localhost\s*:\s*(ok=.*)$`).FindStringSubmatch(string(out))
		if recap == nil {
			t.Fatalf("ansible-playbook %s: no play recap for localhost\n%s", pb, out)
		}
		return recap[1]
	}
	changed := func(recap string) int {
		m := regexp.MustCompile(`\bchanged=(\d+)`).FindStringSubmatch(recap)
		if m == nil {
			t.Fatalf("play recap %q has no changed count", recap)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}

	// The change ahead's job: push, and keep the artifacts (what
	// zuul_return would hand to Zuul).
	push := write("push.yaml", `- hosts: localhost
  gather_facts: false
  tasks:
    - name: Push to the intermediate registry
      intermediate_registry_push:
        zuul: "{{ zuul }}"
        buildset_registry: "{{ buildset_registry }}"
        intermediate_registry: "{{ intermediate_registry }}"
        docker_images: "{{ docker_images }}"
      register: pushed
      no_log: true
    - name: Keep the artifacts
      ansible.builtin.copy:
        content: "{{ pushed.artifacts | to_json }}"
        dest: "{{ playbook_dir }}/artifacts.json"
`)
	pushVars := write("push-vars.json", map[string]any{
		"zuul":                  map[string]any{"build": "9f8e7d", "change": "41", "pipeline": "check"},
		"buildset_registry":     registryArg(br1),
		"intermediate_registry": registryArg(ir),
		"docker_images":         []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []string{"latest"}}},
	})
	run(push, pushVars)
	var arts []map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "artifacts.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &arts); err != nil || len(arts) != 1 || arts[0]["url"] != "docker://"+ir.Host+"/myorg/app:9f8e7d_latest" {
		t.Fatalf("artifacts %s (%v)", b, err)
	}
	for _, a := range arts { // what Zuul adds when it passes them on
		a["project"], a["change"], a["patchset"], a["job"] = "org/ahead", "41", "1", "build-image"
	}

	// The later change's job, with its buildset registry in the result
	// data file.
	results := write("results.json", map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": registryArg(br2)}})
	pull := write("pull.yaml", `- hosts: localhost
  gather_facts: false
  tasks:
    - name: Pull from the intermediate registry
      intermediate_registry_pull:
        zuul: "{{ zuul }}"
        intermediate_registry: "{{ intermediate_registry }}"
      register: pulled
      no_log: true
    - name: Show what was copied
      ansible.builtin.debug:
        msg: "{{ pulled.images | map(attribute='digest') | list }}"
`)
	pullVars := write("pull-vars.json", map[string]any{
		"zuul": map[string]any{"build": "aa11", "change": "42", "artifacts": arts,
			"executor": map[string]any{"result_data_file": results}},
		"intermediate_registry": registryArg(ir),
	})
	if res := run(pull, pullVars, "--check"); changed(res) != 1 {
		t.Errorf("check mode: %v changed tasks, want 1", changed(res))
	}
	if _, err := transfertest.ManifestErr(br2, br2.Host+"/myorg/app:latest"); err == nil {
		t.Fatal("check mode copied the image")
	}
	if res := run(pull, pullVars); changed(res) != 1 {
		t.Errorf("pull: %v changed tasks, want 1", changed(res))
	}
	if _, d := transfertest.Manifest(t, br2, br2.Host+"/myorg/app:latest"); d != want {
		t.Errorf("buildset registry has %s, want %s", d, want)
	}
	if res := run(pull, pullVars); changed(res) != 0 {
		t.Errorf("second pull: %v changed tasks, want 0", changed(res))
	}
}
