package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/transfertest"
)

func registryArg(r transfertest.Registry) map[string]any {
	host, port, _ := strings.Cut(r.Host, ":")
	p, _ := strconv.Atoi(port)
	return map[string]any{"host": host, "port": p, "username": r.Username, "password": r.Password, "cert": string(r.CA)}
}

type artifact struct {
	Name     string            `json:"name"`
	URL      string            `json:"url"`
	Metadata map[string]string `json:"metadata"`
}

func artifacts(t *testing.T, out *ansibletest.Output) []artifact {
	t.Helper()
	b, _ := json.Marshal(out.Result["artifacts"])
	var a []artifact
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("artifacts: %v: %s", err, b)
	}
	return a
}

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "intermediate_registry_push") }

func TestPushModule(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("intermediate_registry_push")
	br, ir := transfertest.Ours(t), transfertest.Distribution(t)
	app := transfertest.Push(t, br, br.Host+"/myorg/app:latest", transfertest.Image(t, false, transfertest.Layer(1, 50_000)))
	tool := transfertest.Push(t, br, br.Host+"/quay.io/myorg/tool:v2", transfertest.Index(t, true,
		transfertest.Image(t, true, transfertest.Layer(2, 50_000))))
	images := []map[string]any{
		{"context": "app", "repository": "docker.io/myorg/app"},
		{"context": "tool", "repository": "quay.io/myorg/tool", "tags": []string{"v2"}},
	}
	args := map[string]any{
		"zuul":                  map[string]any{"build": "5b2e8f", "change": 42, "artifacts": []any{}},
		"buildset_registry":     registryArg(br),
		"intermediate_registry": registryArg(ir),
		"docker_images":         images,
		// container_images is used only without docker_images, as upstream.
		"container_images": []map[string]any{{"context": ".", "repository": "not/pushed"}},
	}

	// Check mode: the artifacts it would return, nothing copied.
	args["_ansible_check_mode"] = true
	out := ansibletest.RunBinary(t, bin, args)
	if out.Failed() || !out.Changed() || len(artifacts(t, out)) != 2 {
		t.Fatalf("check mode: %s", out.Stdout)
	}
	if check := ansibletest.RunBinary(t, bin, args); !check.Changed() {
		t.Fatalf("check mode copied something: %s", check.Stdout)
	}
	delete(args, "_ansible_check_mode")

	// Credentials and CAs stay in memory: nothing is written to the
	// user's docker configuration or to the certificate directories.
	home := t.TempDir()
	out = ansibletest.RunBinary(t, bin, args, "HOME="+home, "DOCKER_CONFIG=", "REGISTRY_AUTH_FILE=")
	if out.Failed() || !out.Changed() {
		t.Fatalf("push: %s\n%s", out.Stdout, out.Stderr)
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Errorf("the module wrote %v into HOME", entries)
	}
	for _, dir := range []string{"/etc/docker/certs.d", "/etc/containers/certs.d"} {
		for _, h := range []string{br.Host, ir.Host} {
			if _, err := os.Stat(filepath.Join(dir, h)); err == nil {
				t.Errorf("%s/%s exists", dir, h)
			}
		}
	}
	got, _ := json.Marshal(artifacts(t, out))
	want := `[{"name":"docker.io/myorg/app:latest","url":"docker://` + ir.Host + `/docker.io/myorg/app:5b2e8f_latest",` +
		`"metadata":{"repository":"docker.io/myorg/app","tag":"latest","type":"container_image"}},` +
		`{"name":"quay.io/myorg/tool:v2","url":"docker://` + ir.Host + `/quay.io/myorg/tool:5b2e8f_v2",` +
		`"metadata":{"repository":"quay.io/myorg/tool","tag":"v2","type":"container_image"}}]`
	if string(got) != want {
		t.Errorf("artifacts\n%s\nwant\n%s", got, want)
	}
	if _, d := transfertest.Manifest(t, ir, ir.Host+"/docker.io/myorg/app:5b2e8f_latest"); d != app {
		t.Errorf("intermediate registry: app is %s, want %s", d, app)
	}
	if _, d := transfertest.Manifest(t, ir, ir.Host+"/quay.io/myorg/tool:5b2e8f_v2"); d != tool {
		t.Errorf("intermediate registry: tool is %s, want %s", d, tool)
	}
	out.CheckNoSecrets(t, br.Password, ir.Password)

	// The second run finds everything in place.
	again := ansibletest.RunBinary(t, bin, args)
	if again.Failed() || again.Changed() || len(artifacts(t, again)) != 2 {
		t.Errorf("second run: %s", again.Stdout)
	}
}

