package registrytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
)

// Process is the registry running as a separate process (see
// StartProcess).
type Process struct {
	*daemon.Process
	// Host is 127.0.0.1:<port>.
	Host string
	// CAPEM and CAFile are the CA clients must trust.
	CAPEM  []byte
	CAFile string
	// Username and Password are the write user.
	Username, Password string
	// Root is the storage directory; it outlives Stop, so a test can
	// restart a registry on the same data.
	Root string

	t         testing.TB
	dir       string
	certFile  string
	keyFile   string
	bin       string
	restarted int
}

// StartProcess builds the test registry command (internal/cmd/testregistry)
// and runs it as a separate process serving TLS on an
// ephemeral loopback port with filesystem storage, for tests and
// benchmarks that measure or kill a real server. It is stopped at the end
// of the test; its log is printed when the test fails.
func StartProcess(t testing.TB) *Process {
	t.Helper()
	dir := testenv.ShortTempDir(t)
	ca, err := pki.NewCA("imagegate registrytest CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, dir: dir, CAPEM: ca.CertPEM, CAFile: filepath.Join(dir, "ca.crt"),
		Username: "zuul", Password: RandomPassword(t), Root: filepath.Join(dir, "storage"),
		certFile: filepath.Join(dir, "server.crt"), keyFile: filepath.Join(dir, "server.key"), bin: buildServer(t)}
	for f, b := range map[string][]byte{p.CAFile: ca.CertPEM, p.certFile: sc.CertPEM, p.keyFile: sc.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.start("127.0.0.1:0")
	return p
}

func (p *Process) start(addr string) {
	p.t.Helper()
	addrFile := filepath.Join(p.dir, "addr")
	os.Remove(addrFile)
	cmd := exec.Command(p.bin, "-root", p.Root, "-cert", p.certFile, "-key", p.keyFile, "-addr", addr, "-addr-file", addrFile)
	cmd.Env = append(os.Environ(), "IMAGEGATE_TEST_USER="+p.Username, "IMAGEGATE_TEST_PASSWORD="+p.Password, "GOTRACEBACK=all")
	name := "registry"
	if p.restarted > 0 {
		name = fmt.Sprintf("registry-%d", p.restarted)
	}
	p.Process = testenv.StartProcess(p.t, name, cmd, p.dir)
	testenv.WaitFor(p.t, "registry process", 30*time.Second, p.Process, func() error {
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		p.Host = strings.TrimSpace(string(b))
		return nil
	})
}

// PID returns the server's process id.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	p.t.Helper()
	_ = p.Cmd.Process.Kill()
	testenv.WaitFor(p.t, "registry process to die", 10*time.Second, nil, func() error {
		if !p.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
}

// Restart starts the server again on the same storage, certificate, user
// and port.
func (p *Process) Restart() {
	p.t.Helper()
	if !p.Exited() {
		p.Stop()
	}
	p.restarted++
	p.start(p.Host)
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// buildServer compiles the test registry command once per test binary,
// into the user's cache directory (go build's own cache makes rebuilds
// cheap).
func buildServer(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root := daemon.RepoRoot()
		if root == "" {
			buildErr = fmt.Errorf("cannot find the repository root from %s", mustGetwd())
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			buildErr = err
			return
		}
		dir := filepath.Join(cache, "imagegate")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		tmp, err := os.CreateTemp(dir, "testregistry-*")
		if err != nil {
			buildErr = err
			return
		}
		tmp.Close()
		cmd := exec.Command("go", "build", "-o", tmp.Name(), "./internal/cmd/testregistry")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			buildErr = fmt.Errorf("building the test registry: %v\n%s", err, out)
			return
		}
		// Every build is of this tree; a process still running an older
		// binary keeps its inode.
		buildBin = filepath.Join(dir, "testregistry")
		buildErr = os.Rename(tmp.Name(), buildBin)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func mustGetwd() string {
	wd, _ := os.Getwd()
	return wd
}
