package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "container_image_build") }

func TestDocs(t *testing.T) {
	ansibletest.CheckDocs(t, "container_image_build.yml", params{})
	ansibletest.CheckReturn(t, "container_image_build.yml", run)
}

const password = "s3cret-Pa55word-0f-the-registry"

func zuulVars(srcDir string) map[string]any {
	return map[string]any{"change": 42, "pipeline": "gate", "change_url": "https://review.example.org/42",
		"project": map[string]any{"src_dir": srcDir}}
}

// podmanEnv gives podman, for the module and the test, a private store
// under dir (CONTAINERS_STORAGE_CONF and CONTAINERS_CONF, as a user would
// set them in the task's environment).
func podmanEnv(t *testing.T, dir string) []string {
	t.Helper()
	storage := filepath.Join(dir, "storage.conf")
	conf := filepath.Join(dir, "containers.conf")
	s := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "run"))
	c := "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n"
	if err := os.WriteFile(storage, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"CONTAINERS_STORAGE_CONF=" + storage, "CONTAINERS_CONF=" + conf}
}

// TestBadInput runs the module on each kind of bad input: it fails before
// anything is built, names the image or parameter and what to fix, and
// never prints the password.
func TestBadInput(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("container_image_build")
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	os.MkdirAll(filepath.Join(work, "ok"), 0o755)
	os.WriteFile(filepath.Join(work, "ok", "Containerfile"), []byte("FROM scratch\nCOPY Containerfile /\n"), 0o644)
	cert := string(testenv.NewTLS(t, home).CA.CertPEM)
	br := map[string]any{"host": "127.0.0.1", "port": 1, "password": password, "cert": cert}
	image := func(kv ...any) map[string]any {
		m := map[string]any{"context": "ok", "registry": "quay.io", "repository": "quay.io/myorg/app"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name  string
		image map[string]any
		extra map[string]any
		want  []string
	}{
		{"repository without registry", image("repository", "app"), nil,
			[]string{"container_images[0] (app)", `repository "app" has no registry`, "quay.io/app"}},
		{"missing context", image("context", "nowhere"), nil, []string{"container_images[0] (quay.io/myorg/app)", "context directory", "does not exist"}},
		{"missing container file", image("container_filename", "Containerfile.prod"), nil,
			[]string{"container_images[0] (quay.io/myorg/app)", "Containerfile.prod", "does not exist"}},
		{"container_command", image(), map[string]any{"container_command": "buildah"},
			[]string{"container_command", "buildah", "podman", "docker"}},
		{"docker_host with podman", image(), map[string]any{"docker_host": "unix:///var/run/docker.sock"},
			[]string{"docker_host is set, but container_command is podman"}},
		{"extra env name", image(), map[string]any{"container_build_extra_env": map[string]any{"NOT A NAME": "x"}},
			[]string{"container_build_extra_env", `"NOT A NAME"`}},
		{"docker key", image("dockerfile_name", "x"), nil, []string{"Unsupported parameters in container_images[0]: dockerfile_name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := map[string]any{
				"container_images": []any{tc.image}, "zuul": zuulVars("src/example.org/org/app"),
				"buildset_registry": br, "buildkit_addr": "unix://" + filepath.Join(home, "never-reached.sock"), "connect_timeout": 1,
				"log_file": filepath.Join(home, "build.log"), "_ansible_remote_tmp": home,
			}
			for k, v := range tc.extra {
				args[k] = v
			}
			o := ansibletest.RunBinary(t, bin, args, "HOME="+home)
			o.CheckFailure(t, tc.want...)
			o.CheckNoSecrets(t, password)
			if _, err := os.Stat(filepath.Join(home, "build.log")); err == nil {
				t.Error("bad input wrote the build log")
			}
		})
	}
}

type moduleResult struct {
	Changed bool `json:"changed"`
	Images  []struct {
		Digest     string   `json:"digest"`
		References []string `json:"references"`
		LocalNames []string `json:"local_names"`
		Platforms  []string `json:"platforms"`
	} `json:"images"`
	Command string `json:"container_command"`
}

// registryFixture is a real registry (Debian's docker-registry) as the
// buildset registry, and a buildkitd that trusts it.
type registryFixture struct {
	reg   *testenv.Distribution
	bk    *testenv.Buildkitd
	ropts []remote.Option
}

func newRegistryFixture(t *testing.T) *registryFixture {
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	cfg := fmt.Sprintf("[registry.%q]\n  http = false\n  ca = [%q]\n", reg.Host, reg.TLS.CAFile)
	bk := testenv.StartBuildkitd(t, cfg)
	tr := &http.Transport{TLSClientConfig: reg.TLS.Client().Transport.(*http.Transport).TLSClientConfig}
	return &registryFixture{reg: reg, bk: bk, ropts: []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(tr), remote.WithContext(context.Background())}}
}

