package buildset

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
)

// TestMain lets the test binary act as the daemon: Apply installs and
// starts the running executable, here the test binary, in serve mode.
//
// With lockHelperEnv set it is instead a stranger to the registry: it
// takes the POSIX write lock on the file the variable names, says
// "locked", and waits to be killed.
func TestMain(m *testing.M) {
	ServeIfRequested()
	if path := os.Getenv(lockHelperEnv); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil {
			lk := syscall.Flock_t{Type: syscall.F_WRLCK}
			err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		select {}
	}
	os.Exit(m.Run())
}

const lockHelperEnv = "IMAGEGATE_TEST_LOCK_PIDFILE"

func apply(t *testing.T, spec Spec, opts ...Option) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Apply(ctx, spec, opts...)
	if err != nil {
		t.Fatalf("Apply(%s): %v", spec.State, err)
	}
	return r
}

// cleanup removes the registry at the end of the test, so no daemon
// outlives it.
func cleanup(t *testing.T, root string) {
	t.Cleanup(func() {
		if _, err := Apply(context.Background(), Spec{State: Absent, Root: root}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

// get requests url trusting only caPEM, with optional basic credentials.
func get(t *testing.T, url, caPEM, user, pw string) (*http.Response, error) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("cert is not PEM")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestLifecycle(t *testing.T) {
	root := filepath.Join(t.TempDir(), "br")
	port := testenv.FreePort(t)
	cleanup(t, root)
	spec := Spec{Root: root, Port: port, Host: "127.0.0.1"}

	// First start: everything is created.
	r1 := apply(t, spec)
	if !r1.Changed || r1.PID == 0 || r1.Registry == nil {
		t.Fatalf("first start: %+v", r1)
	}
	br := r1.Registry
	if br.Host != "127.0.0.1" || br.Port != port || br.Username != "zuul" || len(br.Password) < 22 {
		t.Errorf("connection data: host %q port %d user %q password length %d", br.Host, br.Port, br.Username, len(br.Password))
	}
	if err := br.Validate(); err != nil {
		t.Error(err)
	}
	wantMode(t, root, 0o700)
	for _, f := range []string{"registry.json", "ca.key", "registry.log", "registry.pid"} {
		wantMode(t, filepath.Join(root, f), 0o600)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "registry.pid")); strings.TrimSpace(string(b)) != strconv.Itoa(r1.PID) {
		t.Errorf("pid file holds %q, want %d", b, r1.PID)
	}
	// The registry answers on every name its certificate covers, over IPv4
	// and IPv6, and the certificate chains to the returned CA.
	for _, host := range []string{"127.0.0.1", "[::1]", "localhost"} {
		resp, err := get(t, "https://"+host+":"+strconv.Itoa(port)+"/v2/", br.Cert, "", "")
		if err != nil {
			t.Errorf("GET /v2/ on %s: %v", host, err)
			continue
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /v2/ on %s: %s", host, resp.Status)
		}
	}

	// Second start: nothing to do, same data.
	r2 := apply(t, spec)
	if r2.Changed || r2.PID != r1.PID || *r2.Registry != *br {
		t.Errorf("second start: changed %v pid %d (was %d), same data %v", r2.Changed, r2.PID, r1.PID, *r2.Registry == *br)
	}

	// Stop: graceful, the daemon removes its pid file; data is kept.
	r3 := apply(t, Spec{State: Stopped, Root: root})
	if !r3.Changed || r3.PID != 0 {
		t.Errorf("stop: %+v", r3)
	}
	if _, err := os.Stat(filepath.Join(root, "registry.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pid file after a graceful stop: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "registry.log")); !strings.Contains(string(b), "buildset registry stopped") {
		t.Errorf("log does not record the graceful shutdown:\n%s", b)
	}
	if _, err := get(t, "https://127.0.0.1:"+strconv.Itoa(port)+"/v2/", br.Cert, "", ""); err == nil {
		t.Error("registry still answers after stop")
	}
	if r := apply(t, Spec{State: Stopped, Root: root}); r.Changed {
		t.Errorf("second stop changed: %s", r.Msg)
	}

	// Start after stop: same data.
	r4 := apply(t, spec)
	if !r4.Changed || *r4.Registry != *br {
		t.Errorf("start after stop: changed %v, same data %v", r4.Changed, *r4.Registry == *br)
	}

	// Crash: SIGKILL leaves a stale pid file; start brings the registry back
	// on the same data.
	if err := syscall.Kill(r4.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the killed daemon to release its lock", 30*time.Second, nil, func() error {
		if pid, _ := runningPID(layout(root)); pid != 0 {
			return fmt.Errorf("pid %d holds it", pid)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(root, "registry.pid")); err != nil {
		t.Fatalf("no stale pid file after the crash: %v", err)
	}
	r5 := apply(t, spec)
	if !r5.Changed || r5.PID == r4.PID || *r5.Registry != *br {
		t.Errorf("start after crash: changed %v pid %d (was %d), same data %v", r5.Changed, r5.PID, r4.PID, *r5.Registry == *br)
	}

	// A new port restarts the daemon with the same credentials and CA.
	port2 := testenv.FreePort(t)
	r6 := apply(t, Spec{Root: root, Port: port2, Host: "127.0.0.1"})
	if !r6.Changed || r6.Registry.Port != port2 || r6.Registry.Password != br.Password || r6.Registry.Cert != br.Cert {
		t.Errorf("port change: %+v", r6)
	}
	if _, err := get(t, "https://127.0.0.1:"+strconv.Itoa(port)+"/v2/", br.Cert, "", ""); err == nil {
		t.Error("old port still answers after the port change")
	}

	// Absent removes everything; a second absent is no change.
	r7 := apply(t, Spec{State: Absent, Root: root})
	if !r7.Changed {
		t.Error("absent did not change")
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root after absent: %v", err)
	}
	if r := apply(t, Spec{State: Absent, Root: root}); r.Changed {
		t.Errorf("second absent changed: %s", r.Msg)
	}
}

func TestCheckMode(t *testing.T) {
	root := filepath.Join(t.TempDir(), "br")
	port := testenv.FreePort(t)
	cleanup(t, root)
	spec := Spec{Root: root, Port: port, Host: "127.0.0.1"}
	check := WithCheckMode(true)

	r := apply(t, spec, check)
	if !r.Changed || r.Registry != nil || r.PID != 0 {
		t.Errorf("check start on nothing: %+v", r)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("check mode created the root: %v", err)
	}
	if r := apply(t, Spec{State: Absent, Root: root}, check); r.Changed {
		t.Errorf("check absent on nothing: %+v", r)
	}

	started := apply(t, spec)
	r = apply(t, spec, check)
	if r.Changed || r.Registry == nil || *r.Registry != *started.Registry {
		t.Errorf("check start on a running registry: %+v", r)
	}
	r = apply(t, Spec{State: Stopped, Root: root}, check)
	if !r.Changed || !strings.Contains(r.Msg, "would stop") {
		t.Errorf("check stop: %+v", r)
	}
	r = apply(t, Spec{State: Absent, Root: root}, check)
	if !r.Changed || !strings.Contains(r.Msg, "would stop") || !strings.Contains(r.Msg, "remove") {
		t.Errorf("check absent: %+v", r)
	}
	if pid, _ := runningPID(layout(root)); pid != started.PID {
		t.Fatalf("check mode stopped the daemon: pid %d, was %d", pid, started.PID)
	}
	port2 := testenv.FreePort(t)
	r = apply(t, Spec{Root: root, Port: port2, Host: "127.0.0.1"}, check)
	if !r.Changed || r.Registry == nil || r.Registry.Port != port2 || r.before == r.after {
		t.Errorf("check port change: %+v", r)
	}
	if r := apply(t, spec); r.Changed {
		t.Errorf("check mode changed the configuration: %s", r.Msg)
	}
}

func TestStartErrors(t *testing.T) {
	// Another process on the port, on any of the addresses the registry
	// listens on, is found and named.
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "0.0.0.0:0", "[::]:0"} {
		t.Run("port in use on "+addr, func(t *testing.T) {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			port := l.Addr().(*net.TCPAddr).Port
			root := filepath.Join(t.TempDir(), "br")
			cleanup(t, root)
			_, err = Apply(context.Background(), Spec{Root: root, Port: port, Host: "127.0.0.1"})
			if !errors.Is(err, ErrPortInUse) || !errors.Is(err, ErrStartFailed) ||
				!strings.Contains(err.Error(), "choose another buildset_registry_port") {
				t.Fatalf("error %v, want ErrPortInUse naming buildset_registry_port", err)
			}
			if pid, _ := runningPID(layout(root)); pid != 0 {
				t.Errorf("a daemon runs after the failed start: pid %d", pid)
			}
		})
	}
	t.Run("root under a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, nil, 0o600)
		_, err := Apply(context.Background(), Spec{Root: filepath.Join(file, "br"), Port: testenv.FreePort(t), Host: "127.0.0.1"})
		if !errors.Is(err, ErrRootUnusable) || !strings.Contains(err.Error(), "buildset_registry_root") {
			t.Fatalf("error %v, want ErrRootUnusable naming buildset_registry_root", err)
		}
	})
	t.Run("read-only file system", func(t *testing.T) {
		// /proc/sys is read-only for everyone, root included.
		_, err := Apply(context.Background(), Spec{Root: "/proc/sys/imagegate-br", Port: testenv.FreePort(t), Host: "127.0.0.1"})
		if !errors.Is(err, ErrRootUnusable) {
			t.Fatalf("error %v, want ErrRootUnusable", err)
		}
	})
	t.Run("daemon exits before ready", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "br")
		cleanup(t, root)
		_, err := Apply(context.Background(), Spec{Root: root, Port: testenv.FreePort(t), Host: "127.0.0.1"}, WithExecutable("/bin/false"))
		if !errors.Is(err, ErrStartFailed) || !strings.Contains(err.Error(), "exited (exit status 1) before it was ready") {
			t.Fatalf("error %v, want ErrStartFailed saying the daemon exited", err)
		}
	})
	t.Run("daemon hangs", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "hang")
		os.WriteFile(script, []byte("#!/bin/sh\necho hanging\nexec sleep 60\n"), 0o755)
		root := filepath.Join(t.TempDir(), "br")
		cleanup(t, root)
		_, err := Apply(context.Background(), Spec{Root: root, Port: testenv.FreePort(t), Host: "127.0.0.1"},
			WithExecutable(script), WithStartTimeout(300*time.Millisecond))
		if !errors.Is(err, ErrStartFailed) || !strings.Contains(err.Error(), "no ready report") || !strings.Contains(err.Error(), "hanging") {
			t.Fatalf("error %v, want ErrStartFailed with the log tail", err)
		}
	})
	t.Run("foreign directory", func(t *testing.T) {
		dir := t.TempDir()
		keep := filepath.Join(dir, "precious")
		os.WriteFile(keep, []byte("x"), 0o644)
		for _, state := range []State{Started, Absent} {
			_, err := Apply(context.Background(), Spec{State: state, Root: dir, Port: testenv.FreePort(t), Host: "127.0.0.1"})
			if !errors.Is(err, ErrForeignRoot) {
				t.Errorf("%s: error %v, want ErrForeignRoot", state, err)
			}
		}
		if r, err := Apply(context.Background(), Spec{State: Stopped, Root: dir}); err != nil || r.Changed {
			t.Errorf("stopped on a foreign directory: %+v, %v", r, err)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("foreign directory was touched: %v", err)
		}
	})
}

