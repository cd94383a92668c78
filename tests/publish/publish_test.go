// Package publish tests docker_image_upload and docker_image_promote end to
// end: the module binaries through real ansible-playbook, against
// imagegate's registry as buildset registry, and as target emulated Docker
// Hub (its web API emulated, in front of imagegate's registry) and Debian's
// docker-registry; through fault-injecting proxies; and a promote killed
// midway and run again.
package publish

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/publish/distribution"
	"github.com/imagegate/imagegate/tests/testenv"
)

// lib is a directory holding both module binaries, built as `make build`
// builds them, and their documentation: ANSIBLE_LIBRARY.
var lib string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "publish-modules")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lib = dir
	root := testenv.RepoRoot()
	for _, mod := range []string{"docker_image_upload", "docker_image_promote"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(lib, mod), "./modules/"+mod)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", mod, err, out)
			os.Exit(2)
		}
		doc, err := os.ReadFile(filepath.Join(root, "modules", mod, mod+".yml"))
		if err == nil {
			err = os.WriteFile(filepath.Join(lib, mod+".yml"), doc, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// registry is a registry as a client sees it.
type registry struct {
	Host, Username, Password string
	CA                       []byte
}

func (r registry) transport(t testing.TB) http.RoundTripper {
	t.Helper()
	pool, err := pki.CertPool(r.CA)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
}

func (r registry) push(t testing.TB, ref string, x any) {
	t.Helper()
	nref, err := name.ParseReference(r.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}), remote.WithTransport(r.transport(t))}
	switch v := x.(type) {
	case v1.Image:
		err = remote.Write(nref, v, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(nref, v, opts...)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// digest is what repo:tag points to, "" if it does not exist.
func (r registry) digest(t testing.TB, ref string) string {
	t.Helper()
	repo, tag, _ := strings.Cut(ref, ":")
	c, err := distribution.New(r.Host, distribution.WithTransport(r.transport(t)),
		distribution.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Repository(context.Background(), repo, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Head(context.Background(), tag)
	if errors.Is(err, distribution.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest
}

// image is a busybox image unique to content, labelled as the build labels
// an image of change, created at created.
func image(t testing.TB, change, content string, created time.Time) v1.Image {
	t.Helper()
	img := testenv.BusyboxImage(t, testenv.FileLayer("content.txt", []byte(content+"\n")))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.Config.Labels = map[string]string{"org.zuul-ci.change": change}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// index is a two-platform OCI index of images of change.
func index(t testing.TB, change, content string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img := image(t, change, content+"-"+arch, time.Now())
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Architecture = arch
		img, _ = mutate.ConfigFile(img, cf)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

func digestOf(t testing.TB, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// playbook runs a playbook of testdata on localhost with vars, and returns
// its output.
func playbook(t *testing.T, name string, vars map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory")
	cfg := filepath.Join(dir, "ansible.cfg")
	b, _ := json.Marshal(vars)
	varsFile := filepath.Join(dir, "vars.json")
	for f, content := range map[string][]byte{
		inv: []byte("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"),
		// An empty configuration: nothing of the machine's changes the test.
		cfg:      []byte("[defaults]\n"),
		varsFile: b,
	} {
		if err := os.WriteFile(f, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pb, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ansible-playbook", "-vvv", "-i", inv, "-e", "@"+varsFile, pb)
	cmd.Env = append(os.Environ(),
		"ANSIBLE_LIBRARY="+lib,
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "local"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "remote"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_CONFIG="+cfg,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-playbook %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// runModule runs a module binary on args, as Ansible does, and returns its
// result; it fails t when the module fails.
func runModule(t *testing.T, mod string, args map[string]any) map[string]any {
	t.Helper()
	res, out, err := runModuleErr(t, mod, args)
	if err != nil {
		t.Fatalf("%s: %v\n%s", mod, err, out)
	}
	return res
}

func runModuleErr(t *testing.T, mod string, args map[string]any) (map[string]any, []byte, error) {
	t.Helper()
	cmd, out := moduleCommand(t, mod, args)
	err := cmd.Run()
	var res map[string]any
	if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
		return nil, out.Bytes(), fmt.Errorf("output is not JSON (%v, exit %v)", jerr, err)
	}
	if failed, _ := res["failed"].(bool); failed {
		return res, out.Bytes(), fmt.Errorf("failed: %v", res["msg"])
	}
	return res, out.Bytes(), nil
}

// moduleCommand prepares a module run: the args file written, stdout
// collected in out, stderr discarded into the test log on failure.
func moduleCommand(t *testing.T, mod string, args map[string]any) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "args")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(lib, mod), f)
	var out bytes.Buffer
	cmd.Stdout = &out
	return cmd, &out
}