func (f *registryFixture) buildsetRegistry() map[string]any {
	return map[string]any{"host": "127.0.0.1", "port": f.reg.Port, "username": f.reg.Username, "password": f.reg.Password,
		"cert": string(f.reg.TLS.CA.CertPEM)}
}

// project writes a context whose image runs busybox (copied from the
// machine, no base image needed) to print msg.
func project(t *testing.T, home, file, msg string) {
	t.Helper()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(testenv.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "busybox"), bb, 0o755)
	os.WriteFile(filepath.Join(work, "msg"), []byte(msg+"\n"), 0o644)
	os.WriteFile(filepath.Join(work, file), []byte("FROM scratch\nCOPY busybox /busybox\nCOPY msg /msg\nCMD [\"/busybox\", \"cat\", \"/msg\"]\n"), 0o644)
}

// TestBuildIntoPodman: check mode builds and loads nothing; the build
// pushes every reference to the buildset registry under the namespace
// mapping rule (quay.io/... under quay.io/, docker.io/... without it) and
// loads the image into podman's store, where `podman run <repository>:<tag>`
// runs it and its ID is the config digest that was pushed; the unchanged
// second run is not changed.
func TestBuildIntoPodman(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("container_image_build")
	f := newRegistryFixture(t)
	home := t.TempDir()
	// Containerfile, podman's default name.
	project(t, home, "Containerfile", "built for podman")
	penv := podmanEnv(t, t.TempDir())
	env := append([]string{"HOME=" + home}, penv...)
	// Without provenance, which is new at every build, the rebuild below
	// changes nothing (tests/build covers provenance with podman).
	args := map[string]any{
		"container_images": []any{
			map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/app", "tags": []any{"latest", "1.0"}, "provenance": false},
			map[string]any{"context": ".", "registry": "docker.io", "repository": "docker.io/myorg/tool", "provenance": false},
		},
		"zuul": zuulVars("src/example.org/org/app"), "buildset_registry": f.buildsetRegistry(), "buildkit_addr": f.bk.Addr,
	}
	check := map[string]any{"_ansible_check_mode": true}
	for k, v := range args {
		check[k] = v
	}
	o := ansibletest.RunBinary(t, bin, check, env...)
	o.CheckNoSecrets(t, f.reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("check mode: %s", o.Stdout)
	}
	if _, err := remote.Head(f.ref(t, "quay.io/myorg/app:latest"), f.ropts...); err == nil {
		t.Error("check mode pushed")
	}
	if out := podman(t, penv, "images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("check mode loaded images: %s", out)
	}

	o = ansibletest.RunBinary(t, bin, args, env...)
	o.CheckNoSecrets(t, f.reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("build: %s\n%s", o.Stdout, o.Stderr)
	}
	var res moduleResult
	json.Unmarshal(o.Stdout, &res)
	if res.Command != "podman" || len(res.Images) != 2 {
		t.Fatalf("result: %s", o.Stdout)
	}
	want := map[string][]string{
		"quay.io/myorg/app": {"quay.io/myorg/app:latest", "quay.io/myorg/app:change_42_latest", "quay.io/myorg/app:1.0", "quay.io/myorg/app:change_42_1.0"},
		"myorg/tool":        {"docker.io/myorg/tool:latest", "docker.io/myorg/tool:change_42_latest"},
	}
	for i, repo := range []string{"quay.io/myorg/app", "myorg/tool"} {
		img := res.Images[i]
		if strings.Join(img.LocalNames, " ") != strings.Join(want[repo], " ") {
			t.Errorf("local_names = %v, want %v", img.LocalNames, want[repo])
		}
		for _, n := range want[repo] {
			tag := n[strings.LastIndex(n, ":")+1:]
			ref := f.ref(t, repo+":"+tag)
			d, err := remote.Head(ref, f.ropts...)
			if err != nil || d.Digest.String() != img.Digest {
				t.Errorf("buildset registry %s: %v %v, reported %s", ref, d, err, img.Digest)
				continue
			}
			im, err := remote.Image(ref, f.ropts...)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := im.ConfigName()
			if id := strings.TrimSpace(podman(t, penv, "image", "inspect", "--format", "{{.Id}}", n)); "sha256:"+id != cfg.String() {
				t.Errorf("podman's %s has ID %s, the pushed config is %s", n, id, cfg)
			}
		}
	}
	run := append([]string{"run", "--rm", "--network", "none"}, testenv.PodmanRunLimits...)
	if out := podman(t, penv, append(run, "quay.io/myorg/app:1.0")...); strings.TrimSpace(out) != "built for podman" {
		t.Errorf("podman run quay.io/myorg/app:1.0: %q", out)
	}

	o = ansibletest.RunBinary(t, bin, args, env...)
	if o.Failed() || o.Changed() {
		t.Fatalf("unchanged rebuild: %s\n%s", o.Stdout, o.Stderr)
	}
}

