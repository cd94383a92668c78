package clientconf_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/upstream"
)

// TestClientsPullThroughTheCache: the buildset registry is a pull-through
// cache of an upstream registry holding images no change provides. With
// only the client configuration use_buildset_registry writes, dockerd
// (registry-mirrors, docker.io), podman (registries.conf, quay.io),
// containerd (hosts.toml, docker.io) and buildkitd (buildkitd.toml, a FROM
// of quay.io) pull them through it: the real
// registries are unreachable here, so a pull that works came through the
// cache, and the cache fetched from the upstream.
func TestClientsPullThroughTheCache(t *testing.T) {
	up := registrytest.New(t)
	tr := up.Transport()
	auth := remote.WithAuth(&authn.Basic{Username: up.Username, Password: up.Password})
	digests := map[string]string{}
	for _, repo := range []string{"upbase/img", "uporg/img"} {
		img := testenv.BusyboxImage(t, testenv.FileLayer("upstream/"+filepath.Base(filepath.Dir(repo)), []byte(repo)))
		ref, err := name.ParseReference(up.Host + "/" + repo + ":1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithTransport(tr), auth); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests[repo] = d.String()
	}
	uc, err := upstream.New(up.URL(), upstream.WithCA(up.CAPEM), upstream.WithCredentials(up.Username, up.Password))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, localAddr(t, "ipv4"), registry.WithUpstreams(
		registry.UpstreamNamespace{Registry: "docker.io", Upstream: uc},
		registry.UpstreamNamespace{Registry: "quay.io", Upstream: uc}))
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/docker/certs.d", "/etc/containers/certs.d", "/etc/containerd")

	// podman, through the quay.io mirror of registries.conf.
	dir := testenv.ShortTempDir(t)
	conf := filepath.Join(dir, "registries.conf")
	f.run(t, sb, f.args([]string{"containers", "containerd"}, map[string]any{"registries_conf": conf}), true)
	podman(t, sb, dir, conf, "pull", "-q", "quay.io/uporg/img:1")
	if got := strings.TrimSpace(podman(t, sb, dir, conf, "image", "inspect", "--format", "{{.Digest}}", "quay.io/uporg/img:1")); got != digests["uporg/img"] {
		t.Errorf("podman pulled %s, want the upstream's %s", got, digests["uporg/img"])
	}

	// containerd, through hosts.toml.
	c := testenv.StartContainerd(t)
	sb.Run(t, nil, "ctr", "--address", c.Address, "images", "pull", "--hosts-dir", "/etc/containerd/certs.d", "docker.io/upbase/img:1")
	if got := c.Ctr(t, "images", "ls", "name==docker.io/upbase/img:1"); !strings.Contains(got, digests["upbase/img"]) {
		t.Errorf("ctr pulled:\n%s\nwant the upstream's %s", got, digests["upbase/img"])
	}

	// dockerd, through registry-mirrors.
	t.Setenv("DOCKERD", sb.Wrap(t, testenv.Tool(t, "DOCKERD", "dockerd")))
	d := testenv.StartDockerd(t, testenv.DockerdOptions{})
	f.run(t, sb, f.args([]string{"docker"}, map[string]any{
		"docker_daemon_json": d.ConfigFile, "docker_host": d.Host, "docker_pidfile": filepath.Join(d.Dir, "docker.pid"),
	}), true)
	d.Docker("pull", "upbase/img:1")
	if got := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", "upbase/img:1"); !strings.Contains(got, digests["upbase/img"]) {
		t.Errorf("dockerd pulled %s, want the upstream's %s", got, digests["upbase/img"])
	}
	// buildkitd, through buildkitd.toml: FROM an image only the upstream
	// holds.
	toml := filepath.Join(dir, "buildkitd.toml")
	f.run(t, sb, f.args([]string{"buildkit"}, map[string]any{"buildkitd_toml": toml, "buildkit_certs_dir": filepath.Join(dir, "certs.d")}), true)
	bkconf, err := os.ReadFile(toml)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BUILDKITD", sb.Wrap(t, testenv.Tool(t, "BUILDKITD", "buildkitd")))
	bk := testenv.StartBuildkitd(t, string(bkconf))
	bctx := filepath.Join(dir, "context")
	os.MkdirAll(bctx, 0o755)
	os.WriteFile(filepath.Join(bctx, "Dockerfile"), []byte("FROM quay.io/uporg/img:1\nCOPY hello /hello\n"), 0o644)
	os.WriteFile(filepath.Join(bctx, "hello"), []byte("built on a cached base\n"), 0o644)
	ociTar := filepath.Join(dir, "image.tar")
	testenv.Run(t, nil, testenv.Tool(t, "BUILDCTL", "buildctl"), "--addr", bk.Addr, "build",
		"--frontend", "dockerfile.v0", "--local", "context="+bctx, "--local", "dockerfile="+bctx,
		"--output", "type=oci,dest="+ociTar)
	built, err := readOCITar(t, ociTar, filepath.Join(dir, "oci")).Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 3 { // busybox, the upstream file, COPY
		t.Errorf("the image built FROM the cached base has %d layers, want 3", len(built))
	}

	// The cache holds what it served.
	for _, repo := range []string{"upbase/img", "quay.io/uporg/img"} {
		if _, err := f.head(repo + "@" + digests[strings.TrimPrefix(repo, "quay.io/")]); err != nil {
			t.Errorf("the cache does not hold %s: %v", repo, err)
		}
	}
}
