package buildkitd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/atomicfile"
)

// manager runs and stops the daemon one way.
type manager interface {
	// running returns the pid of the daemon rec describes (or, without a
	// record, the one the pid file names) when it runs, else 0.
	running(ctx context.Context, s Spec, rec *record) (int, error)
	// start starts the daemon and returns its pid once its socket accepts
	// connections.
	start(ctx context.Context, s Spec) (int, error)
	// stop stops the daemon with pid.
	stop(ctx context.Context, s Spec, pid int) error
	// logs says where the daemon's log is.
	logs(s Spec) string
}

func managerFor(m Manager) manager {
	if m == Systemd {
		return systemdManager{}
	}
	return processManager{}
}

// daemonEnv is the daemon's environment: a PATH where runc is found, and
// the proxy settings of the task (buildkitd pulls base images through
// them). Nothing else of the module's environment is passed on.
func daemonEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// answers reports whether the socket accepts a connection.
func answers(sock string) error {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// waitReady waits until the socket accepts connections, failing early with
// failed's error (the daemon exited).
func waitReady(ctx context.Context, s Spec, failed func() error) error {
	ctx, cancel := context.WithTimeout(ctx, s.StartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = answers(s.socket()); last == nil {
			return nil
		}
		if err := failed(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("its socket %s did not accept connections within %s (last error: %v)", s.socket(), s.StartTimeout, last)
		case <-tick.C:
		}
	}
}

// procExe returns the executable of pid (without the " (deleted)" of a
// replaced file), its command line, and whether it is alive (not a
// zombie).
func procExe(pid int) (string, []string, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return "", nil, false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		return "", nil, false
	}
	exe, _ := os.Readlink(dir + "/exe")
	raw, _ := os.ReadFile(dir + "/cmdline")
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	return strings.TrimSuffix(exe, " (deleted)"), argv, true
}

// isOurs reports whether pid is a live buildkitd from binary (the spec's
// or the recorded one) serving the spec's address.
func isOurs(pid int, s Spec, rec *record) bool {
	exe, argv, alive := procExe(pid)
	if !alive {
		return false
	}
	if exe != s.Binary && (rec == nil || len(rec.Argv) == 0 || exe != rec.Argv[0]) {
		return false
	}
	for i, a := range argv {
		if a == "--addr="+s.Address || (a == "--addr" && i+1 < len(argv) && argv[i+1] == s.Address) {
			return true
		}
	}
	return false
}

// listener returns a description of the process that listens on the
// socket, when one does: a buildkitd this package does not know.
func listener(s Spec) string {
	if answers(s.socket()) != nil {
		return ""
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, argv, alive := procExe(pid)
		if alive && strings.Contains(strings.Join(argv, " "), s.socket()) {
			return fmt.Sprintf("pid %d (%s)", pid, strings.Join(argv, " "))
		}
	}
	return "a process this module cannot identify"
}

// processManager runs buildkitd as a detached process.
type processManager struct{}

func (processManager) logs(s Spec) string { return s.LogFile }

func (processManager) running(_ context.Context, s Spec, rec *record) (int, error) {
	pid := readPidfile(s.Pidfile)
	if rec != nil && rec.Manager == Process && rec.PID != 0 {
		pid = rec.PID
	}
	if pid == 0 || !isOurs(pid, s, rec) {
		return 0, nil
	}
	return pid, nil
}

func (processManager) start(ctx context.Context, s Spec) (int, error) {
	for _, d := range []string{filepath.Dir(s.Pidfile), filepath.Dir(s.LogFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
	}
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("opening log_file: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s: started by imagegate's buildkitd_service: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(s.argv(), " "))
	argv := s.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = daemonEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: out of the process group Ansible may kill when the
	// task ends, and no controlling terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := atomicfile.WriteFile(s.Pidfile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("writing pidfile: %w", err)
	}
	err = waitReady(ctx, s, func() error {
		select {
		case werr := <-exited:
			return fmt.Errorf("buildkitd exited (%v)", werr)
		default:
			return nil
		}
	})
	if err != nil {
		_ = cmd.Process.Kill()
		os.Remove(s.Pidfile)
		return 0, err
	}
	return pid, nil
}

func (processManager) stop(ctx context.Context, s Spec, pid int) error {
	if err := signalAndWait(ctx, pid); err != nil {
		return err
	}
	os.Remove(s.Pidfile)
	return nil
}

// signalAndWait sends SIGTERM, and SIGKILL after 10 s, and waits for pid
// to end.
func signalAndWait(ctx context.Context, pid int) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stopping buildkitd (pid %d): %w", pid, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, _, alive := procExe(pid); !alive {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return fmt.Errorf("buildkitd (pid %d) did not exit after SIGKILL", pid)
}

// systemdManager runs buildkitd as a transient systemd unit.
type systemdManager struct{}

func (systemdManager) logs(s Spec) string { return "journalctl -u " + s.Unit + ".service" }

// show returns the unit's ActiveState and MainPID.
func (systemdManager) show(ctx context.Context, unit string) (string, int, error) {
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=ActiveState", "--property=MainPID", unit+".service").Output()
	if err != nil {
		return "", 0, fmt.Errorf("systemctl show %s.service: %w", unit, err)
	}
	var state string
	var pid int
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "ActiveState":
			state = v
		case "MainPID":
			pid, _ = strconv.Atoi(v)
		}
	}
	return state, pid, nil
}

func (m systemdManager) running(ctx context.Context, s Spec, rec *record) (int, error) {
	unit := s.Unit
	if rec != nil && rec.Unit != "" {
		unit = rec.Unit
	}
	state, pid, err := m.show(ctx, unit)
	if err != nil {
		return 0, err
	}
	if (state == "active" || state == "activating" || state == "reloading") && pid > 0 {
		return pid, nil
	}
	return 0, nil
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (m systemdManager) start(ctx context.Context, s Spec) (int, error) {
	unit := s.Unit + ".service"
	// A failed transient unit keeps its name until reset.
	_ = exec.CommandContext(ctx, "systemctl", "reset-failed", unit).Run()
	args := []string{"--unit=" + unit, "--description=BuildKit daemon (imagegate)", "--collect",
		"--property=Type=exec", "--property=Delegate=yes", "--property=KillMode=mixed", "--property=LimitNOFILE=1048576"}
	for _, e := range daemonEnv() {
		args = append(args, "--setenv="+e)
	}
	args = append(append(args, "--"), s.argv()...)
	if err := run(ctx, "systemd-run", args...); err != nil {
		return 0, err
	}
	err := waitReady(ctx, s, func() error {
		state, _, err := m.show(ctx, s.Unit)
		if err == nil && (state == "failed" || state == "inactive") {
			return fmt.Errorf("the unit %s is %s", unit, state)
		}
		return nil
	})
	if err != nil {
		_ = exec.CommandContext(ctx, "systemctl", "stop", unit).Run()
		out, _ := exec.CommandContext(ctx, "journalctl", "--no-pager", "-n", "20", "-u", unit).CombinedOutput()
		return 0, fmt.Errorf("%w:\n%s", err, bytes.TrimSpace(out))
	}
	_, pid, err := m.show(ctx, s.Unit)
	return pid, err
}

func (systemdManager) stop(ctx context.Context, s Spec, _ int) error {
	return run(ctx, "systemctl", "stop", s.Unit+".service")
}

// logTail returns the last lines of the process manager's log.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return ":\n" + strings.Join(lines, "\n")
}
