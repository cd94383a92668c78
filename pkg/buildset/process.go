package buildset

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runningPID returns the pid of the daemon serving root l, or 0 when none
// runs. A daemon holds a POSIX write lock on its pid file for its whole
// life; the kernel drops the lock when the process dies, however it dies,
// so a stale pid file (or a pid reused by another process) is never
// mistaken for a running daemon. F_GETLK names the lock holder.
func runningPID(l layout) (int, error) {
	f, err := os.Open(l.pidFile())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", l.pidFile(), err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("checking the lock on %s: %w", l.pidFile(), err)
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}

// lockPIDFile is the daemon's side of runningPID: it locks the pid file and
// writes its pid. The returned file must stay open while the daemon runs.
func lockPIDFile(l layout) (*os.File, error) {
	f, err := os.OpenFile(l.pidFile(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		f.Close()
		if pid, _ := runningPID(l); pid != 0 {
			return nil, fmt.Errorf("another buildset registry (pid %d) already serves %s", pid, l.root())
		}
		return nil, fmt.Errorf("locking %s: %w", l.pidFile(), err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// isOurDaemon checks that pid, the holder of the pid file's lock, is this
// root's registry daemon: its executable is the root's copy of the module
// (or was, if a later start replaced the file) and its command line is
// serve mode for this root. A lock says only that some process holds it;
// whatever else took it (a tool that locks files, a process that inherited
// the descriptor over exec) is never signalled.
func isOurDaemon(l layout, pid int) error {
	proc := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(proc + "/exe")
	if err != nil {
		return fmt.Errorf("the lock on %s is held by pid %d, whose executable cannot be read (%v): refusing to signal a process that may not be the buildset registry; stop it yourself", l.pidFile(), pid, err)
	}
	raw, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return fmt.Errorf("the lock on %s is held by pid %d, whose command line cannot be read (%v): refusing to signal a process that may not be the buildset registry; stop it yourself", l.pidFile(), pid, err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe != l.binary() || len(argv) < 3 || argv[1] != ServeArg || argv[2] != l.root() {
		return fmt.Errorf("%w: the lock on %s is held by pid %d (%s), not by this root's registry (%s %s %s): refusing to signal it; stop that process or choose another buildset_registry_root",
			ErrForeignProcess, l.pidFile(), pid, strings.Join(argv, " "), l.binary(), ServeArg, l.root())
	}
	return nil
}

// stopDaemon sends SIGTERM to the daemon and waits for it to release its
// lock; after the grace period it sends SIGKILL. It signals nothing that
// isOurDaemon does not recognise.
func stopDaemon(ctx context.Context, l layout, pid int, grace time.Duration) error {
	if err := isOurDaemon(l, pid); err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping the buildset registry (pid %d): %w", pid, err)
	}
	if waitStopped(ctx, l, grace) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing the buildset registry (pid %d): %w", pid, err)
	}
	if waitStopped(ctx, l, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("the buildset registry (pid %d) did not exit after SIGKILL", pid)
}

func waitStopped(ctx context.Context, l layout, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if pid, err := runningPID(l); err == nil && pid == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

// readyFD is the descriptor on which a starting daemon reports "ready" or
// the error that stopped it (the first of exec.Cmd.ExtraFiles).
const readyFD = 3

// startDaemon starts the installed executable in serve mode, detached in a
// new session with its output appended to the log, and waits for its ready
// report. It returns the daemon's pid.
func startDaemon(ctx context.Context, l layout) (int, error) {
	logf, err := os.OpenFile(l.logFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("opening the registry log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(l.binary(), ServeArg, l.root(), strconv.Itoa(readyFD))
	cmd.Dir = l.root()
	// The daemon needs no environment; none of the task's is passed on.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	// A new session: no controlling terminal, and out of the process group
	// Ansible may kill when the task ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("starting %s: %w", l.binary(), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	if dl, ok := ctx.Deadline(); ok {
		_ = r.SetReadDeadline(dl)
	}
	// Cancellation (SIGTERM to the module) ends the wait as the deadline does.
	defer context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Now()) })()
	msg, rerr := io.ReadAll(io.LimitReader(r, 64<<10))
	line := strings.TrimSpace(string(msg))
	switch {
	case line == "ready":
		return cmd.Process.Pid, nil
	case strings.HasPrefix(line, "error: "):
		// The daemon exits right after reporting; reap it.
		<-exited
		return 0, fmt.Errorf("%w: %w", ErrStartFailed, daemonError(strings.TrimPrefix(line, "error: ")))
	}
	if rerr != nil {
		// Deadline: the daemon hangs before listening. Do not leave it.
		_ = cmd.Process.Kill()
		<-exited
		return 0, fmt.Errorf("%w: no ready report before the deadline or cancellation (%v); see %s%s", ErrStartFailed, rerr, l.logFile(), logTail(l))
	}
	werr := <-exited
	return 0, fmt.Errorf("%w: the daemon exited (%v) before it was ready; see %s%s", ErrStartFailed, werr, l.logFile(), logTail(l))
}

// logTail returns the last lines of the registry log, for error messages.
func logTail(l layout) string {
	b, err := os.ReadFile(l.logFile())
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return ":\n" + strings.Join(lines, "\n")
}

// probeAddr is where Apply checks that the registry answers: the first
// listen address (loopback for a wildcard), or 127.0.0.1.
func probeAddr(c *config) string {
	host := "127.0.0.1"
	if len(c.Listen) > 0 {
		ip := net.ParseIP(c.Listen[0])
		switch {
		case ip.Equal(net.IPv4zero):
		case ip.Equal(net.IPv6unspecified):
			host = "::1"
		default:
			host = ip.String()
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(c.Port))
}

// probe checks that the registry answers GET /v2/ over TLS with a
// certificate issued by the root's CA, which proves it is this root's
// daemon and not another server on the port. It retries until ctx is done.
func probe(ctx context.Context, c *config, caPEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("the root's CA certificate holds no PEM certificate")
	}
	addr := probeAddr(c)
	host, _, _ := net.SplitHostPort(addr)
	client := &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	url := "https://" + addr + "/v2/"
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = probeOnce(ctx, client, url)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: %w", url, last)
		case <-tick.C:
		}
	}
}

func probeOnce(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	// 200 when anonymous reads are allowed, 401 otherwise: both are a
	// registry answering (distribution spec, "Determining support").
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("unexpected status %s", resp.Status)
	}
	return nil
}

// reportedError is an error the daemon reported on its ready descriptor. It
// matches the sentinel its text names, so errors.Is works across the process
// boundary.
type reportedError struct {
	msg      string
	sentinel error
}

func (e *reportedError) Error() string { return e.msg }
func (e *reportedError) Unwrap() error { return e.sentinel }

func daemonError(msg string) error {
	for _, s := range []error{ErrPortInUse, ErrRootUnusable} {
		if strings.Contains(msg, s.Error()) {
			return &reportedError{msg: msg, sentinel: s}
		}
	}
	return &reportedError{msg: msg}
}
