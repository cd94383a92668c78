// Package daemon starts local daemons as process groups with a log file,
// waits until they answer and stops them, returning errors. It holds the
// one implementation of each start that both the tests and the demo need:
// internal/testenv wraps it once for tests (a failure fails the test, the
// stop is registered with t.Cleanup, the log is printed when the test
// failed), and the demo (internal/cmd/imagegate-demo), a program, reports
// its errors. It does not import testing.
//
// Tools come from the environment variables the Makefile exports
// (DOCKERD, BUILDKITD, ...; see tests/setup/deps.sh), from PATH, or from
// where tests/setup/deps.sh builds them.
package daemon

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a daemon started with Start.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	// Log is the file holding the daemon's output.
	Log  string
	done chan struct{}
	err  error
}

// Start starts cmd as a daemon in its own process group (killed if this
// process dies), its output going to <logDir>/<name>.log. The caller stops
// it (Stop).
func Start(name string, cmd *exec.Cmd, logDir string) (*Process, error) {
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

// LogTail returns the last max bytes of the process log ("" when it cannot
// be read).
func (p *Process) LogTail(max int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return string(b)
}

// LogContains reports whether a line of the process log contains s.
func (p *Process) LogContains(s string) bool {
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

// WaitFor polls cond every 50 ms until it returns nil. It returns an error
// with cond's last error when the deadline passes, or at once when the
// process p (if given) exits.
func WaitFor(what string, timeout time.Duration, p *Process, cond func() error) error {
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

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
