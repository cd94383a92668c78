package e2e

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/imagegate/imagegate/internal/testenv"
)

// registryImageCmd is the command of the registry's image: zuul-registry's
// (`zuul-registry -c /conf/registry.yaml serve`), with imagegate's binary.
var registryImageCmd = []string{"/usr/local/bin/imagegate-registry", "-c", "/conf/registry.yaml", "serve"}

// registryImagePlatforms are the platforms of the registry's image index.
var registryImagePlatforms = []string{"linux/amd64", "linux/arm64"}

// checkRegistryImage checks the registry's container image in the release
// tree (images/imagegate-registry): an OCI layout holding one index, named
// by the release's version, over one image per platform of
// registryImagePlatforms, each shaped like zuul-registry's (the command,
// no entry point, a /storage volume, port 5000) and carrying a static
// imagegate-registry built for its platform, with zuul-registry as a link
// to it; and a tarball per platform for `docker load` holding the same
// image as the index.
func checkRegistryImage(t *testing.T, dist string) {
	t.Helper()
	dir := filepath.Join(dist, "images", "imagegate-registry")
	var plats []string
	for _, pi := range releaseIndex(t, dist, filepath.Join(dir, "oci"), "the registry image") {
		plat, img := pi.plat, pi.img
		plats = append(plats, plat)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if cf.OS+"/"+cf.Architecture != plat || !slices.Equal(c.Cmd, registryImageCmd) || len(c.Entrypoint) != 0 ||
			len(c.Volumes) != 1 || c.Volumes == nil || c.User != "" {
			t.Errorf("%s: config %s/%s, entrypoint %q, cmd %q, volumes %v, user %q; want %s, no entrypoint, cmd %q, the volume /storage, root",
				plat, cf.OS, cf.Architecture, c.Entrypoint, c.Cmd, c.Volumes, c.User, plat, registryImageCmd)
		}
		if _, ok := c.Volumes["/storage"]; !ok {
			t.Errorf("%s: volumes %v, want /storage", plat, c.Volumes)
		}
		if _, ok := c.ExposedPorts["5000/tcp"]; !ok {
			t.Errorf("%s: exposed ports %v, want 5000/tcp (zuul-registry's port)", plat, c.ExposedPorts)
		}
		checkImageFiles(t, plat, img)
		// The tarball docker loads is the same image: the same config
		// (docker's image ID) and layers; its manifest is docker's own.
		tb, err := tarball.ImageFromPath(filepath.Join(dir, strings.ReplaceAll(plat, "/", "_")+".tar"), nil)
		if err != nil {
			t.Errorf("%s: tarball: %v", plat, err)
			continue
		}
		if a, b := configAndLayers(t, tb), configAndLayers(t, img); !slices.Equal(a, b) {
			t.Errorf("%s: the tarball holds %v, the index %v", plat, a, b)
		}
	}
	if !slices.Equal(plats, registryImagePlatforms) {
		t.Errorf("the registry image's index holds %v, want %v", plats, registryImagePlatforms)
	}
}

// checkImageFiles checks the files of a platform's image: the binary is a
// static imagegate-registry for the platform's architecture, zuul-registry
// links to it, /storage and /conf exist.
func checkImageFiles(t *testing.T, plat string, img v1.Image) {
	t.Helper()
	found, content := singleLayer(t, plat, img, strings.TrimPrefix(registryImageCmd[0], "/"))
	for _, p := range []string{"usr/local/bin/imagegate-registry", "storage", "conf", "etc/ssl/certs/ca-certificates.crt"} {
		if _, ok := found[p]; !ok {
			t.Errorf("%s: the image lacks /%s", plat, p)
		}
	}
	if h := found["usr/local/bin/zuul-registry"]; h == nil || h.Linkname != "imagegate-registry" {
		var l string
		if h != nil {
			l = h.Linkname
		}
		t.Errorf("%s: /usr/local/bin/zuul-registry links to %q, want imagegate-registry", plat, l)
	}
	checkStaticBinary(t, plat, content, "imagegate-registry")
}

// platformImage is one platform's image of an index.
type platformImage struct {
	plat string // os/arch
	img  v1.Image
}