// TestForeignLockHolder: a process that is not the registry holds the lock
// on registry.pid (it locked the file itself). Stopping, removing or
// restarting the registry fails, naming the process, and never signals it.
func TestForeignLockHolder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "br")
	port := testenv.FreePort(t)
	cleanup(t, root)
	spec := Spec{Root: root, Port: port, Host: "127.0.0.1"}
	apply(t, spec)
	apply(t, Spec{State: Stopped, Root: root})

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+filepath.Join(root, "registry.pid"))
	stranger := testenv.StartProcess(t, "lock holder", cmd, t.TempDir())
	testenv.WaitFor(t, "the stranger to lock registry.pid", 30*time.Second, stranger, func() error {
		if pid, err := runningPID(layout(root)); err != nil || pid != cmd.Process.Pid {
			return fmt.Errorf("lock holder %d, %v", pid, err)
		}
		return nil
	})
	for _, s := range []Spec{{State: Stopped, Root: root}, {State: Absent, Root: root}, spec} {
		_, err := Apply(context.Background(), s)
		if !errors.Is(err, ErrForeignProcess) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) ||
			!strings.Contains(err.Error(), "refusing to signal it") {
			t.Errorf("%s: error %v, want ErrForeignProcess naming pid %d", s.State, err, cmd.Process.Pid)
		}
		if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
			t.Fatalf("%s signalled the stranger: %v", s.State, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "registry.json")); err != nil {
		t.Errorf("absent removed the root while refusing: %v", err)
	}
	// Once the stranger is gone, the registry is managed as before.
	_ = cmd.Process.Kill()
	testenv.WaitFor(t, "the stranger to exit", 30*time.Second, nil, func() error {
		if pid, _ := runningPID(layout(root)); pid != 0 {
			return fmt.Errorf("lock still held by %d", pid)
		}
		return nil
	})
	if r := apply(t, spec); !r.Changed || r.PID == 0 {
		t.Errorf("start after the stranger left: %+v", r)
	}
}

