package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/transfertest"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "container_image_upload") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "container_image_upload.yml", params{})
	ansibletest.CheckReturn(t, "container_image_upload.yml", run)
}

func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "container_image_upload",
		"container_registry_credentials", "promote_container_image_method", "EXAMPLES", "RETURN VALUES")
}

// env is a buildset registry (imagegate's) holding an image for quay.io
// and a two-platform index for registry.example.org, and the two target
// registries: imagegate's as quay.io and Debian's docker-registry as
// registry.example.org, each with its own account.
type env struct {
	br, quay, other transfertest.Registry
	appDigest       string
	toolDigest      string
	toolManifest    []byte
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{br: transfertest.Ours(t), quay: transfertest.Ours(t), other: transfertest.Distribution(t)}
	app := transfertest.Image(t, false, transfertest.Layer(1, 4096))
	e.appDigest = transfertest.Push(t, e.br, e.br.Host+"/quay.io/myorg/app:latest", app)
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(2, 2048)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(3, 2048)))
	e.toolDigest = transfertest.Push(t, e.br, e.br.Host+"/registry.example.org/myorg/tool:latest", idx)
	transfertest.Push(t, e.br, e.br.Host+"/registry.example.org/myorg/tool:1.0", idx)
	e.toolManifest, _ = transfertest.Manifest(t, e.br, e.br.Host+"/registry.example.org/myorg/tool:latest")
	return e
}

func (e *env) args() map[string]any {
	return map[string]any{
		"container_images": []any{
			map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/app"},
			map[string]any{"context": ".", "registry": "registry.example.org", "repository": "registry.example.org/myorg/tool", "tags": []any{"latest", "1.0"}},
		},
		"container_registry_credentials": map[string]any{
			"quay.io": map[string]any{"username": e.quay.Username, "password": e.quay.Password, "repository": `^quay\.io/myorg/`, "api_token": "tok-" + e.quay.Password,
				"registry_url": "https://" + e.quay.Host, "cert": string(e.quay.CA)},
			"registry.example.org": map[string]any{"username": e.other.Username, "password": e.other.Password, "repository": "^registry.example.org/myorg/",
				"registry_url": "https://" + e.other.Host, "cert": string(e.other.CA)},
		},
		"buildset_registry": map[string]any{"host": "127.0.0.1", "port": port(e.br.Host), "username": e.br.Username, "password": e.br.Password, "cert": string(e.br.CA)},
		"zuul":              map[string]any{"change": "42", "pipeline": "gate"},
	}
}

func port(host string) string { return host[strings.LastIndex(host, ":")+1:] }

func (e *env) secrets() []string {
	return []string{e.br.Password, e.quay.Password, e.other.Password, "tok-" + e.quay.Password}
}

type result struct {
	Uploads []struct {
		Reference string `json:"reference"`
		Digest    string `json:"digest"`
		Changed   bool   `json:"changed"`
	} `json:"uploads"`
}

// TestUploadToTwoRegistries: check mode copies nothing; the upload stages
// change_42_<tag> in both registries, each with its own account, the index
// byte for byte; the second run changes nothing; no password or token is
// ever printed.
func TestUploadToTwoRegistries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	args := e.args()
	args["_ansible_check_mode"] = true
	args["_ansible_diff"] = true
	o := ansibletest.RunBinary(t, lib.Bin("container_image_upload"), args)
	o.CheckNoSecrets(t, e.secrets()...)
	if o.Failed() || !o.Changed() {
		t.Fatalf("check mode: %s", o.Stdout)
	}
	if _, err := transfertest.ManifestErr(e.quay, e.quay.Host+"/myorg/app:change_42_latest"); err == nil {
		t.Error("check mode uploaded")
	}
	delete(args, "_ansible_check_mode")
	o = ansibletest.RunBinary(t, lib.Bin("container_image_upload"), args)
	o.CheckNoSecrets(t, e.secrets()...)
	if o.Failed() || !o.Changed() {
		t.Fatalf("upload: %s\n%s", o.Stdout, o.Stderr)
	}
	var res result
	if err := json.Unmarshal(o.Stdout, &res); err != nil {
		t.Fatal(err)
	}
	want := []string{"quay.io/myorg/app:change_42_latest", "registry.example.org/myorg/tool:change_42_latest", "registry.example.org/myorg/tool:change_42_1.0"}
	if len(res.Uploads) != len(want) {
		t.Fatalf("uploads: %s", o.Stdout)
	}
	for i, w := range want {
		if res.Uploads[i].Reference != w || !res.Uploads[i].Changed {
			t.Errorf("upload %d: %+v, want %s", i, res.Uploads[i], w)
		}
	}
	if _, d := transfertest.Manifest(t, e.quay, e.quay.Host+"/myorg/app:change_42_latest"); d != e.appDigest {
		t.Errorf("quay.io's change tag is %s, built %s", d, e.appDigest)
	}
	for _, tag := range []string{"change_42_latest", "change_42_1.0"} {
		raw, d := transfertest.Manifest(t, e.other, e.other.Host+"/myorg/tool:"+tag)
		if d != e.toolDigest || !bytes.Equal(raw, e.toolManifest) {
			t.Errorf("registry.example.org's %s is %s, not the index %s byte for byte", tag, d, e.toolDigest)
		}
		transfertest.CheckBlobs(t, e.other, e.other.Host+"/myorg/tool:"+tag, map[string]bool{})
	}
	// No final tag was written.
	if _, err := transfertest.ManifestErr(e.quay, e.quay.Host+"/myorg/app:latest"); err == nil {
		t.Error("the final tag was written in a staging upload")
	}
	o = ansibletest.RunBinary(t, lib.Bin("container_image_upload"), e.args())
	if o.Failed() || o.Changed() {
		t.Fatalf("second run: %s", o.Stdout)
	}
}

