// Package testenv starts the real daemons imagegate's tests use as peers:
// dockerd, buildkitd, containerd, Debian's docker-registry (distribution
// 2.8) and an OpenSSH server, each on temporary sockets, data directories
// and ports, so tests can run in parallel and leave nothing behind.
//
// Tools come from the environment variables the Makefile exports (BUILDKITD,
// VERSITYGW, ...; see tests/setup/deps.sh) or from PATH. A missing tool fails
// the test with a hint: it is a setup problem to fix, never a reason to skip.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
)

// Tool returns the path of a tool: the value of envVar if set, else name
// looked up in PATH. It fails t if neither is found.
func Tool(t testing.TB, envVar, name string) string {
	t.Helper()
	p, err := ToolErr(envVar, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ToolErr is Tool returning the error, for programs (cmd/imagegate-demo):
// the value of envVar if set, else name looked up in PATH, else where
// tests/setup/deps.sh puts it.
func ToolErr(envVar, name string) (string, error) {
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			return "", fmt.Errorf("%s=%s does not exist: run `make deps` (tests/setup/deps.sh)", envVar, p)
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if envVar != "" {
		if p := toolFromDeps(envVar); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (set %s or install it): run `make deps` (tests/setup/deps.sh)", name, envVar)
}

var depsOnce sync.Once
var depsPaths map[string]string

// toolFromDeps asks tests/setup/deps.sh where it puts a tool, so `go test`
// works without make once the tools are built.
func toolFromDeps(envVar string) string {
	depsOnce.Do(func() {
		depsPaths = map[string]string{}
		root := RepoRoot()
		if root == "" {
			return
		}
		out, err := exec.Command(filepath.Join(root, "tests/setup/deps.sh"), "--print").Output()
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				depsPaths[k] = v
			}
		}
	})
	p := depsPaths[envVar]
	if p == "" {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// RepoRoot returns the repository's top directory (where go.mod is), found
// from the working directory.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreePortErr()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreePortErr is FreePort returning the error.
func FreePortErr() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RandomString returns n random bytes, hex-encoded.
func RandomString(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ShortTempDir returns a temporary directory with a short path: unix socket
// paths are limited to 108 bytes, and t.TempDir paths can be longer.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveAll(dir) })
	return dir
}

// RemoveAll removes a daemon's directory, unmounting anything the daemon
// left mounted below it (overlay mounts of dockerd or buildkitd).
func RemoveAll(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				mounts = append(mounts, f[1])
			}
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
	_ = os.RemoveAll(dir)
}

// Process is a daemon started for a test (StartProcess) or a program
// (StartProcessErr).
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// StartProcess starts a daemon whose output goes to a log file, and
// registers its stop (SIGTERM, then SIGKILL after 10 s) with t.Cleanup.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd, logDir string) *Process {
	t.Helper()
	p, err := StartProcessErr(name, cmd, logDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.dumpLog(t)
		}
		p.Stop()
	})
	return p
}

// StartProcessErr starts cmd as a daemon in its own process group (killed
// if this process dies), its output going to <logDir>/<name>.log. The
// caller stops it (Stop).
func StartProcessErr(name string, cmd *exec.Cmd, logDir string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process: SIGTERM to its process group, SIGKILL after 10 s.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *Process) dumpLog(t testing.TB) {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return
	}
	if len(b) > 16<<10 {
		b = append([]byte("...\n"), b[len(b)-16<<10:]...)
	}
	t.Logf("--- %s log (%s) ---\n%s", p.Name, p.Log, b)
}

// WaitFor polls cond every 50 ms until it returns nil or the deadline passes;
// it fails t with the last error, and the process log when p is given.
func WaitFor(t testing.TB, what string, timeout time.Duration, p *Process, cond func() error) {
	t.Helper()
	if err := WaitForErr(what, timeout, p, cond); err != nil {
		if p != nil {
			p.dumpLog(t)
		}
		t.Fatal(err)
	}
}

// WaitForErr is WaitFor returning the error: cond's last error, and whether
// the process p (if given) exited or the deadline passed.
func WaitForErr(what string, timeout time.Duration, p *Process, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s: %s exited: %v (last check: %v; log: %s)", what, p.Name, p.err, err, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Run runs a command and returns its stdout; it fails t with the command's
// output when it fails.
func Run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs a command and returns its stdout, or an error carrying its
// combined output.
func RunErr(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// TrustCA makes docker, podman, skopeo and containerd's default lookup trust
// caPEM for the registry at hostport, through the per-registry directories
// /etc/docker/certs.d/<hostport>/ca.crt and /etc/containers/certs.d/<hostport>/ca.crt.
// Those directories are global, but keyed by host and port, and the ports
// tests use are ephemeral, so parallel tests do not collide. They are
// removed at the end of the test.
func TrustCA(t testing.TB, hostport string, caPEM []byte) {
	t.Helper()
	for _, base := range []string{"/etc/docker/certs.d", "/etc/containers/certs.d"} {
		dir := filepath.Join(base, hostport)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
}

// TLS is a CA and a server certificate for local test servers.
type TLS struct {
	CA     *pki.CA
	Server *pki.ServerCert
	// CertFile and KeyFile hold the server certificate (with the CA) and key.
	CertFile, KeyFile string
	// CAFile holds the CA certificate.
	CAFile string
}

// NewTLS generates a CA and a server certificate covering pki.HostNames()
// and extra, written to dir.
func NewTLS(t testing.TB, dir string, extra ...string) *TLS {
	t.Helper()
	ca, err := pki.NewCA("imagegate test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue(pki.HostNames(extra...), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tl := &TLS{CA: ca, Server: sc,
		CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		CAFile: filepath.Join(dir, "ca.crt")}
	for f, b := range map[string][]byte{tl.CertFile: sc.CertPEM, tl.KeyFile: sc.KeyPEM, tl.CAFile: ca.CertPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tl
}

// Client returns an HTTP client trusting the CA.
func (tl *TLS) Client() *http.Client {
	pool, _ := pki.CertPool(tl.CA.CertPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// waitHTTP waits until GET url answers with any HTTP status.
func waitHTTP(t testing.TB, what, url string, client *http.Client, p *Process) {
	t.Helper()
	WaitFor(t, what, 30*time.Second, p, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(t testing.TB, what, path string, p *Process) {
	t.Helper()
	WaitFor(t, what, 60*time.Second, p, func() error {
		c, err := net.Dial("unix", path)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// grepLog reports whether the process log contains s.
func grepLog(p *Process, s string) bool {
	f, err := os.Open(p.Log)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}
