package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/pkg/pki"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "use_buildset_registry") }

func TestDocs(t *testing.T) {
	ansibletest.CheckDocs(t, "use_buildset_registry.yml", params{})
	ansibletest.CheckReturn(t, "use_buildset_registry.yml", run)
}

// args returns module arguments with every path under root.
func args(t *testing.T, root string) map[string]any {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{
		"buildset_registry": map[string]any{"host": "192.0.2.7", "port": 5000, "username": "zuul",
			"password": "hunter2-very-secret", "cert": string(ca.CertPEM)},
		"hosts_file":           filepath.Join(root, "hosts"),
		"ca_trust_dir":         filepath.Join(root, "trust"),
		"ca_trust_command":     []string{"true"},
		"docker_daemon_json":   filepath.Join(root, "docker/daemon.json"),
		"docker_certs_dir":     filepath.Join(root, "docker/certs.d"),
		"docker_host":          "unix://" + filepath.Join(root, "docker.sock"),
		"docker_pidfile":       filepath.Join(root, "docker.pid"),
		"registries_conf":      filepath.Join(root, "containers/registries.conf"),
		"containers_certs_dir": filepath.Join(root, "containers/certs.d"),
		"buildkitd_toml":       filepath.Join(root, "buildkit/buildkitd.toml"),
		"buildkit_certs_dir":   filepath.Join(root, "buildkit/certs.d"),
		"containerd_certs_dir": filepath.Join(root, "containerd/certs.d"),
		"clients":              []string{"system", "docker", "containers", "buildkit", "containerd"},
	}
}

func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			out[strings.TrimPrefix(p, root)] = string(b)
		}
		return nil
	})
	return out
}