// releaseIndex reads the OCI layout dir of what, an image of the release
// tree dist, which must hold one index named by the release's version, and
// returns its images in the index's order, each with its platform.
func releaseIndex(t *testing.T, dist, dir, what string) []platformImage {
	t.Helper()
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s's OCI layout: %v", what, err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile(filepath.Join(dist, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || !tm.Manifests[0].MediaType.IsIndex() ||
		tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != strings.TrimSpace(string(version)) {
		t.Fatalf("%s's index.json: %+v; want one index named %s", what, tm.Manifests, version)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []platformImage
	for _, desc := range im.Manifests {
		if desc.Platform == nil {
			t.Fatalf("%s: index entry %s has no platform", what, desc.Digest)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, platformImage{desc.Platform.OS + "/" + desc.Platform.Architecture, img})
	}
	return out
}

// singleLayer reads the one layer img (of plat) must have: its entries by
// name (without a directory's trailing slash) and the content of the
// regular file file (nil if there is none).
func singleLayer(t *testing.T, plat string, img v1.Image, file string) (map[string]*tar.Header, []byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%s: %d layers (%v), want one", plat, len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	found := map[string]*tar.Header{}
	var content []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return found, content
		}
		if err != nil {
			t.Fatalf("%s: layer: %v", plat, err)
		}
		found[strings.TrimSuffix(h.Name, "/")] = h
		if h.Name == file {
			if content, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkStaticBinary checks that bin, the binary of plat's image, is a
// static linux binary of cmd/<command> built for plat's architecture.
func checkStaticBinary(t *testing.T, plat string, bin []byte, command string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), command)
	if err := os.WriteFile(f, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "version", "-m", f).Output()
	arch := strings.TrimPrefix(plat, "linux/")
	if err != nil || !strings.Contains(string(out), "GOARCH="+arch) || !strings.Contains(string(out), "GOOS=linux") ||
		!strings.Contains(string(out), "CGO_ENABLED=0") || !strings.Contains(string(out), "path\tgithub.com/imagegate/imagegate/cmd/"+command) {
		t.Errorf("%s: the image's binary is not a static linux/%s %s (%v):\n%.600s", plat, arch, command, err, out)
	}
}

