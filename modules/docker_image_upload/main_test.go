package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "docker_image_upload") }

// moduleBin returns the path of the module binary.
func moduleBin() string { return lib.Bin("docker_image_upload") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "docker_image_upload.yml", params{})
	ansibletest.CheckReturn(t, "docker_image_upload.yml", run)
}

func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "docker_image_upload",
		"upload_docker_image_promote", "docker_registry_url", "buildset_registry", "EXAMPLES", "RETURN VALUES", "blobs_mounted")
}

const password = `pw-"quoted"\-2b9d4a`

// env is a buildset registry holding myorg/app:latest and a target
// registry, both imagegate's.
type env struct {
	br, target *registrytest.Registry
	img        v1.Image
	// dir is a temporary directory for the test's files.
	dir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// A buildset registry that refuses anonymous pulls, so a wrong
	// password shows.
	e := &env{br: registrytest.New(t, registry.WithAnonymousRead(false)), target: registrytest.New(t), dir: t.TempDir()}
	e.img = testenv.BusyboxImage(t, testenv.FileLayer("app.txt", []byte("app\n")))
	ref, _ := name.ParseReference(e.br.Host + "/myorg/app:latest")
	if err := remote.Write(ref, e.img, remote.WithAuth(&authn.Basic{Username: e.br.Username, Password: e.br.Password}), remote.WithTransport(e.br.Transport())); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) brParam() map[string]any {
	return map[string]any{"host": "127.0.0.1", "port": e.br.Port, "username": e.br.Username, "password": e.br.Password, "cert": string(e.br.CAPEM)}
}

func (e *env) args() map[string]any {
	return map[string]any{
		"docker_images":        []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest"}}},
		"docker_credentials":   map[string]any{"username": e.target.Username, "password": e.target.Password},
		"docker_registry":      e.target.Host,
		"docker_registry_cert": string(e.target.CAPEM),
		"buildset_registry":    e.brParam(),
		"zuul":                 map[string]any{"change": "42", "pipeline": "gate"},
	}
}