func TestModuleIdempotentCheckAndDiff(t *testing.T) {
	bin := lib.Bin("use_buildset_registry")
	root := t.TempDir()
	a := args(t, root)
	os.WriteFile(filepath.Join(root, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)

	// Check mode with diff: reports the change, touches nothing.
	a["_ansible_check_mode"], a["_ansible_diff"] = true, true
	before := tree(t, root)
	out := ansibletest.RunBinary(t, bin, a)
	if out.Failed() || !out.Changed() {
		t.Fatalf("check mode: %s", out.Stdout)
	}
	if after := tree(t, root); !reflect.DeepEqual(before, after) {
		t.Fatalf("check mode touched files: %v", after)
	}
	diffs, _ := out.Result["diff"].([]any)
	var hostsDiff map[string]any
	for _, d := range diffs {
		d := d.(map[string]any)
		if d["before_header"] == filepath.Join(root, "hosts") {
			hostsDiff = d
		}
	}
	if hostsDiff == nil || hostsDiff["before"] != "127.0.0.1 localhost\n" ||
		hostsDiff["after"] != "127.0.0.1 localhost\n192.0.2.7\tzuul-jobs.buildset-registry\n" {
		t.Errorf("hosts diff: %v (all: %s)", hostsDiff, out.Stdout)
	}
	if len(diffs) != 13 {
		t.Errorf("%d diffs, want one per file (13)", len(diffs))
	}

	delete(a, "_ansible_check_mode")
	out = ansibletest.RunBinary(t, bin, a)
	if out.Failed() || !out.Changed() {
		t.Fatalf("first run: %s\n%s", out.Stdout, out.Stderr)
	}
	out.CheckNoSecrets(t, "hunter2-very-secret")
	if out.Result["location"] != "zuul-jobs.buildset-registry:5000" || out.Result["ca_trust_updated"] != true {
		t.Errorf("result: %s", out.Stdout)
	}
	files := tree(t, root)
	for p, c := range files {
		if strings.Contains(c, "hunter2-very-secret") {
			t.Errorf("%s holds the password", p)
		}
	}
	if !strings.Contains(files["/containers/registries.conf"], "zuul-jobs.buildset-registry:5000/quay.io") {
		t.Errorf("registries.conf:\n%s", files["/containers/registries.conf"])
	}

	out = ansibletest.RunBinary(t, bin, a)
	if out.Failed() || out.Changed() {
		t.Fatalf("second run: %s", out.Stdout)
	}
	if _, ok := out.Result["diff"]; ok {
		t.Errorf("second run has a diff: %s", out.Stdout)
	}
	if !reflect.DeepEqual(tree(t, root), files) {
		t.Error("second run changed files")
	}
}

func TestModuleFromResultDataFile(t *testing.T) {
	bin := lib.Bin("use_buildset_registry")
	root := t.TempDir()
	a := args(t, root)
	reg := a["buildset_registry"]
	delete(a, "buildset_registry")
	b, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": reg}})
	results := filepath.Join(root, "results.json")
	os.WriteFile(results, b, 0o600)
	a["zuul"] = map[string]any{"build": "abc", "executor": map[string]any{"result_data_file": results}}
	a["clients"] = []string{"containers"}
	out := ansibletest.RunBinary(t, bin, a)
	if out.Failed() || !out.Changed() {
		t.Fatalf("%s\n%s", out.Stdout, out.Stderr)
	}
	out.CheckNoSecrets(t, "hunter2-very-secret") // read from the result data file
	if got := out.Result["clients"]; !reflect.DeepEqual(got, []any{"containers"}) {
		t.Errorf("clients %v", got)
	}
	if sk := out.Result["skipped_clients"].(map[string]any); sk["docker"] != "not requested" {
		t.Errorf("skipped_clients %v", sk)
	}
}

func TestModuleBadInput(t *testing.T) {
	bin := lib.Bin("use_buildset_registry")
	cases := []struct {
		name   string
		mutate func(a map[string]any, root string)
		want   string
		// kept is a file that must be unchanged, with its content.
		kept, content string
	}{
		{name: "namespace not a pair", mutate: func(a map[string]any, _ string) {
			a["buildset_registry_namespaces"] = []any{[]any{"docker.io", "https://registry-1.docker.io"}, []any{"quay.io"}}
		}, want: "buildset_registry_namespaces[1]: must be a [registry-host, upstream-url] pair"},
		{name: "namespace a dict", mutate: func(a map[string]any, _ string) {
			a["buildset_registry_namespaces"] = []any{map[string]any{"host": "quay.io"}}
		}, want: "buildset_registry_namespaces[0]"},
		{name: "namespace upstream not a URL", mutate: func(a map[string]any, _ string) {
			a["buildset_registry_namespaces"] = []any{[]any{"quay.io", "quay.io"}}
		}, want: "buildset_registry_namespaces[0]: upstream \"quay.io\" for quay.io is not an http(s) URL"},
		{name: "unknown client", mutate: func(a map[string]any, _ string) { a["clients"] = []any{"kubelet"} },
			want: "clients"},
		{name: "no registry and no result file", mutate: func(a map[string]any, _ string) { delete(a, "buildset_registry") },
			want: "buildset_registry is not set"},
		{name: "bad cert", mutate: func(a map[string]any, _ string) {
			a["buildset_registry"].(map[string]any)["cert"] = "not a pem"
		}, want: "buildset_registry.cert"},
		{name: "unparseable daemon.json", mutate: func(a map[string]any, root string) {
			os.MkdirAll(filepath.Join(root, "docker"), 0o755)
			os.WriteFile(filepath.Join(root, "docker/daemon.json"), []byte(`{"debug": true,`), 0o644)
		}, want: "daemon.json: not valid JSON", kept: "docker/daemon.json", content: `{"debug": true,`},
		{name: "unparseable registries.conf", mutate: func(a map[string]any, root string) {
			os.MkdirAll(filepath.Join(root, "containers"), 0o755)
			os.WriteFile(filepath.Join(root, "containers/registries.conf"), []byte("[[registry]\nprefix='x'\n"), 0o644)
		}, want: "registries.conf: not valid TOML at line 1", kept: "containers/registries.conf", content: "[[registry]\nprefix='x'\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			a := args(t, root)
			tc.mutate(a, root)
			before := tree(t, root)
			out := ansibletest.RunBinary(t, bin, a)
			out.CheckFailure(t, tc.want)
			if after := tree(t, root); !reflect.DeepEqual(before, after) {
				t.Errorf("files changed by a failed run:\n%v\n%v", before, after)
			}
			if tc.kept != "" {
				if b, _ := os.ReadFile(filepath.Join(root, tc.kept)); string(b) != tc.content {
					t.Errorf("%s not kept: %q", tc.kept, b)
				}
			}
		})
	}
}
