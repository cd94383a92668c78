package clientconf

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func testRegistry(t *testing.T, host string) *zuul.BuildsetRegistry {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &zuul.BuildsetRegistry{Host: host, Port: 5000, Username: "zuul", Password: "secret-pw", Cert: string(ca.CertPEM)}
}

// testPaths puts every location under root; the trust command appends a
// line to a log, so a test can see whether it ran.
func testPaths(root string) Paths {
	return Paths{
		Hosts:                  filepath.Join(root, "etc/hosts"),
		CATrustDir:             filepath.Join(root, "usr/local/share/ca-certificates"),
		CATrustCommand:         []string{"sh", "-c", "echo ran >> " + filepath.Join(root, "trust.log")},
		DockerDaemonJSON:       filepath.Join(root, "etc/docker/daemon.json"),
		DockerCertsDir:         filepath.Join(root, "etc/docker/certs.d"),
		DockerHost:             "unix://" + filepath.Join(root, "docker.sock"),
		DockerPidfile:          filepath.Join(root, "docker.pid"),
		RegistriesConf:         filepath.Join(root, "etc/containers/registries.conf"),
		ContainersCertsDir:     filepath.Join(root, "etc/containers/certs.d"),
		BuildkitdTOML:          filepath.Join(root, "etc/buildkit/buildkitd.toml"),
		BuildkitCertsDir:       filepath.Join(root, "etc/buildkit/certs.d"),
		ContainerdCertsDir:     filepath.Join(root, "etc/containerd/certs.d"),
		CrioConf:               filepath.Join(root, "etc/crio/crio.conf"),
		CrioRestartCommand:     []string{"sh", "-c", "echo crio >> " + filepath.Join(root, "restart.log")},
		Microk8sCertsDir:       filepath.Join(root, "var/snap/microk8s/current/args/certs.d"),
		Microk8sRestartCommand: []string{"sh", "-c", "echo microk8s >> " + filepath.Join(root, "restart.log")},
		RunUserDir:             filepath.Join(root, "run/user"),
		KubeletDir:             filepath.Join(root, "var/lib/kubelet"),
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot returns every file under root with its content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			out[strings.TrimPrefix(p, root)] = string(b)
		}
		return nil
	})
	return out
}