// TestBuildIntoDocker: with container_command docker the image lands in
// dockerd, where docker run finds it by its full name.
func TestBuildIntoDocker(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("container_image_build")
	f := newRegistryFixture(t)
	dockerd := testenv.StartDockerd(t, testenv.DockerdOptions{})
	home := t.TempDir()
	project(t, home, "Dockerfile", "built for docker")
	// Without provenance, so that the rebuild below changes nothing.
	args := map[string]any{
		"container_images": []any{map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/app", "provenance": false}},
		"zuul":             zuulVars("src/example.org/org/app"), "buildset_registry": f.buildsetRegistry(), "buildkit_addr": f.bk.Addr,
		"container_command": "docker", "docker_host": dockerd.Host,
	}
	o := ansibletest.RunBinary(t, bin, args, "HOME="+home)
	o.CheckNoSecrets(t, f.reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("build: %s\n%s", o.Stdout, o.Stderr)
	}
	out := testenv.Run(t, dockerd.Env(), "docker", "run", "--rm", "--network", "none", "quay.io/myorg/app:change_42_latest")
	if strings.TrimSpace(out) != "built for docker" {
		t.Errorf("docker run: %q", out)
	}
	o = ansibletest.RunBinary(t, bin, args, "HOME="+home)
	if o.Failed() || o.Changed() {
		t.Fatalf("unchanged rebuild: %s", o.Stdout)
	}
}

// TestMultiArchWithPodman: a multi-platform FROM scratch build with
// podman as the command (upstream fails there): the index with both
// platforms is pushed to the buildset registry, and podman's store gets
// the node's platform, whose config digest it has as ID, and runs it.
func TestMultiArchWithPodman(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("container_image_build")
	f := newRegistryFixture(t)
	home := t.TempDir()
	project(t, home, "Containerfile", "multi-arch")
	penv := podmanEnv(t, t.TempDir())
	native := "linux/" + nativeArch()
	other := "linux/arm64"
	if nativeArch() == "arm64" {
		other = "linux/amd64"
	}
	args := map[string]any{
		"container_images": []any{map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/multi",
			"arch": []any{native, other}}},
		"zuul": zuulVars("src/example.org/org/app"), "buildset_registry": f.buildsetRegistry(), "buildkit_addr": f.bk.Addr,
	}
	o := ansibletest.RunBinary(t, bin, args, append([]string{"HOME=" + home}, penv...)...)
	if o.Failed() || !o.Changed() {
		t.Fatalf("build: %s\n%s", o.Stdout, o.Stderr)
	}
	var res moduleResult
	json.Unmarshal(o.Stdout, &res)
	idx, err := remote.Index(f.ref(t, "quay.io/myorg/multi:latest"), f.ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); d.String() != res.Images[0].Digest {
		t.Errorf("index %s, reported %s", d, res.Images[0].Digest)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var nativeCfg v1.Hash
	var plats []string
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS == "unknown" {
			continue // attestations
		}
		plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
		if m.Platform.Architecture == nativeArch() {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			nativeCfg, _ = img.ConfigName()
		}
	}
	if len(plats) != 2 {
		t.Errorf("index platforms %v", plats)
	}
	id := strings.TrimSpace(podman(t, penv, "image", "inspect", "--format", "{{.Id}} {{.Architecture}}", "quay.io/myorg/multi:latest"))
	if id != nativeCfg.Hex+" "+nativeArch() {
		t.Errorf("podman has %q, want the native image %s %s", id, nativeCfg.Hex, nativeArch())
	}
	run := append([]string{"run", "--rm", "--network", "none"}, testenv.PodmanRunLimits...)
	if out := podman(t, penv, append(run, "quay.io/myorg/multi:change_42_latest")...); strings.TrimSpace(out) != "multi-arch" {
		t.Errorf("podman run: %q", out)
	}
}

// ref is the buildset registry reference of a container_images
// repository, by the namespace mapping rule.
func (f *registryFixture) ref(t *testing.T, repoTag string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(f.reg.Host + "/" + strings.TrimPrefix(repoTag, "docker.io/"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func podman(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return testenv.Run(t, env, "podman", args...)
}

func nativeArch() string { return runtime.GOARCH }
