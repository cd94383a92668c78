package clientconf_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// TestDockerdPullsThroughMirror: a running dockerd with a site mirror
// already configured is reloaded by the module (SIGHUP, no restart) and
// pulls myorg/app from the buildset registry, the site mirror kept after it.
// The registry is on an IPv6 address too, where the alias matters most:
// docker cannot parse [v6]:port/repo references (moby#39033).
func TestDockerdPullsThroughMirror(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) { testDockerd(t, localAddr(t, family)) })
	}
}

func testDockerd(t *testing.T, host string) {
	f := newFixture(t, host)
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/docker/certs.d", "/etc/containers/certs.d")
	// dockerd's resolver caches /etc/hosts for 5 s, so the alias is
	// written before it starts, by a first run configuring another client.
	f.run(t, sb, f.args([]string{"containers"}, map[string]any{
		"registries_conf": filepath.Join(sb.Dir, "registries.conf")}), true)
	t.Setenv("DOCKERD", sb.Wrap(t, testenv.Tool(t, "DOCKERD", "dockerd")))
	d := testenv.StartDockerd(t, testenv.DockerdOptions{DaemonJSON: map[string]any{
		"registry-mirrors":         []string{"https://site-mirror.invalid"},
		"max-concurrent-downloads": 2,
	}})
	args := f.args([]string{"docker"}, map[string]any{
		"docker_daemon_json": d.ConfigFile,
		"docker_host":        d.Host,
		"docker_pidfile":     filepath.Join(d.Dir, "docker.pid"),
	})
	out := f.run(t, sb, args, true)
	if out.Result["docker_reloaded"] != true {
		t.Errorf("dockerd not reloaded: %s", out.Stdout)
	}
	pid := d.Cmd.Process.Pid
	want := "https://" + f.location + "/"
	if got := d.Docker("info", "--format", "{{json .RegistryConfig.Mirrors}}"); strings.TrimSpace(got) != `["`+want+`","https://site-mirror.invalid/"]` {
		t.Errorf("live mirrors %s", got)
	}
	var dj map[string]any
	b, _ := os.ReadFile(d.ConfigFile)
	if err := json.Unmarshal(b, &dj); err != nil || dj["max-concurrent-downloads"] != float64(2) {
		t.Errorf("daemon.json lost a key: %s", b)
	}

	d.Docker("pull", dockerApp+":latest")
	got := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", dockerApp+":latest")
	if !strings.Contains(got, dockerApp+"@"+f.digest[dockerApp]) {
		t.Errorf("pulled %s, want the speculative %s", got, f.digest[dockerApp])
	}
	if d.Cmd.Process.Pid != pid || d.Exited() {
		t.Error("dockerd was restarted, not reloaded")
	}
	f.run(t, sb, args, false)
}

func podman(t *testing.T, sb *testenv.Sandbox, dir, conf string, args ...string) string {
	t.Helper()
	base := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	// An empty auth file: nothing is read from, or written to, the
	// machine's credentials.
	auth := filepath.Join(dir, "auth.json")
	if _, err := os.Stat(auth); err != nil {
		if err := os.WriteFile(auth, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"CONTAINERS_REGISTRIES_CONF=" + conf, "REGISTRY_AUTH_FILE=" + auth}
	return sb.Run(t, env, "podman", append(base, args...)...)
}

// TestPodmanPullsThroughRegistriesConf: podman pulls quay.io/myorg/app
// (quay.io is unreachable here) and the short name myorg/app through the
// mirrors the module put in registries.conf, trusting the CA from
// /etc/containers/certs.d. The existing configuration is kept.
func TestPodmanPullsThroughRegistriesConf(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) { testPodman(t, localAddr(t, family)) })
	}
}