func (e *env) digest(t *testing.T, ref string) string {
	t.Helper()
	r, _ := name.ParseReference(e.target.Host + "/" + ref)
	d, err := remote.Head(r, remote.WithAuth(&authn.Basic{Username: e.target.Username, Password: e.target.Password}), remote.WithTransport(e.target.Transport()))
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

// TestUploadModule: check mode, upload, second run unchanged, with the
// buildset registry read from the job's result data file.
func TestUploadModule(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want, _ := e.img.Digest()
	results := filepath.Join(t.TempDir(), "results.json")
	b, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": e.brParam()}})
	if err := os.WriteFile(results, b, 0o600); err != nil {
		t.Fatal(err)
	}
	args := e.args()
	delete(args, "buildset_registry")
	args["zuul"] = map[string]any{"change": 42, "pipeline": "gate", "executor": map[string]any{"result_data_file": results}}
	args["_ansible_verbosity"] = 3

	check := map[string]any{"_ansible_check_mode": true, "_ansible_diff": true}
	for k, v := range args {
		check[k] = v
	}
	// An unanchored restriction works as upstream's re.search, with a warning.
	check["docker_credentials"] = map[string]any{"username": e.target.Username, "password": e.target.Password, "repository": "myorg/"}
	o := ansibletest.RunBinary(t, moduleBin(), check)
	if o.Failed() || !o.Changed() || e.digest(t, "myorg/app:change_42_latest") != "" {
		t.Fatalf("check mode: %s", o.Stdout)
	}
	if w := fmt.Sprint(o.Result["warnings"]); !strings.Contains(w, `docker_credentials.repository "myorg/" is not anchored with ^`) {
		t.Errorf("warnings: %s", w)
	}
	if diff := fmt.Sprint(o.Result["diff"]); !strings.Contains(diff, "myorg/app:change_42_latest -> "+want.String()) {
		t.Errorf("diff: %s", diff)
	}
	o = ansibletest.RunBinary(t, moduleBin(), args)
	if o.Failed() || !o.Changed() {
		t.Fatalf("upload: %s", o.Stdout)
	}
	if got := e.digest(t, "myorg/app:change_42_latest"); got != want.String() {
		t.Errorf("change_42_latest = %q, want %s", got, want)
	}
	up := o.Result["uploads"].([]any)[0].(map[string]any)
	if up["digest"] != want.String() || up["reference"] != e.target.Host+"/myorg/app:change_42_latest" {
		t.Errorf("uploads: %v", up)
	}
	o.CheckNoSecrets(t, e.br.Password, e.target.Password)
	o = ansibletest.RunBinary(t, moduleBin(), args)
	if o.Failed() || o.Changed() {
		t.Errorf("second run: %s", o.Stdout)
	}
}

// TestBadInput: each fails naming what to fix, nothing is uploaded, and no
// password is shown.
func TestBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(e *env, a map[string]any)
		want   string
	}{
		{"missing credentials", func(_ *env, a map[string]any) { delete(a, "docker_credentials") }, "parameter docker_credentials: is required"},
		{"wrong password", func(e *env, a map[string]any) {
			a["docker_credentials"] = map[string]any{"username": e.target.Username, "password": password}
		}, "docker_credentials (zuul) were refused by 127.0.0.1:"},
		{"repository not permitted", func(e *env, a map[string]any) {
			a["docker_credentials"] = map[string]any{"username": e.target.Username, "password": password, "repository": "^myorg/lib"}
		}, `docker_images[0] (myorg/app): repository myorg/app not permitted by docker_credentials.repository "^myorg/lib"`},
		{"malformed regex", func(e *env, a map[string]any) {
			a["docker_credentials"] = map[string]any{"username": e.target.Username, "password": password, "repository": "(?=x)"}
		}, "lookarounds"},
		{"missing image", func(e *env, a map[string]any) {
			a["docker_images"] = []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "2.0"}}}
		}, "docker_images[0] (myorg/app), tag 2.0: 127.0.0.1:"},
		{"duplicate tags", func(e *env, a map[string]any) {
			a["docker_images"] = []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "latest"}}}
		}, `tag "latest" is listed twice`},
		{"unknown registry", func(e *env, a map[string]any) { a["docker_registry"] = "registry.invalid" }, "connecting to registry registry.invalid/myorg/app:change_42_latest"},
		{"registry URL over http", func(e *env, a map[string]any) { a["docker_registry_url"] = "http://" + e.target.Host }, "docker_registry_url"},
		{"no buildset registry", func(e *env, a map[string]any) { delete(a, "buildset_registry") }, "buildset_registry is not set"},
		{"wrong buildset registry password", func(e *env, a map[string]any) {
			br := e.brParam()
			br["password"] = password
			a["buildset_registry"] = br
		}, "myorg/app:latest: getting a token for repository:myorg/app:pull"},
		{"no change, no pipeline", func(e *env, a map[string]any) { a["zuul"] = map[string]any{} }, "zuul.change and zuul.pipeline are both empty"},
		// Every parameter is checked before anything is read or written.
		{"bad registry cert", func(e *env, a map[string]any) { a["docker_registry_cert"] = "not a certificate" }, "docker_registry_cert: no PEM certificate found"},
		{"corrupt result data file", func(e *env, a map[string]any) {
			delete(a, "buildset_registry")
			f := filepath.Join(e.dir, "results.json")
			os.WriteFile(f, []byte(`{"secret_data":`), 0o600)
			a["zuul"] = map[string]any{"change": 42, "pipeline": "gate", "executor": map[string]any{"result_data_file": f}}
		}, "results.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			args := e.args()
			tc.modify(e, args)
			args["_ansible_verbosity"] = 3
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, password, e.target.Password, e.br.Password)
			if d := e.digest(t, "myorg/app:change_42_latest"); d != "" {
				t.Errorf("uploaded %s despite the bad input", d)
			}
		})
	}
}
