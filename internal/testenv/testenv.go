// Package testenv starts the real daemons imagegate's tests use as peers:
// dockerd, buildkitd, containerd, Debian's docker-registry (distribution
// 2.8), versitygw, SeaweedFS and an OpenSSH server, each on temporary
// sockets, data directories and ports, so tests can run in parallel and
// leave nothing behind; and it makes the images, TLS material and private
// mount namespaces (Sandbox) tests need.
//
// Every function takes the test: a failure fails it, what is started is
// stopped at its end (t.Cleanup), and a daemon's log is printed when the
// test failed. What programs need too (the demo starts dockerd) is
// implemented once, error-returning, in internal/daemon, and wrapped here
// once.
//
// Tools come from the environment variables the Makefile exports (BUILDKITD,
// VERSITYGW, ...; see tests/setup/deps.sh) or from PATH. A missing tool fails
// the test with a hint: it is a setup problem to fix, never a reason to skip.
package testenv

import (
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
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/pkg/pki"
)

// Tool returns the path of a tool: the value of envVar if set, else name
// looked up in PATH, else where tests/setup/deps.sh puts it. It fails t if
// none is found.
func Tool(t testing.TB, envVar, name string) string {
	t.Helper()
	p, err := daemon.Tool(envVar, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := daemon.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
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
// paths are limited to 108 bytes, and t.TempDir paths can be longer. It is
// removed at the end of the test, with anything a daemon left mounted
// below it.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.RemoveAll(dir) })
	return dir
}

// StartProcess starts a daemon whose output goes to <logDir>/<name>.log
// (daemon.Start), and registers its stop (SIGTERM, then SIGKILL after
// 10 s) with t.Cleanup; its log is printed when the test failed.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd, logDir string) *daemon.Process {
	t.Helper()
	p, err := daemon.Start(name, cmd, logDir)
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	return p
}

// stopAtCleanup stops p at the end of the test, printing its log first if
// the test failed.
func stopAtCleanup(t testing.TB, p *daemon.Process) {
	t.Cleanup(func() {
		if t.Failed() {
			dumpLog(t, p)
		}
		p.Stop()
	})
}

func dumpLog(t testing.TB, p *daemon.Process) {
	if tail := p.LogTail(16 << 10); tail != "" {
		t.Logf("--- %s log (%s) ---\n%s", p.Name, p.Log, tail)
	}
}

// WaitFor polls cond every 50 ms until it returns nil or the deadline passes;
// it fails t with the last error, and the process log when p is given (it
// fails at once when p exits).
func WaitFor(t testing.TB, what string, timeout time.Duration, p *daemon.Process, cond func() error) {
	t.Helper()
	if err := daemon.WaitFor(what, timeout, p, cond); err != nil {
		if p != nil {
			dumpLog(t, p)
		}
		t.Fatal(err)
	}
}

// Run runs a command and returns its stdout; it fails t with the command's
// stdout and stderr when it fails.
func Run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// RunFails runs a command that must fail, and returns its stdout and
// stderr for the test to check why; it fails t when the command succeeds.
func RunFails(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(env, name, args...)
	if err == nil {
		t.Fatalf("%s %s succeeded, want a failure; stdout: %s", name, strings.Join(args, " "), out)
	}
	return err.Error()
}

// run runs a command and returns its stdout, or an error carrying its
// stdout and stderr.
func run(env []string, name string, args ...string) (string, error) {
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
func waitHTTP(t testing.TB, what, url string, client *http.Client, p *daemon.Process) {
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
func waitSocket(t testing.TB, what, path string, p *daemon.Process) {
	t.Helper()
	WaitFor(t, what, 60*time.Second, p, func() error {
		c, err := net.Dial("unix", path)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