// TestRegistryImage runs the registry's image from the release tree under
// a real dockerd as a zuul-registry deployment runs zuul-registry's: the
// tarball of this machine's architecture loaded with `docker load`, a
// conf directory holding zuul-registry's registry.yaml (TLS certificate
// and key, a secret and the passwords of a write and a read user as
// %(NAME) placeholders filled from the container's environment, the
// filesystem driver on /storage) mounted at /conf, a host directory at
// /storage, host networking (as OpenDev's deployment runs it), and no
// command: the image's own. Through it, the write user pushes an image
// with go-containerregistry and docker pushes another; anonymous clients
// pull them back (go-containerregistry, checking every digest, and
// docker, which then runs the image); an anonymous push, a read user's
// push and a wrong password are refused, and nothing of them shows. The
// blobs are on the /storage volume and survive a restart of the
// container; `docker stop` ends it cleanly; its log carries no secret.
func TestRegistryImage(t *testing.T) {
	t.Parallel()
	dist := distDir(t)
	imageDir := filepath.Join(dist, "images", "imagegate-registry")
	arch := runtime.GOARCH
	if !slices.Contains(registryImagePlatforms, "linux/"+arch) {
		t.Fatalf("the registry image has no linux/%s variant to run here", arch)
	}
	d := testenv.StartDockerd(t, testenv.DockerdOptions{})
	out := d.Docker("load", "-i", filepath.Join(imageDir, "linux_"+arch+".tar"))
	_, image, ok := strings.Cut(strings.TrimSpace(out), "Loaded image: ")
	if !ok {
		t.Fatalf("docker load: %q", out)
	}
	// The loaded image is the index's: its ID is the config's digest.
	want := indexImage(t, dist, "linux/"+arch)
	cfgName, err := want.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id := strings.TrimSpace(d.Docker("image", "inspect", "--format", "{{.Id}}", image)); id != cfgName.String() {
		t.Fatalf("docker loaded %s as %s, the index's linux/%s image has config %s", image, id, arch, cfgName)
	}

	// The deployment: /conf with registry.yaml and the TLS files, a
	// storage directory, the secrets in the container's environment.
	dir := testenv.ShortTempDir(t)
	conf, store := filepath.Join(dir, "conf"), filepath.Join(dir, "storage")
	for _, p := range []string{conf, store} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tl := testenv.NewTLS(t, conf)
	port := testenv.FreePort(t)
	host := "127.0.0.1:" + strconv.Itoa(port)
	writePass, readPass, secret := testenv.RandomString(t, 24), testenv.RandomString(t, 24), testenv.RandomString(t, 32)
	registryYAML := fmt.Sprintf(`registry:
  address: 127.0.0.1
  port: %d
  public-url: https://%s
  tls-cert: /conf/%s
  tls-key: /conf/%s
  secret: "%%(ZUUL_REGISTRY_SECRET)"
  users:
    - name: zuul
      pass: "%%(ZUUL_REGISTRY_WRITE_PASSWORD)s"
      access: write
    - name: mirror
      pass: "%%(ZUUL_REGISTRY_READ_PASSWORD)s"
      access: read
  storage:
    driver: filesystem
    root: /storage
    expiration: 86400
`, port, host, filepath.Base(tl.CertFile), filepath.Base(tl.KeyFile))
	if err := os.WriteFile(filepath.Join(conf, "registry.yaml"), []byte(registryYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	// `-e NAME` takes the value from the docker CLI's environment, so no
	// secret is on a command line.
	secrets := []string{"ZUUL_REGISTRY_SECRET=" + secret, "ZUUL_REGISTRY_WRITE_PASSWORD=" + writePass,
		"ZUUL_REGISTRY_READ_PASSWORD=" + readPass}
	docker := func(args ...string) string {
		t.Helper()
		return testenv.Run(t, append(d.Env(), secrets...), "docker", args...)
	}
	ctr := docker("run", "-d", "--name", "registry", "--network", "host",
		"-v", conf+":/conf", "-v", store+":/storage",
		"-e", "ZUUL_REGISTRY_SECRET", "-e", "ZUUL_REGISTRY_WRITE_PASSWORD", "-e", "ZUUL_REGISTRY_READ_PASSWORD", image)
	ctr = strings.TrimSpace(ctr)
	t.Cleanup(func() {
		if t.Failed() {
			out, err := exec.Command("docker", "-H", d.Host, "logs", ctr).CombinedOutput()
			t.Logf("--- the registry container's log (%v) ---\n%s", err, out)
		}
	})
	client := tl.Client()
	// Ready when the write user's password (from the environment) opens
	// /v2/.
	waitRegistry := func() {
		t.Helper()
		testenv.WaitFor(t, "the registry container", time.Minute, nil, func() error {
			if state := strings.TrimSpace(d.Docker("inspect", "--format", "{{.State.Status}}", ctr)); state != "running" {
				return fmt.Errorf("the container is %s, not running", state)
			}
			req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/v2/", nil)
			req.SetBasicAuth("zuul", writePass)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /v2/: %d", resp.StatusCode)
			}
			return nil
		})
	}
	waitRegistry()

	tr := client.Transport
	write := &authn.Basic{Username: "zuul", Password: writePass}
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(host + "/" + s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Pushes: the write user's goes through, anonymous and read-only
	// ones are refused and leave nothing behind.
	img, err := random.Image(3<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	pushed := ref("zuul/app:" + testenv.RandomString(t, 8) + "_latest")
	if err := remote.Write(pushed, img, remote.WithAuth(write), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing as the write user: %v", err)
	}
	for _, tc := range []struct {
		name   string
		auth   authn.Authenticator
		status int
	}{
		{"anonymous", authn.Anonymous, http.StatusUnauthorized},
		{"read user", &authn.Basic{Username: "mirror", Password: readPass}, http.StatusForbidden},
		{"wrong password", &authn.Basic{Username: "zuul", Password: "wrong" + writePass}, http.StatusUnauthorized},
	} {
		refused := ref("zuul/refused:" + strings.ReplaceAll(tc.name, " ", "-"))
		err := remote.Write(refused, img, remote.WithAuth(tc.auth), remote.WithTransport(tr))
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != tc.status {
			t.Errorf("push as %s: %v, want HTTP %d", tc.name, err, tc.status)
		}
		if _, err := remote.Head(refused, remote.WithTransport(tr)); !isNotFound(err) {
			t.Errorf("after the refused push as %s, HEAD of the manifest: %v, want 404", tc.name, err)
		}
	}
	// docker pushes too, as the write user.
	busybox := testenv.BusyboxImage(t, testenv.FileLayer("hello.txt", []byte("hello from the registry image\n")))
	staged := ref("stage/busybox:1")
	if err := remote.Write(staged, busybox, remote.WithAuth(write), remote.WithTransport(tr)); err != nil {
		t.Fatal(err)
	}
	d.Login(host, "zuul", writePass)
	dockerRef := host + "/zuul/busybox:1"
	d.Docker("pull", staged.String())
	d.Docker("tag", staged.String(), dockerRef)
	d.Docker("push", dockerRef)
	d.Docker("logout", host)
	d.Docker("rmi", staged.String(), dockerRef)

	// Anonymous pulls: every digest checked by go-containerregistry, and
	// docker pulls and runs what it pushed.
	pullAndCheck := func() {
		t.Helper()
		got, err := remote.Image(pushed, remote.WithAuth(authn.Anonymous), remote.WithTransport(tr))
		if err != nil {
			t.Fatalf("anonymous pull: %v", err)
		}
		if a, b := testenv.DigestOf(t, got), testenv.DigestOf(t, img); a != b {
			t.Fatalf("pulled %s, pushed %s", a, b)
		}
		layers, err := got.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			// remote's layers verify their digest as they are read.
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				t.Fatalf("layer: %v", err)
			}
		}
		if _, err := got.ConfigFile(); err != nil {
			t.Fatal(err)
		}
		// 127.0.0.0/8 is an insecure registry for dockerd by default: it
		// speaks TLS to it without checking the certificate, so the
		// machine's /etc/docker/certs.d stays untouched.
		d.Docker("pull", dockerRef)
		if out := d.Docker("run", "--rm", "--network", "none", dockerRef, "cat", "/hello.txt"); out != "hello from the registry image\n" {
			t.Errorf("the pulled image printed %q", out)
		}
		d.Docker("rmi", dockerRef)
	}
	pullAndCheck()

	// The blobs are on the /storage volume, and survive a restart.
	var files int
	filepath.WalkDir(store, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			files++
		}
		return nil
	})
	if files < 8 {
		t.Errorf("the storage directory holds %d files after the pushes", files)
	}
	d.Docker("restart", ctr)
	waitRegistry()
	pullAndCheck()

	// docker stop: SIGTERM, a graceful shutdown, exit 0.
	d.Docker("stop", ctr)
	if code := strings.TrimSpace(d.Docker("inspect", "--format", "{{.State.ExitCode}}", ctr)); code != "0" {
		t.Errorf("the registry exited with %s after docker stop", code)
	}
	logs, err := exec.Command("docker", "-H", d.Host, "logs", ctr).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), strconv.Itoa(port)) {
		t.Errorf("the registry's log does not name its port %d:\n%s", port, logs)
	}
	for _, s := range []string{writePass, readPass, secret} {
		if strings.Contains(string(logs), s) {
			t.Error("the registry's log carries a secret")
		}
	}
}

// indexImage is the image of a platform in the OCI layout of the registry
// image in the release tree dist.
func indexImage(t *testing.T, dist, platform string) v1.Image {
	t.Helper()
	for _, pi := range releaseIndex(t, dist, filepath.Join(dist, "images", "imagegate-registry", "oci"), "the registry image") {
		if pi.plat == platform {
			return pi.img
		}
	}
	t.Fatalf("the registry image has no %s", platform)
	return nil
}

// configAndLayers lists the digests of an image's config and layers.
func configAndLayers(t *testing.T, img v1.Image) []string {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{cfg.String()}
	for _, l := range layers {
		out = append(out, testenv.DigestOf(t, l))
	}
	return out
}

// isNotFound reports whether err is a registry answer 404.
func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}