func TestApplyAllClients(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	writeFile(t, paths.Hosts, "127.0.0.1 localhost\n")
	writeFile(t, paths.DockerDaemonJSON, `{"registry-mirrors": ["https://site-mirror.example.com"], "debug": true}`)
	reg := testRegistry(t, "192.0.2.7")
	spec := Spec{Registry: reg, Paths: paths, Clients: AllClients}

	before := snapshot(t, root)
	res, err := Apply(context.Background(), spec, WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Files) == 0 || !res.CATrustUpdated {
		t.Errorf("check mode: changed=%v files=%d trust=%v", res.Changed, len(res.Files), res.CATrustUpdated)
	}
	if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
		t.Fatalf("check mode touched files: before %v, after %v", before, after)
	}

	res, err = Apply(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Alias != pki.BuildsetAlias || res.Location != pki.BuildsetAlias+":5000" {
		t.Errorf("alias %q location %q", res.Alias, res.Location)
	}
	if res.Mirrors["quay.io"] != res.Location+"/quay.io" || res.Mirrors["docker.io"] != res.Location {
		t.Errorf("mirrors %v", res.Mirrors)
	}
	if !reflect.DeepEqual(res.Configured, AllClients) {
		t.Errorf("configured %v", res.Configured)
	}
	var written []string
	for _, f := range res.Files {
		written = append(written, strings.TrimPrefix(f.Path, root))
	}
	want := []string{
		"/etc/hosts",
		"/usr/local/share/ca-certificates/zuul-jobs.buildset-registry.crt",
		"/etc/docker/certs.d/zuul-jobs.buildset-registry:5000/ca.crt",
		"/etc/docker/daemon.json",
		"/etc/containers/certs.d/zuul-jobs.buildset-registry:5000/ca.crt",
		"/etc/containers/registries.conf",
		"/etc/buildkit/certs.d/zuul-jobs.buildset-registry:5000/ca.crt",
		"/etc/buildkit/buildkitd.toml",
		"/etc/containerd/certs.d/zuul-jobs.buildset-registry:5000/ca.crt",
		"/etc/containerd/certs.d/docker.io/hosts.toml",
		"/etc/containerd/certs.d/quay.io/hosts.toml",
		"/etc/containerd/certs.d/gcr.io/hosts.toml",
		"/etc/containerd/certs.d/registry.k8s.io/hosts.toml",
		"/var/snap/microk8s/current/args/certs.d/zuul-jobs.buildset-registry:5000/ca.crt",
		"/var/snap/microk8s/current/args/certs.d/docker.io/hosts.toml",
		"/var/snap/microk8s/current/args/certs.d/quay.io/hosts.toml",
		"/var/snap/microk8s/current/args/certs.d/gcr.io/hosts.toml",
		"/var/snap/microk8s/current/args/certs.d/registry.k8s.io/hosts.toml",
	}
	if !reflect.DeepEqual(written, want) {
		t.Errorf("files written:\n%s\nwant:\n%s", strings.Join(written, "\n"), strings.Join(want, "\n"))
	}
	files := snapshot(t, root)
	if files["/etc/hosts"] != "127.0.0.1 localhost\n192.0.2.7\tzuul-jobs.buildset-registry\n" {
		t.Errorf("hosts: %q", files["/etc/hosts"])
	}
	if got := files["/etc/docker/certs.d/zuul-jobs.buildset-registry:5000/ca.crt"]; got != strings.TrimSpace(reg.Cert)+"\n" {
		t.Errorf("docker CA: %q", got)
	}
	var dj map[string]any
	json.Unmarshal([]byte(files["/etc/docker/daemon.json"]), &dj)
	if !reflect.DeepEqual(dj["registry-mirrors"], []any{"https://zuul-jobs.buildset-registry:5000/", "https://site-mirror.example.com"}) || dj["debug"] != true {
		t.Errorf("daemon.json: %s", files["/etc/docker/daemon.json"])
	}
	if !strings.Contains(files["/etc/buildkit/buildkitd.toml"], filepath.Join(paths.BuildkitCertsDir, res.Location, "ca.crt")) {
		t.Errorf("buildkitd.toml does not name the CA file:\n%s", files["/etc/buildkit/buildkitd.toml"])
	}
	if n := strings.Count(files["/trust.log"], "ran"); n != 1 {
		t.Errorf("trust command ran %d times", n)
	}
	fi, err := os.Stat(paths.DockerDaemonJSON)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("daemon.json mode: %v %v", fi.Mode(), err)
	}

	res, err = Apply(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || len(res.Files) != 0 || res.CATrustUpdated {
		t.Errorf("second run: changed=%v files=%v trust=%v", res.Changed, res.Files, res.CATrustUpdated)
	}
	if !reflect.DeepEqual(snapshot(t, root), files) {
		t.Error("second run changed files")
	}
}

// TestApplyDetectsClients: by default docker, containers and buildkit are
// configured whether or not they are installed (a client installed later
// finds its configuration), the others only when present.
func TestApplyDetectsClients(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	// Only the containerd directory exists.
	os.MkdirAll(filepath.Dir(paths.ContainerdCertsDir), 0o755)
	res, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "registry.example.com"), Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Configured, []Client{Docker, Containers, Buildkit, Containerd}) {
		t.Errorf("configured %v", res.Configured)
	}
	for _, c := range []Client{System, Microk8s} {
		if !strings.Contains(res.Skipped[c], "does not exist") {
			t.Errorf("skipped[%s] = %q", c, res.Skipped[c])
		}
	}
	for _, f := range []string{paths.DockerDaemonJSON, paths.RegistriesConf, paths.BuildkitdTOML} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s not written for a client not installed yet: %v", f, err)
		}
	}
	if len(res.Restarted) != 0 {
		t.Errorf("restarted %v without cri-o or microk8s", res.Restarted)
	}
	if res.Alias != "registry.example.com" || res.Location != "registry.example.com:5000" {
		t.Errorf("alias %q location %q", res.Alias, res.Location)
	}
	if _, err := os.Stat(paths.Hosts); !os.IsNotExist(err) {
		t.Errorf("hosts file written for a host name: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(paths.Microk8sCertsDir)); !os.IsNotExist(err) {
		t.Error("microk8s directory created although microk8s is absent")
	}
	// Narrowed: only what is asked for.
	root2 := t.TempDir()
	paths2 := testPaths(root2)
	res, err = Apply(context.Background(), Spec{Registry: testRegistry(t, "registry.example.com"), Paths: paths2, Clients: []Client{Containers}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Configured, []Client{Containers}) {
		t.Errorf("configured %v", res.Configured)
	}
	if _, err := os.Stat(filepath.Dir(paths2.DockerDaemonJSON)); !os.IsNotExist(err) {
		t.Error("docker directory created although only containers was asked for")
	}
}

func TestApplyBadFilesWriteNothing(t *testing.T) {
	for name, tc := range map[string]struct{ file, content, want string }{
		"daemon.json":     {"etc/docker/daemon.json", `{"debug": tru`, "etc/docker/daemon.json: not valid JSON"},
		"registries.conf": {"etc/containers/registries.conf", "[[registry]\n", "etc/containers/registries.conf: not valid TOML at line 1"},
		"buildkitd.toml":  {"etc/buildkit/buildkitd.toml", "debug = = 1\n", "etc/buildkit/buildkitd.toml: not valid TOML"},
		"hosts.toml":      {"etc/containerd/certs.d/quay.io/hosts.toml", "server = \n", "quay.io/hosts.toml: not valid TOML"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			paths := testPaths(root)
			writeFile(t, filepath.Join(root, tc.file), tc.content)
			before := snapshot(t, root)
			_, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths, Clients: AllClients})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
				t.Errorf("files changed although the run failed:\nbefore %v\nafter %v", before, after)
			}
		})
	}
}