func testPodman(t *testing.T, host string) {
	f := newFixture(t, host)
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/containers/certs.d", "/etc/docker/certs.d")
	dir := testenv.ShortTempDir(t)
	conf := filepath.Join(dir, "registries.conf")
	existing := "short-name-mode = \"enforcing\"\n\n[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"site-mirror.invalid/quay\"\n"
	if err := os.WriteFile(conf, []byte(existing), 0o644); err != nil {
		t.Fatal(err)
	}
	args := f.args([]string{"containers"}, map[string]any{"registries_conf": conf})
	f.run(t, sb, args, true)

	// The short name first: podman would match it to a local image of
	// another registry.
	podman(t, sb, dir, conf, "pull", "-q", dockerApp)
	if got := strings.TrimSpace(podman(t, sb, dir, conf, "image", "inspect", "--format", "{{.Digest}}", "docker.io/"+dockerApp+":latest")); got != f.digest[dockerApp] {
		t.Errorf("podman pulled %s for the short name, want the speculative %s", got, f.digest[dockerApp])
	}
	podman(t, sb, dir, conf, "pull", "-q", quayApp+":latest")
	if got := strings.TrimSpace(podman(t, sb, dir, conf, "image", "inspect", "--format", "{{.Digest}}", quayApp+":latest")); got != f.digest[quayApp] {
		t.Errorf("podman pulled %s, want the speculative %s", got, f.digest[quayApp])
	}
	b, _ := os.ReadFile(conf)
	if !strings.Contains(string(b), "site-mirror.invalid/quay") || !strings.Contains(string(b), "short-name-mode") {
		t.Errorf("existing configuration lost:\n%s", b)
	}
	f.run(t, sb, args, false)
}

