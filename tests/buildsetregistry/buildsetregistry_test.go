// Package buildsetregistry tests the buildset_registry module end to end:
// real ansible-playbook starts the registry on this machine, then skopeo,
// crane and dockerd push and pull through it, and dockerd pulls
// myorg/app:latest through it as a registry mirror.
package buildsetregistry

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// registry is a buildset registry started through ansible-playbook.
type registry struct {
	zuul.BuildsetRegistry
	// Location is host:port as clients name it.
	Location string
	Root     string
	// CertDir holds ca.crt, for skopeo's --cert-dir options and Go's
	// SSL_CERT_DIR.
	CertDir string
}

// lib holds the module, built once as `make build` builds it, beside its
// documentation: ANSIBLE_LIBRARY.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "buildset_registry") }

// playbook runs a playbook of testdata with vars, on localhost over the
// local connection, and returns its output.
func playbook(t *testing.T, name string, vars map[string]any) string {
	t.Helper()
	return ansibletest.Playbook(t, lib, filepath.Join("testdata", name), vars)
}

// startRegistry starts the registry through ansible-playbook with the
// module's default host (the node's address), and removes it through
// ansible-playbook at the end of the test.
func startRegistry(t *testing.T) *registry {
	t.Helper()
	r := &registry{Root: filepath.Join(t.TempDir(), "buildset_registry"), CertDir: t.TempDir()}
	port := testenv.FreePort(t)
	out := filepath.Join(t.TempDir(), "br.json")
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(r.Root, "registry.log")); err == nil {
				t.Logf("--- registry.log ---\n%s", tail(b, 16<<10))
			}
		}
		playbook(t, "absent.yaml", map[string]any{"br_root": r.Root})
		if _, err := os.Stat(r.Root); !os.IsNotExist(err) {
			t.Errorf("root left behind after state: absent: %v", err)
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still answers after state: absent", port)
		}
	})
	log := playbook(t, "start.yaml", map[string]any{"br_root": r.Root, "br_port": port, "br_out": out})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r.BuildsetRegistry); err != nil {
		t.Fatalf("connection data %s: %v", out, err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log, r.Password) {
		t.Errorf("ansible-playbook output shows the password despite no_log:\n%s", log)
	}
	if r.Port != port || net.ParseIP(r.Host) == nil {
		t.Fatalf("connection data: host %q port %d, want the node's address and port %d", r.Host, r.Port, port)
	}
	r.Location = r.Address()
	if err := os.WriteFile(filepath.Join(r.CertDir, "ca.crt"), []byte(r.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ociLayout writes img to a new OCI image layout under tag, for skopeo's
// oci: transport.
func ociLayout(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// authFile writes a containers auth file (the docker config.json format)
// holding user:password for the registry, so no password is passed on a
// command line.
func (r *registry) authFile(t *testing.T, user, password string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{r.Location: map[string]string{"auth": auth}}})
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	return testenv.Run(t, nil, "skopeo", args...)
}

// crane runs crane trusting the registry's CA through SSL_CERT_DIR (beside
// the system's roots) and logged in through a private DOCKER_CONFIG.
func (r *registry) crane(t *testing.T, args ...string) string {
	t.Helper()
	bin := testenv.Tool(t, "CRANE", "crane")
	cfg := filepath.Dir(r.authFile(t, r.Username, r.Password))
	env := []string{"DOCKER_CONFIG=" + cfg, "SSL_CERT_DIR=" + r.CertDir + ":/etc/ssl/certs"}
	return strings.TrimSpace(testenv.Run(t, env, bin, args...))
}

// manifestRequests counts the manifest requests for repo in the registry's
// log.
func manifestRequests(t *testing.T, r *registry, repo string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Root, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("path=/v2/"+repo+"/manifests/"))
}

func TestBuildsetRegistryClients(t *testing.T) {
	r := startRegistry(t)
	auth := r.authFile(t, r.Username, r.Password)
	app := "myorg/app:latest"
	appRef := r.Location + "/" + app

	// skopeo pushes myorg/app:latest with the credentials...
	img := testenv.BusyboxOCIImage(t, testenv.FileLayer("etc/imagegate", []byte("buildset "+testenv.RandomString(t, 8))))
	src := ociLayout(t, img, "latest")
	skopeo(t, "copy", "--dest-cert-dir", r.CertDir, "--dest-authfile", auth, "oci:"+src+":latest", "docker://"+appRef)
	digest := strings.TrimSpace(skopeo(t, "inspect", "--cert-dir", r.CertDir, "--format", "{{.Digest}}", "docker://"+appRef))
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("digest after push: %q", digest)
	}

	t.Run("skopeo", func(t *testing.T) {
		// ...pulls it back anonymously and with the credentials...
		for _, extra := range [][]string{nil, {"--src-authfile", auth}} {
			dst := t.TempDir()
			args := append([]string{"copy", "--src-cert-dir", r.CertDir}, extra...)
			skopeo(t, append(args, "docker://"+appRef, "oci:"+dst+":pulled")...)
			p, err := layout.FromPath(dst)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := p.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			m, err := idx.IndexManifest()
			if err != nil || len(m.Manifests) != 1 {
				t.Fatalf("pulled layout: %v, %v", m, err)
			}
			pulled, err := p.Image(m.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			if ls, _ := pulled.Layers(); len(ls) != 2 {
				t.Errorf("pulled %d layers, want 2", len(ls))
			}
		}
		// ...and cannot push without them, or with a wrong password.
		for _, c := range [][]string{nil, {"--dest-authfile", r.authFile(t, r.Username, "wrong-"+r.Password)}} {
			args := append([]string{"copy", "--dest-cert-dir", r.CertDir}, c...)
			args = append(args, "oci:"+src+":latest", "docker://"+r.Location+"/myorg/denied:latest")
			// Refused: no credentials, or a wrong password.
			testenv.RunFails(t, nil, "skopeo", args...)
		}
		// Without trusting the CA, TLS verification fails: the registry is
		// not reachable by accident over an untrusted connection.
		if out := testenv.RunFails(t, nil, "skopeo", "inspect", "--cert-dir", t.TempDir(), "docker://"+appRef); !strings.Contains(out, "certificate") {
			t.Errorf("skopeo failed without the registry's CA, but not on its certificate: %s", out)
		}
	})

	t.Run("crane", func(t *testing.T) {
		if got := r.crane(t, "digest", appRef); got != digest {
			t.Errorf("crane digest %s, skopeo pushed %s", got, digest)
		}
		// Copy within the registry (a pull and a push, blobs mounted).
		copied := r.Location + "/crane/app:v1"
		r.crane(t, "copy", appRef, copied)
		if got := r.crane(t, "digest", copied); got != digest {
			t.Errorf("copied digest %s, want %s", got, digest)
		}
		// Push a new layer on top.
		layerTar := filepath.Join(t.TempDir(), "layer.tar")
		if err := os.WriteFile(layerTar, testenv.FileLayer("etc/crane", []byte(testenv.RandomString(t, 16))), 0o644); err != nil {
			t.Fatal(err)
		}
		appended := r.Location + "/crane/appended:v1"
		newDigest := r.crane(t, "append", "-b", appRef, "-f", layerTar, "-t", appended)
		if got := r.crane(t, "digest", appended); !strings.HasSuffix(newDigest, got) || got == digest {
			t.Errorf("appended image digest %s, crane append printed %s", got, newDigest)
		}
		// crane ls shows the tag; crane pulls the image to a tarball.
		if tags := r.crane(t, "ls", r.Location+"/crane/app"); tags != "v1" {
			t.Errorf("crane ls: %q", tags)
		}
		r.crane(t, "pull", appended, filepath.Join(t.TempDir(), "img.tar"))
	})

	t.Run("docker", func(t *testing.T) {
		// dockerd trusts the CA through /etc/docker/certs.d and uses the
		// registry as its Docker Hub mirror, as use-buildset-registry
		// configures it.
		testenv.TrustCA(t, r.Location, []byte(r.Cert))
		d := testenv.StartDockerd(t, testenv.DockerdOptions{DaemonJSON: map[string]any{
			"registry-mirrors": []string{"https://" + r.Location + "/"},
		}})
		// Docker Hub is unreachable here, and dockerd falls back to it only
		// when the mirror fails: a successful pull was served by the mirror.
		// The registry's log must show dockerd's manifest request too.
		before := manifestRequests(t, r, "myorg/app")
		d.Docker("pull", app)
		if after := manifestRequests(t, r, "myorg/app"); after <= before {
			t.Errorf("the registry log shows no manifest request from dockerd (%d before the pull, %d after)", before, after)
		}
		repoDigests := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", app)
		if !strings.Contains(repoDigests, "myorg/app@"+digest) {
			t.Errorf("docker pull %s through the mirror: repo digests %s, want %s", app, repoDigests, digest)
		}

		// docker login (into the daemon's private client config), push and
		// pull by the registry's own name.
		login := exec.Command("docker", "login", "--username", r.Username, "--password-stdin", r.Location)
		login.Env = append(os.Environ(), d.Env()...)
		login.Stdin = strings.NewReader(r.Password)
		if out, err := login.CombinedOutput(); err != nil {
			t.Fatalf("docker login: %v\n%s", err, out)
		} else if bytes.Contains(out, []byte(r.Password)) {
			t.Error("docker login printed the password")
		}
		pushed := r.Location + "/docker/app:v2"
		d.Docker("tag", app, pushed)
		d.Docker("push", pushed)
		d.Docker("rmi", pushed, app)
		d.Docker("pull", pushed)
		got := d.Docker("image", "inspect", "--format", "{{json .RepoDigests}}", pushed)
		if want := r.crane(t, "digest", pushed); !strings.Contains(got, want) {
			t.Errorf("docker pull %s: repo digests %s, registry has %s", pushed, got, want)
		}
	})

	// Every client authenticated with the password: it must not be in the
	// registry's log.
	log, err := os.ReadFile(filepath.Join(r.Root, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))
	if bytes.Contains(log, []byte(r.Password)) || bytes.Contains(log, []byte(basic)) {
		t.Error("the registry log holds the password")
	}
	if !bytes.Contains(log, []byte("myorg/app")) {
		t.Errorf("the registry log does not show the requests for myorg/app:\n%s", tail(log, 4096))
	}
}

// TestFullDisk runs the buildset registry with its root on a small tmpfs
// (inside a testenv.Sandbox: a private mount namespace) and pushes more
// than fits. The registry says the store is full and does not invite a
// retry: 507 Insufficient Storage, DENIED, "no space left", no
// Retry-After. Earlier it answered 503 with Retry-After: 1, and clients
// retried forever.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	disk := filepath.Join(testenv.ShortTempDir(t), "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	sb := testenv.NewSandbox(t, disk)
	bin := lib.Bin("buildset_registry")
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	// Room for the registry's copy of the module, its files and a little
	// content, not for the 8 MiB layer pushed below.
	size := fi.Size() + 3<<20
	sb.Run(t, nil, "mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10)+",mode=0700", "imagegate-full-disk", disk)
	root := filepath.Join(disk, "br")
	module := sb.Wrap(t, bin)
	t.Cleanup(func() {
		o := ansibletest.RunBinary(t, module, map[string]any{"state": "absent", "buildset_registry_root": root})
		if o.Failed() {
			t.Errorf("removing the registry: %s", o.Stdout)
		}
	})
	o := ansibletest.RunBinary(t, module, map[string]any{"buildset_registry_root": root,
		"buildset_registry_port": testenv.FreePort(t), "buildset_registry_host": "127.0.0.1"})
	if o.Failed() {
		t.Fatalf("start: %s\n%s", o.Stdout, o.Stderr)
	}
	b, _ := json.Marshal(o.Result["buildset_registry"])
	var br zuul.BuildsetRegistry
	if err := json.Unmarshal(b, &br); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(br.Cert))
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + br.Address() + "/v2/myorg/big/blobs/uploads/"
	layer := make([]byte, 8<<20)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	do := func(method, url string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.SetBasicAuth(br.Username, br.Password)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp, rb
	}
	check := func(what string, resp *http.Response, body []byte) {
		t.Helper()
		if resp.StatusCode != http.StatusInsufficientStorage || resp.Header.Get("Retry-After") != "" ||
			!bytes.Contains(body, []byte(`"code":"DENIED"`)) || !bytes.Contains(body, []byte("no space left")) {
			t.Errorf("%s on a full disk: %s (Retry-After %q) %s", what, resp.Status, resp.Header.Get("Retry-After"), body)
		}
		if bytes.Contains(body, []byte(disk)) {
			t.Errorf("%s: the answer names the server's paths: %s", what, body)
		}
	}
	// A monolithic upload, and a chunked one.
	resp, body := do("POST", base+"?digest="+digestOf(layer), layer)
	check("POST ?digest=", resp, body)
	resp, body = do("POST", base, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload: %s %s", resp.Status, body)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	resp, body = do("PATCH", loc.String(), layer)
	check("PATCH", resp, body)

	// A real client gives up at once and shows the cause.
	src := ociLayout(t, testenv.BusyboxOCIImage(t, testenv.FileLayer("big", layer[:6<<20])), "latest")
	certDir := t.TempDir()
	os.WriteFile(filepath.Join(certDir, "ca.crt"), []byte(br.Cert), 0o644)
	reg := &registry{BuildsetRegistry: br, Location: br.Address()}
	out := testenv.RunFails(t, nil, "skopeo", "copy", "--dest-cert-dir", certDir, "--dest-authfile", reg.authFile(t, br.Username, br.Password),
		"oci:"+src+":latest", "docker://"+br.Address()+"/myorg/big:latest")
	if !strings.Contains(out, "507") {
		t.Errorf("skopeo push to a full registry did not show the cause:\n%s", out)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