// TestPushFromResultData reads the buildset registry from
// zuul.executor.result_data_file, as upstream does when the registry was
// started earlier in the same job.
func TestPushFromResultData(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("intermediate_registry_push")
	br, ir := transfertest.Distribution(t), transfertest.Ours(t)
	transfertest.Push(t, br, br.Host+"/myorg/app:latest", transfertest.Image(t, false, transfertest.Layer(3, 1000)))
	results := filepath.Join(t.TempDir(), "results.json")
	doc, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": registryArg(br)}})
	os.WriteFile(results, doc, 0o600)
	out := ansibletest.RunBinary(t, bin, map[string]any{
		"zuul":                  map[string]any{"build": "b1", "executor": map[string]any{"result_data_file": results}},
		"intermediate_registry": registryArg(ir),
		"container_images":      []map[string]any{{"context": ".", "repository": "myorg/app"}},
	})
	if out.Failed() || !out.Changed() || len(artifacts(t, out)) != 1 {
		t.Fatalf("push: %s", out.Stdout)
	}
	out.CheckNoSecrets(t, br.Password) // read from the result data file
}

func TestPushBadInput(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("intermediate_registry_push")
	br, ir := transfertest.Ours(t), transfertest.Distribution(t)
	transfertest.Push(t, br, br.Host+"/myorg/app:latest", transfertest.Image(t, false, transfertest.Layer(4, 1000)))
	wrong := registryArg(ir)
	wrong["password"] = "wrong-password"
	closed := registryArg(ir)
	closed["port"] = 1
	tests := []struct {
		name   string
		change func(a map[string]any)
		msg    string
	}{
		{"missing tag", func(a map[string]any) {
			a["docker_images"] = []map[string]any{{"context": ".", "repository": "myorg/app", "tags": []string{"nope"}}}
		}, "docker_images[0] (myorg/app), tag nope: reading source manifest"},
		{"wrong credentials", func(a map[string]any) { a["intermediate_registry"] = wrong }, "check the username and password"},
		{"unreachable", func(a map[string]any) { a["intermediate_registry"] = closed }, "connection refused"},
		{"no build", func(a map[string]any) { a["zuul"] = map[string]any{} }, "zuul.build is empty"},
		{"no zuul", func(a map[string]any) { delete(a, "zuul") }, "parameter zuul: is required"},
		{"tag with colon", func(a map[string]any) {
			a["docker_images"] = []map[string]any{{"context": ".", "repository": "myorg/app", "tags": []string{"a:b"}}}
		}, `docker_images[0] (myorg/app): tag "a:b" is not a valid tag`},
		{"no buildset registry", func(a map[string]any) { delete(a, "buildset_registry") }, "buildset_registry is not set"},
		{"unknown parameter", func(a map[string]any) { a["docker_image"] = "x" }, "Unsupported parameters: docker_image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := map[string]any{
				"zuul":                  map[string]any{"build": "b1"},
				"buildset_registry":     registryArg(br),
				"intermediate_registry": registryArg(ir),
				"docker_images":         []map[string]any{{"context": ".", "repository": "myorg/app"}},
				"retries":               1,
			}
			tc.change(a)
			out := ansibletest.RunBinary(t, bin, a)
			out.CheckFailure(t, tc.msg)
			out.CheckNoSecrets(t, br.Password, ir.Password)
		})
	}
}