func TestApplyRollsBack(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	writeFile(t, paths.Hosts, "127.0.0.1 localhost\n")
	writeFile(t, paths.DockerDaemonJSON, "{}")
	before := snapshot(t, root)
	// The daemon.json write fails, after the hosts file, the system CA and
	// the docker CA were written.
	write = func(path string, data []byte, mode os.FileMode, own owner) error {
		if path == paths.DockerDaemonJSON {
			return syscall.ENOSPC
		}
		return writeAtomic(path, data, mode, own)
	}
	t.Cleanup(func() { write = writeAtomic })
	_, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths, Clients: []Client{System, Docker}})
	if err == nil || !strings.Contains(err.Error(), "restored") || !strings.Contains(err.Error(), "daemon.json") {
		t.Fatalf("error %v", err)
	}
	if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
		t.Errorf("not rolled back:\nbefore %v\nafter %v", before, after)
	}
	for _, d := range []string{paths.DockerCertsDir, paths.CATrustDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s, created by the failed run, is still there", d)
		}
	}
}

func TestApplyValidation(t *testing.T) {
	reg := testRegistry(t, "192.0.2.7")
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{}, "buildset_registry is not set"},
		{Spec{Registry: &zuul.BuildsetRegistry{Host: "x", Port: 5000, Password: "p", Cert: "nope"}}, "buildset_registry.cert"},
		{Spec{Registry: reg, Namespaces: [][]string{{"quay.io", "https://quay.io"}, {"quay.io", "https://q"}}}, "buildset_registry_namespaces[1]: quay.io is already listed at index 0"},
		{Spec{Registry: reg, Unqualified: []string{"docker.io", "https://x"}}, "buildset_registry_unqualified_registries[1]"},
		{Spec{Registry: reg, Clients: []Client{"kubelet"}}, `unknown client "kubelet"`},
		{Spec{Registry: reg, Paths: Paths{DockerHost: "tcp://1.2.3.4:2375"}}, "docker_host"},
	} {
		_, err := Apply(context.Background(), tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestWriteAtomicKeepsMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	writeFile(t, p, "old")
	os.Chmod(p, 0o600)
	if err := writeAtomic(p, []byte("new"), 0o644, owner{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	b, _ := os.ReadFile(p)
	if fi.Mode().Perm() != 0o600 || string(b) != "new" {
		t.Errorf("mode %v content %q", fi.Mode(), b)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestApplyFollowsSymlink(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	target := filepath.Join(root, "real-hosts")
	writeFile(t, target, "127.0.0.1 localhost\n")
	os.MkdirAll(filepath.Dir(paths.Hosts), 0o755)
	if err := os.Symlink(target, paths.Hosts); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(paths.Hosts); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(target); !strings.Contains(string(b), "zuul-jobs.buildset-registry") {
		t.Errorf("target not edited: %q", b)
	}
}

// fakeDockerd serves GET /info on a unix socket, reporting old mirrors
// until this process receives SIGHUP, then the mirrors of daemon.json: the
// contract reloadDocker relies on, scripted.
func fakeDockerd(t *testing.T, paths Paths, reloadWorks bool) *atomic.Int32 {
	t.Helper()
	hups := &atomic.Int32{}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	done := make(chan struct{})
	t.Cleanup(func() { signal.Stop(sig); close(done) })
	go func() {
		for {
			select {
			case <-sig:
				hups.Add(1)
			case <-done:
				return
			}
		}
	}()
	l, err := net.Listen("unix", strings.TrimPrefix(paths.DockerHost, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			http.NotFound(w, r)
			return
		}
		mirrors := []string{"https://old.example.com/"}
		if hups.Load() > 0 && reloadWorks {
			var dj struct {
				Mirrors []string `json:"registry-mirrors"`
			}
			b, _ := os.ReadFile(paths.DockerDaemonJSON)
			json.Unmarshal(b, &dj)
			mirrors = nil
			for _, m := range dj.Mirrors {
				mirrors = append(mirrors, normalizeMirror(m))
			}
		}
		fmt.Fprintf(w, `{"RegistryConfig": {"Mirrors": %s}}`, mustJSON(mirrors))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	writeFile(t, paths.DockerPidfile, strconv.Itoa(os.Getpid())+"\n")
	return hups
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestDockerReload(t *testing.T) {
	root, err := os.MkdirTemp("/tmp", "cc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	paths := testPaths(root)
	writeFile(t, paths.DockerDaemonJSON, `{"registry-mirrors": ["https://old.example.com"]}`)
	hups := fakeDockerd(t, paths, true)
	spec := Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths, Clients: []Client{Docker}, DockerReload: true}

	res, err := Apply(context.Background(), spec, WithCheckMode(true))
	if err != nil || !res.DockerReloaded || hups.Load() != 0 {
		t.Fatalf("check mode: reloaded=%v hups=%d err=%v", res.DockerReloaded, hups.Load(), err)
	}
	res, err = Apply(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DockerReloaded || hups.Load() != 1 {
		t.Errorf("reloaded=%v hups=%d", res.DockerReloaded, hups.Load())
	}
	res, err = Apply(context.Background(), spec)
	if err != nil || res.Changed || res.DockerReloaded || hups.Load() != 1 {
		t.Errorf("second run: changed=%v reloaded=%v hups=%d err=%v", res.Changed, res.DockerReloaded, hups.Load(), err)
	}
}

func TestDockerReloadRejected(t *testing.T) {
	root, err := os.MkdirTemp("/tmp", "cc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	paths := testPaths(root)
	fakeDockerd(t, paths, false)
	spec := Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths, Clients: []Client{Docker}, DockerReload: true}
	_, err = Apply(context.Background(), spec, WithReloadTimeout(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "dockerd rejected the reload") || !strings.Contains(err.Error(), "old.example.com") {
		t.Errorf("error %v", err)
	}
}

func TestDockerNotRunning(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	res, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "192.0.2.7"), Paths: paths,
		Clients: []Client{Docker}, DockerReload: true})
	if err != nil || res.DockerReloaded || !res.Changed {
		t.Fatalf("reloaded=%v changed=%v err=%v", res.DockerReloaded, res.Changed, err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no dockerd answers on unix://") {
		t.Errorf("warnings %q", res.Warnings)
	}
}

// TestApplyRestarts: cri-o is restarted when the containers files changed
// and crio.conf exists, microk8s when its hosts.toml files changed; a
// second run restarts nothing, and check mode says what it would restart
// without running anything.
func TestApplyRestarts(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	writeFile(t, paths.CrioConf, "[crio]\n")
	os.MkdirAll(filepath.Dir(paths.Microk8sCertsDir), 0o755)
	spec := Spec{Registry: testRegistry(t, "registry.example.com"), Paths: paths}
	restarts := func() string {
		b, _ := os.ReadFile(filepath.Join(root, "restart.log"))
		return string(b)
	}
	res, err := Apply(context.Background(), spec, WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Restarted, []string{"crio", "microk8s"}) || restarts() != "" {
		t.Errorf("check mode: restarted %v, log %q", res.Restarted, restarts())
	}
	res, err = Apply(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Restarted, []string{"crio", "microk8s"}) || restarts() != "crio\nmicrok8s\n" {
		t.Errorf("restarted %v, log %q", res.Restarted, restarts())
	}
	hosts, _ := os.ReadFile(filepath.Join(paths.Microk8sCertsDir, "quay.io", "hosts.toml"))
	for _, want := range []string{`server = 'https://quay.io'`, `[host.'https://registry.example.com:5000/v2/quay.io']`, "override_path = true", `capabilities = ['pull', 'resolve']`} {
		if !strings.Contains(string(hosts), want) {
			t.Errorf("microk8s quay.io hosts.toml lacks %s:\n%s", want, hosts)
		}
	}
	res, err = Apply(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || len(res.Restarted) != 0 || restarts() != "crio\nmicrok8s\n" {
		t.Errorf("second run: changed %v restarted %v log %q", res.Changed, res.Restarted, restarts())
	}
	// A failing restart fails the run and says the files were written.
	paths.CrioRestartCommand = []string{"sh", "-c", "echo no crio here >&2; exit 3"}
	spec.Paths = paths
	spec.Namespaces = [][]string{{"docker.io", "https://registry-1.docker.io"}, {"ghcr.io", "https://ghcr.io"}}
	if _, err := Apply(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "restarting crio") ||
		!strings.Contains(err.Error(), "no crio here") {
		t.Errorf("failing restart: %v", err)
	}
}

// TestApplyCredentials: for DockerUser, the registry's credentials are
// merged into the user's ~/.docker/config.json, into
// /run/user/<uid>/auth.json when that directory exists, and the kubelet's
// config.json is linked to the user's; every file is the user's, 0600,
// and the content never appears in the result.
func TestApplyCredentials(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	home := filepath.Join(root, "home", "zuul-user")
	os.MkdirAll(home, 0o755)
	const uid, gid = 4242, 4343
	os.MkdirAll(filepath.Join(paths.RunUserDir, strconv.Itoa(uid)), 0o700)
	os.MkdirAll(paths.KubeletDir, 0o755)
	// The user already has credentials for another registry.
	writeFile(t, filepath.Join(home, ".docker", "config.json"), `{"auths": {"other.example.org": {"auth": "b3RoZXI6cHc="}}, "credsStore": "pass"}`)
	reg := testRegistry(t, "192.0.2.7")
	lookup := func(name string) (*user.User, error) {
		if name != "zuul-user" {
			return nil, user.UnknownUserError(name)
		}
		return &user.User{Username: name, Uid: strconv.Itoa(uid), Gid: strconv.Itoa(gid), HomeDir: home}, nil
	}
	spec := Spec{Registry: reg, Paths: paths, Clients: []Client{Docker}, DockerUser: "zuul-user"}
	res, err := Apply(context.Background(), spec, WithLookupUser(lookup))
	if err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("zuul:" + reg.Password))
	location := "zuul-jobs.buildset-registry:5000"
	for _, f := range res.Files {
		if strings.Contains(f.Before+f.After, reg.Password) || strings.Contains(f.Before+f.After, auth) {
			t.Errorf("the result shows the credentials of %s", f.Path)
		}
	}
	dockerConfig := filepath.Join(home, ".docker", "config.json")
	for _, p := range []string{dockerConfig, filepath.Join(paths.RunUserDir, strconv.Itoa(uid), "auth.json")} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Auths map[string]struct{ Auth string }
		}
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.Auths[location].Auth != auth {
			t.Errorf("%s: %v, auths %+v", p, err, cfg.Auths)
		}
		fi, _ := os.Stat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o600 || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o owner %d:%d, want 0600 %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
		}
	}
	b, _ := os.ReadFile(dockerConfig)
	var kept struct {
		Auths      map[string]map[string]string
		CredsStore string
	}
	if json.Unmarshal(b, &kept); kept.Auths["other.example.org"]["auth"] != "b3RoZXI6cHc=" || kept.CredsStore != "pass" {
		t.Errorf("the user's other settings were not kept:\n%s", b)
	}
	if dest, err := os.Readlink(filepath.Join(paths.KubeletDir, "config.json")); err != nil || dest != dockerConfig {
		t.Errorf("kubelet config.json: %q, %v", dest, err)
	}
	// Idempotent; and an unknown user or a broken file writes nothing.
	if res, err := Apply(context.Background(), spec, WithLookupUser(lookup)); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
	spec.DockerUser = "nobody-here"
	if _, err := Apply(context.Background(), spec, WithLookupUser(lookup)); err == nil || !strings.Contains(err.Error(), `buildset_registry_docker_user "nobody-here"`) {
		t.Errorf("unknown user: %v", err)
	}
	root2 := t.TempDir()
	spec.Paths = testPaths(root2)
	spec.DockerUser = "zuul-user"
	writeFile(t, dockerConfig, `{"auths": [`)
	before := snapshot(t, root2)
	if _, err := Apply(context.Background(), spec, WithLookupUser(lookup)); err == nil || !strings.Contains(err.Error(), dockerConfig+": not valid JSON") {
		t.Errorf("broken config.json: %v", err)
	}
	if after := snapshot(t, root2); !reflect.DeepEqual(before, after) {
		t.Errorf("a failed run wrote files: %v", after)
	}
}
