package clientconf

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
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
		Hosts:              filepath.Join(root, "etc/hosts"),
		CATrustDir:         filepath.Join(root, "usr/local/share/ca-certificates"),
		CATrustCommand:     []string{"sh", "-c", "echo ran >> " + filepath.Join(root, "trust.log")},
		DockerDaemonJSON:   filepath.Join(root, "etc/docker/daemon.json"),
		DockerCertsDir:     filepath.Join(root, "etc/docker/certs.d"),
		DockerHost:         "unix://" + filepath.Join(root, "docker.sock"),
		DockerPidfile:      filepath.Join(root, "docker.pid"),
		RegistriesConf:     filepath.Join(root, "etc/containers/registries.conf"),
		ContainersCertsDir: filepath.Join(root, "etc/containers/certs.d"),
		BuildkitdTOML:      filepath.Join(root, "etc/buildkit/buildkitd.toml"),
		BuildkitCertsDir:   filepath.Join(root, "etc/buildkit/certs.d"),
		ContainerdCertsDir: filepath.Join(root, "etc/containerd/certs.d"),
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

func TestApplyDetectsClients(t *testing.T) {
	root := t.TempDir()
	paths := testPaths(root)
	// Only the containers and containerd directories exist.
	os.MkdirAll(filepath.Dir(paths.RegistriesConf), 0o755)
	os.MkdirAll(filepath.Dir(paths.ContainerdCertsDir), 0o755)
	res, err := Apply(context.Background(), Spec{Registry: testRegistry(t, "registry.example.com"), Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Configured, []Client{Containers, Containerd}) {
		t.Errorf("configured %v", res.Configured)
	}
	for _, c := range []Client{System, Docker, Buildkit} {
		if !strings.Contains(res.Skipped[c], "does not exist") {
			t.Errorf("skipped[%s] = %q", c, res.Skipped[c])
		}
	}
	if res.Alias != "registry.example.com" || res.Location != "registry.example.com:5000" {
		t.Errorf("alias %q location %q", res.Alias, res.Location)
	}
	if _, err := os.Stat(paths.Hosts); !os.IsNotExist(err) {
		t.Errorf("hosts file written for a host name: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(paths.DockerDaemonJSON)); !os.IsNotExist(err) {
		t.Error("docker directory created although docker is absent")
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
	write = func(path string, data []byte, mode os.FileMode) error {
		if path == paths.DockerDaemonJSON {
			return syscall.ENOSPC
		}
		return writeAtomic(path, data, mode)
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
	if err := writeAtomic(p, []byte("new"), 0o644); err != nil {
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
