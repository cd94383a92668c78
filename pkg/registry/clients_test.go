package registry_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// authFile writes a docker/containers auth file for the registry into a
// private directory (removed with the test): the clients below read
// credentials only from files.
func authFile(t *testing.T, dir string, reg *registrytest.Registry, user, pass string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.Host: map[string]string{"auth": auth}}})
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCrane drives the crane CLI (go-containerregistry v0.22.1): push,
// copy (cross-repository mount), tag, list, catalog, export, delete, and
// anonymous reads with refused anonymous writes.
func TestCrane(t *testing.T) {
	t.Parallel()
	crane := testenv.Tool(t, "CRANE", "crane")
	reg := registrytest.New(t)
	dir, anonDir := t.TempDir(), t.TempDir()
	authFile(t, dir, reg, reg.Username, reg.Password)
	env := []string{"DOCKER_CONFIG=" + dir, "SSL_CERT_FILE=" + reg.CAFile}
	anonEnv := []string{"DOCKER_CONFIG=" + anonDir, "SSL_CERT_FILE=" + reg.CAFile}
	layer := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layer, testenv.FileLayer("hello.txt", []byte("hello from crane\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	app, cp := reg.Host+"/team/app", reg.Host+"/team/copy"

	testenv.Run(t, env, crane, "append", "-f", layer, "-t", app+":v1")
	dg := strings.TrimSpace(testenv.Run(t, env, crane, "digest", app+":v1"))
	testenv.Run(t, env, crane, "copy", app+":v1", cp+":v1")
	testenv.Run(t, env, crane, "tag", cp+":v1", "v2")
	if got := strings.Fields(testenv.Run(t, env, crane, "ls", cp)); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Fatalf("crane ls = %v", got)
	}
	if got := strings.Fields(testenv.Run(t, env, crane, "catalog", reg.Host)); !slices.Equal(got, []string{"team/app", "team/copy"}) {
		t.Fatalf("crane catalog = %v", got)
	}
	if got := testenv.Run(t, anonEnv, crane, "export", cp+":v2", "-"); !strings.Contains(got, "hello from crane") {
		t.Fatal("anonymous crane export did not return the layer's file")
	}
	if got := strings.TrimSpace(testenv.Run(t, anonEnv, crane, "digest", cp+":v2")); got != dg {
		t.Fatalf("digest of the copy %s, want %s", got, dg)
	}
	if out := testenv.RunFails(t, anonEnv, crane, "append", "-f", layer, "-t", app+":anon"); !strings.Contains(out, "UNAUTHORIZED") {
		t.Fatalf("anonymous crane append: %s, want UNAUTHORIZED", out)
	}
	testenv.Run(t, env, crane, "delete", cp+"@"+dg)
	if got := strings.Fields(testenv.Run(t, env, crane, "ls", cp)); len(got) != 0 {
		t.Fatalf("tags after deleting the manifest: %v", got)
	}
	if out := testenv.RunFails(t, env, crane, "digest", cp+":v1"); !strings.Contains(out, "MANIFEST_UNKNOWN") {
		t.Fatalf("digest of a deleted image: %s, want MANIFEST_UNKNOWN", out)
	}
}

// TestSkopeo drives skopeo 1.9 (containers/image): copy from an OCI layout,
// copy --all of an index between repositories, inspect anonymously,
// list-tags, delete, and a refused push with a wrong password.
func TestSkopeo(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "ca.crt"), reg.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	auth := authFile(t, dir, reg, reg.Username, reg.Password)
	badDir := filepath.Join(dir, "bad")
	os.MkdirAll(badDir, 0o700)
	badAuth := authFile(t, badDir, reg, reg.Username, "wrong")

	// An OCI layout holding busybox.
	oci := filepath.Join(dir, "oci")
	lp, err := layout.Write(oci, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := testenv.BusyboxImage(t)
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()
	// A multi-platform index, pushed with go-containerregistry.
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	iref, _ := name.ParseReference(reg.Host + "/team/multi:latest")
	if err := remote.WriteIndex(iref, idx, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(reg.Transport())); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()

	skopeo := func(args ...string) string { return testenv.Run(t, nil, "skopeo", args...) }
	skopeo("copy", "--dest-authfile", auth, "--dest-cert-dir", certs, "oci:"+oci, "docker://"+reg.Host+"/team/busybox:v1")
	skopeo("copy", "--all", "--src-no-creds", "--src-cert-dir", certs, "--dest-authfile", auth, "--dest-cert-dir", certs,
		"docker://"+reg.Host+"/team/multi:latest", "docker://"+reg.Host+"/team/multi-copy:v1")
	var inspected struct {
		Digest string
		Layers []string
	}
	out := skopeo("inspect", "--no-creds", "--cert-dir", certs, "docker://"+reg.Host+"/team/busybox:v1")
	if err := json.Unmarshal([]byte(out), &inspected); err != nil || inspected.Digest != imgDigest.String() || len(inspected.Layers) != 1 {
		t.Fatalf("skopeo inspect = %+v (%v), want digest %s with one layer", inspected, err, imgDigest)
	}
	raw := skopeo("inspect", "--raw", "--no-creds", "--cert-dir", certs, "docker://"+reg.Host+"/team/multi-copy:v1")
	if got := digestOf([]byte(raw)); got != idxDigest.String() {
		t.Fatalf("copied index has digest %s, want %s (copy --all must keep the bytes)", got, idxDigest)
	}
	var tags struct{ Tags []string }
	json.Unmarshal([]byte(skopeo("list-tags", "--no-creds", "--cert-dir", certs, "docker://"+reg.Host+"/team/busybox")), &tags)
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Fatalf("skopeo list-tags = %v", tags.Tags)
	}
	// A wrong password: the copy fails.
	testenv.RunFails(t, nil, "skopeo", "copy", "--dest-authfile", badAuth, "--dest-cert-dir", certs, "oci:"+oci, "docker://"+reg.Host+"/team/busybox:bad")
	skopeo("delete", "--authfile", auth, "--cert-dir", certs, "docker://"+reg.Host+"/team/busybox:v1")
	// A deleted image is not found.
	testenv.RunFails(t, nil, "skopeo", "inspect", "--no-creds", "--cert-dir", certs, "docker://"+reg.Host+"/team/busybox:v1")
}

func digestOf(b []byte) string { return digest.FromBytes(b).String() }