func TestExplicitListen(t *testing.T) {
	root := filepath.Join(t.TempDir(), "br")
	port := testenv.FreePort(t)
	cleanup(t, root)
	r := apply(t, Spec{Root: root, Port: port, Host: "localhost", Listen: []string{"::1"}})
	if resp, err := get(t, "https://[::1]:"+strconv.Itoa(port)+"/v2/", r.Registry.Cert, "", ""); err != nil {
		t.Errorf("GET on ::1: %v", err)
	} else if resp.StatusCode >= 500 {
		t.Errorf("GET on ::1: %s", resp.Status)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
		c.Close()
		t.Error("listening on 127.0.0.1, but only ::1 was asked for")
	}
}

// TestConcurrentStarts runs several starts on one root at once, as parallel
// tasks might: one starts the daemon, the others find it running, and all
// return the same connection data.
func TestConcurrentStarts(t *testing.T) {
	root := filepath.Join(t.TempDir(), "br")
	cleanup(t, root)
	spec := Spec{Root: root, Port: testenv.FreePort(t), Host: "127.0.0.1"}
	const n = 4
	results := make(chan *Result, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			r, err := Apply(context.Background(), spec)
			results <- r
			errs <- err
		}()
	}
	var changed int
	var first *Result
	for range n {
		r, err := <-results, <-errs
		if err != nil {
			t.Fatal(err)
		}
		if r.Changed {
			changed++
		}
		if first == nil {
			first = r
		} else if *r.Registry != *first.Registry || r.PID != first.PID {
			t.Errorf("different results: %+v and %+v", r, first)
		}
	}
	if changed != 1 {
		t.Errorf("%d of %d concurrent starts changed, want 1", changed, n)
	}
}