// TestBuildkitResolvesFromThroughMirror: buildkitd started with the
// module's buildkitd.toml builds FROM quay.io/myorg/base; the image it
// exports carries the speculative base's layers.
func TestBuildkitResolvesFromThroughMirror(t *testing.T) {
	f := newFixture(t, testenv.LocalIP())
	sb := testenv.NewSandbox(t, "/etc/hosts")
	dir := testenv.ShortTempDir(t)
	toml := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(toml, []byte("debug = true\n[registry.\"docker.io\"]\n  mirrors = [\"site-mirror.invalid\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := f.args([]string{"buildkit"}, map[string]any{"buildkitd_toml": toml, "buildkit_certs_dir": filepath.Join(dir, "certs.d")})
	f.run(t, sb, args, true)
	f.run(t, sb, args, false)
	conf, err := os.ReadFile(toml)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BUILDKITD", sb.Wrap(t, testenv.Tool(t, "BUILDKITD", "buildkitd")))
	bk := testenv.StartBuildkitd(t, string(conf))

	ctx := filepath.Join(dir, "context")
	os.MkdirAll(ctx, 0o755)
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM "+quayBase+"\nCOPY hello /hello\n"), 0o644)
	os.WriteFile(filepath.Join(ctx, "hello"), []byte("built on the speculative base\n"), 0o644)
	ociTar := filepath.Join(dir, "image.tar")
	testenv.Run(t, nil, testenv.Tool(t, "BUILDCTL", "buildctl"), "--addr", bk.Addr, "build",
		"--frontend", "dockerfile.v0", "--local", "context="+ctx, "--local", "dockerfile="+ctx,
		"--output", "type=oci,dest="+ociTar)

	img := readOCITar(t, ociTar, filepath.Join(dir, "oci"))
	got, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want, err := f.images[quayBase].Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want)+1 {
		t.Fatalf("built image has %d layers, want the base's %d plus one", len(got), len(want))
	}
	for i := range want {
		gd, _ := got[i].Digest()
		wd, _ := want[i].Digest()
		if gd != wd {
			t.Errorf("layer %d is %s, want the speculative base's %s", i, gd, wd)
		}
	}
}

// readOCITar unpacks an OCI image layout tar into dir and returns its only
// image.
func readOCITar(t *testing.T, tarPath, dir string) v1.Image {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		w, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(w, tr)
		w.Close()
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("OCI layout index: %v %v", im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestCtrPullsThroughHostsTOML: ctr, given the module's certs.d as
// --hosts-dir, pulls quay.io/myorg/app (override_path mirror
// https://<location>/v2/quay.io) and docker.io/myorg/app (mirror
// https://<location>/v2) from the buildset registry.
func TestCtrPullsThroughHostsTOML(t *testing.T) {
	f := newFixture(t, testenv.LocalIP())
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/containerd")
	certs := "/etc/containerd/certs.d" // inside the sandbox: a private copy
	args := f.args([]string{"containerd"}, map[string]any{})
	out := f.run(t, sb, args, true)
	if files, _ := out.Result["files"].([]any); len(files) != 6 {
		t.Errorf("files %v, want /etc/hosts, the CA and four hosts.toml", files)
	}
	if _, err := os.Stat(filepath.Join(sb.Path("/etc/containerd"), "certs.d", "quay.io", "hosts.toml")); err != nil {
		t.Fatalf("hosts.toml not in the sandbox's copy: %v", err)
	}
	f.run(t, sb, args, false)

	c := testenv.StartContainerd(t)
	for _, repo := range []string{quayApp, "docker.io/" + dockerApp} {
		ref := repo + ":latest"
		sb.Run(t, nil, "ctr", "--address", c.Address, "images", "pull", "--hosts-dir", certs, ref)
		got := c.Ctr(t, "images", "ls", "name=="+ref)
		stored := strings.TrimPrefix(repo, "docker.io/")
		if !strings.Contains(got, f.digest[stored]) {
			t.Errorf("ctr pulled %s:\n%s\nwant the speculative %s", ref, got, f.digest[stored])
		}
	}
}

// TestDockerLoadsSpeculativeImagesOfOtherRegistries: dockerd mirrors only
// docker.io, so the module loads the speculative quay.io images into it
// under their real names; `docker run quay.io/myorg/app` then runs the
// change's image (quay.io is unreachable here), and myorg/app still comes
// through the mirror. A second run changes nothing.
func TestDockerLoadsSpeculativeImagesOfOtherRegistries(t *testing.T) {
	f := newFixture(t, localAddr(t, "ipv4"))
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/docker/certs.d", "/etc/containers/certs.d")
	// The alias first: dockerd's resolver caches /etc/hosts.
	f.run(t, sb, f.args([]string{"containers"}, map[string]any{
		"registries_conf": filepath.Join(sb.Dir, "registries.conf")}), true)
	t.Setenv("DOCKERD", sb.Wrap(t, testenv.Tool(t, "DOCKERD", "dockerd")))
	d := testenv.StartDockerd(t, testenv.DockerdOptions{})
	args := f.args([]string{"docker"}, map[string]any{
		"docker_daemon_json": d.ConfigFile,
		"docker_host":        d.Host,
		"docker_pidfile":     filepath.Join(d.Dir, "docker.pid"),
	})

	// Check mode names what would be loaded and loads nothing.
	check := ansibletest.RunBinary(t, sb.Wrap(t, f.module), withCheckMode(args))
	if check.Failed() || !check.Changed() {
		t.Fatalf("check mode: %s\n%s", check.Stdout, check.Stderr)
	}
	if got := d.Docker("images", "--format", "{{.Repository}}"); strings.Contains(got, "quay.io") {
		t.Errorf("check mode loaded images: %s", got)
	}

	out := f.run(t, sb, args, true)
	loaded := map[string]bool{}
	images, _ := out.Result["docker_images"].([]any)
	for _, im := range images {
		m, _ := im.(map[string]any)
		name, _ := m["name"].(string)
		loaded[name] = m["changed"] == true
	}
	want := map[string]bool{quayApp + ":latest": true, quayBase + ":latest": true}
	if len(loaded) != len(want) || !loaded[quayApp+":latest"] || !loaded[quayBase+":latest"] {
		t.Fatalf("docker_images %v, want %v (and no docker.io image: the mirror serves those)", out.Result["docker_images"], want)
	}
	for _, repo := range []string{quayApp, quayBase} {
		got := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", repo+":latest")
		if !strings.Contains(got, "@"+f.digest[repo]) {
			t.Errorf("%s:latest in dockerd has digests %s, want the speculative %s", repo, got, f.digest[repo])
		}
	}
	if got := d.Docker("run", "--rm", "--network", "none", quayBase+":latest", "ls", "/speculative"); strings.TrimSpace(got) != "base" {
		t.Errorf("docker run %s: %q, want the speculative image's file", quayBase, got)
	}
	d.Docker("run", "--rm", "--network", "none", quayApp+":latest", "true")
	// docker.io content still comes through the mirror.
	d.Docker("pull", dockerApp+":latest")
	if got := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", dockerApp+":latest"); !strings.Contains(got, "@"+f.digest[dockerApp]) {
		t.Errorf("pulled %s, want the speculative %s", got, f.digest[dockerApp])
	}

	again := f.run(t, sb, args, false)
	if imgs, _ := again.Result["docker_images"].([]any); len(imgs) != 2 {
		t.Errorf("second run: docker_images %v", again.Result["docker_images"])
	}
	// Turned off: nothing is listed or loaded.
	args["docker_load"] = false
	off := f.run(t, sb, args, false)
	if imgs, _ := off.Result["docker_images"].([]any); len(imgs) != 0 {
		t.Errorf("docker_load false: docker_images %v", off.Result["docker_images"])
	}
}

func withCheckMode(args map[string]any) map[string]any {
	out := map[string]any{"_ansible_check_mode": true}
	for k, v := range args {
		out[k] = v
	}
	return out
}