// TestReleaseAndSkip: upload_container_image_promote false uploads the
// final tags; promote_container_image_method intermediate-registry (with
// promote) uploads nothing and reports skipped, not changed.
func TestReleaseAndSkip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	args := e.args()
	args["promote_container_image_method"] = "intermediate-registry"
	o := ansibletest.RunBinary(t, lib.Bin("container_image_upload"), args)
	if o.Failed() || o.Changed() || !strings.Contains(string(o.Stdout), `"skipped":true`) || !strings.Contains(o.Msg(), "intermediate-registry") {
		t.Fatalf("intermediate-registry: %s", o.Stdout)
	}
	if _, err := transfertest.ManifestErr(e.quay, e.quay.Host+"/myorg/app:change_42_latest"); err == nil {
		t.Error("the skipped upload uploaded")
	}
	args["upload_container_image_promote"] = false
	o = ansibletest.RunBinary(t, lib.Bin("container_image_upload"), args)
	if o.Failed() || !o.Changed() {
		t.Fatalf("release: %s", o.Stdout)
	}
	if _, d := transfertest.Manifest(t, e.quay, e.quay.Host+"/myorg/app:latest"); d != e.appDigest {
		t.Errorf("quay.io's latest is %s, built %s", d, e.appDigest)
	}
	if _, err := transfertest.ManifestErr(e.quay, e.quay.Host+"/myorg/app:change_42_latest"); err == nil {
		t.Error("a release wrote a change tag")
	}
}

// TestBadInput: each bad input fails before anything is sent to any
// registry, naming the image and the cause, and never prints a secret.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	image := func(i int, kv ...any) func(map[string]any) {
		return func(a map[string]any) {
			im := a["container_images"].([]any)[i].(map[string]any)
			for j := 0; j < len(kv); j += 2 {
				im[kv[j].(string)] = kv[j+1]
			}
		}
	}
	creds := func(reg string, kv ...any) func(map[string]any) {
		return func(a map[string]any) {
			c := a["container_registry_credentials"].(map[string]any)[reg].(map[string]any)
			for j := 0; j < len(kv); j += 2 {
				c[kv[j].(string)] = kv[j+1]
			}
		}
	}
	tests := []struct {
		name   string
		change func(map[string]any)
		want   []string
	}{
		{"no credentials entry", image(1, "registry", "ghcr.io", "repository", "ghcr.io/myorg/tool"),
			[]string{"container_images[1] (ghcr.io/myorg/tool)", `no entry for registry "ghcr.io"`, "quay.io, registry.example.org"}},
		{"outside the expression", image(0, "repository", "quay.io/other/app"),
			[]string{"container_images[0]", "quay.io/other/app not permitted by", `container_registry_credentials["quay.io"].repository`}},
		{"no slash", image(0, "repository", "app"),
			[]string{"container_images[0] (app)", "has no registry"}},
		{"another registry's repository", image(0, "repository", "quay.io.evil.example/myorg/app", "registry", "quay.io"),
			[]string{"container_images[0]", "not permitted by"}},
		{"repository in another registry", func(a map[string]any) {
			image(0, "repository", "docker.io/myorg/app")(a)
			creds("quay.io", "repository", "")(a)
		}, []string{"container_images[0] (docker.io/myorg/app)", "is in registry index.docker.io, not in quay.io"}},
		{"no password", creds("registry.example.org", "password", ""),
			[]string{"container_images[1]", `container_registry_credentials["registry.example.org"] needs username and password`}},
		{"bad expression", creds("quay.io", "repository", "^quay.io/(?=myorg)"),
			[]string{`container_registry_credentials["quay.io"].repository`, "lookarounds"}},
		{"method", func(a map[string]any) { a["promote_container_image_method"] = "retag" },
			[]string{"promote_container_image_method", "retag"}},
		{"wrong password", creds("registry.example.org", "password", "not-the-password"),
			[]string{"container_images[1] (registry.example.org/myorg/tool), tag latest", "401 Unauthorized", "check the username and password"}},
		{"registry_url not https", creds("quay.io", "registry_url", "http://127.0.0.1:5000"),
			[]string{`container_images[0] (quay.io/myorg/app): container_registry_credentials["quay.io"]: registry_url "http://127.0.0.1:5000": must be https://`}},
		{"cert not PEM", creds("registry.example.org", "cert", "not a certificate"),
			[]string{`container_images[1] (registry.example.org/myorg/tool): container_registry_credentials["registry.example.org"]: cert`}},
		{"insecure registry with a scheme", func(a map[string]any) { a["insecure_registries"] = []any{"http://registry.example.org"} },
			[]string{"insecure_registries", "http://registry.example.org"}},
		{"missing in the buildset registry", image(0, "tags", []any{"latest", "2.0"}),
			[]string{"container_images[0] (quay.io/myorg/app), tag 2.0", "not in the buildset registry"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := e.args()
			tc.change(args)
			o := ansibletest.RunBinary(t, lib.Bin("container_image_upload"), args)
			o.CheckFailure(t, tc.want...)
			o.CheckNoSecrets(t, e.secrets()...)
			o.CheckNoSecrets(t, "not-the-password")
			for _, ref := range []string{e.quay.Host + "/myorg/app:change_42_latest"} {
				if _, err := transfertest.ManifestErr(e.quay, ref); err == nil {
					t.Errorf("%s was uploaded", ref)
				}
			}
			if _, err := transfertest.ManifestErr(e.other, e.other.Host+"/myorg/tool:change_42_latest"); err == nil {
				t.Error("registry.example.org got an upload")
			}
		})
	}
}
