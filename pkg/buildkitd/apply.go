package buildkitd

import (
	"context"
	"errors"
	"fmt"
	"github.com/imagegate/imagegate/pkg/ansible"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Option configures Apply.
type Option func(*options)

type options struct {
	checkMode bool
	diff      bool
	log       *slog.Logger
	now       func() time.Time
}

// WithCheckMode makes Apply decide and report what it would do, and start,
// stop and write nothing (Ansible's check mode). Default false.
func WithCheckMode(on bool) Option { return func(o *options) { o.checkMode = on } }

// WithDiff makes the result carry a description of the daemon and what it
// runs with, before and after (Ansible's diff mode). Default false.
func WithDiff(on bool) Option { return func(o *options) { o.diff = on } }

// WithLogger sets the logger for what Apply does. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Result is what Apply did, or would do in check mode: the
// buildkitd_service module's result. Changed reports whether the daemon
// was (or would be) started, restarted or stopped; Msg says what was done
// and why; Diff (WithDiff) describes the daemon and what it runs with.
type Result struct {
	ansible.Outcome
	// State and Address are the state and socket asked for.
	State   State  `json:"state"`
	Address string `json:"address"`
	// PID is the daemon's pid when it runs (the old one in check mode).
	PID int `json:"pid"`
	// Manager is how it runs: systemd or process.
	Manager Manager `json:"service_manager"`
	// Logs is where its log is (a file, or the journalctl command).
	Logs string `json:"logs"`
	// before and after describe the daemon, for the diff.
	before, after string
}

// Apply makes the daemon reach spec.State; see the package comment.
func Apply(ctx context.Context, spec Spec, opts ...Option) (*Result, error) {
	o := options{log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := spec.normalize()
	if err != nil {
		return nil, err
	}
	res, err := apply(ctx, s, o)
	if err != nil {
		return nil, err
	}
	if o.diff {
		res.Diff = []ansible.Diff{{Before: res.before, After: res.after, BeforeHeader: "buildkitd", AfterHeader: "buildkitd"}}
	}
	return res, nil
}

func apply(ctx context.Context, s Spec, o options) (*Result, error) {
	mgr := managerFor(s.Manager)
	res := &Result{State: s.State, Address: s.Address, Manager: s.Manager, Logs: mgr.logs(s)}

	unlock, err := lock(s, o.checkMode)
	if err != nil {
		return nil, err
	}
	defer unlock()

	rec, err := readRecord(s.recordFile())
	if err != nil {
		return nil, err
	}
	// The daemon runs the way it was started, whatever is asked now.
	old := s
	if rec != nil {
		old.Manager, old.Unit = rec.Manager, rec.Unit
		if old.Unit == "" {
			old.Unit = s.Unit
		}
	}
	oldMgr := managerFor(old.Manager)
	pid, err := oldMgr.running(ctx, old, rec)
	if err != nil {
		return nil, err
	}
	res.before = rec.describe(pid != 0)
	if rec == nil && pid != 0 {
		res.before = fmt.Sprintf("state: started\nmanager: %s\npid: %d (no record of its configuration)\n", old.Manager, pid)
	}

	if s.State == Stopped {
		res.after = "state: stopped\n"
		if pid == 0 {
			res.Msg = "buildkitd is not running"
			if !o.checkMode {
				removeRecord(s)
			}
			return res, nil
		}
		res.Changed = true
		if o.checkMode {
			res.Msg = fmt.Sprintf("would stop buildkitd (pid %d)", pid)
			res.PID = pid
			return res, nil
		}
		if err := oldMgr.stop(ctx, old, pid); err != nil {
			return nil, err
		}
		removeRecord(s)
		o.log.Info("stopped buildkitd", "pid", pid)
		res.Msg = fmt.Sprintf("stopped buildkitd (pid %d)", pid)
		return res, nil
	}

	want, err := desired(s)
	if err != nil {
		return nil, err
	}
	res.after = want.describe(true)
	var reason string
	switch {
	case pid == 0:
		if who := listener(s); who != "" {
			return nil, fmt.Errorf("%w: %s listens on %s; stop it, or set address to another socket", ErrForeignDaemon, who, s.Address)
		}
		reason = "it was not running"
	case rec == nil:
		reason = "there is no record of what it was started with"
	default:
		if same, why := rec.sameAs(want); !same {
			reason = why
		} else if err := answers(s.socket()); err != nil {
			reason = fmt.Sprintf("it does not answer on %s (%v)", s.socket(), err)
		}
	}
	if reason == "" {
		res.PID = pid
		res.Msg = fmt.Sprintf("buildkitd runs (pid %d) with this binary and configuration", pid)
		return res, nil
	}
	res.Changed = true
	verb := "start"
	if pid != 0 {
		verb = "restart"
	}
	if o.checkMode {
		res.PID = pid
		res.Msg = fmt.Sprintf("would %s buildkitd: %s", verb, reason)
		return res, nil
	}
	o.log.Info(verb+"ing buildkitd", "reason", reason, "manager", s.Manager)
	if pid != 0 {
		if err := oldMgr.stop(ctx, old, pid); err != nil {
			return nil, err
		}
		removeRecord(s)
	}
	for _, d := range []string{filepath.Dir(s.socket()), s.Root} {
		mode := os.FileMode(0o755)
		if d == s.Root {
			mode = 0o700
		}
		if err := os.MkdirAll(d, mode); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	// A socket left by a daemon that died would make the new one fail.
	if err := os.Remove(s.socket()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale socket %s: %w", s.socket(), err)
	}
	newPID, err := mgr.start(ctx, s)
	if err != nil {
		tail := ""
		if s.Manager == Process {
			tail = logTail(s.LogFile)
		}
		return nil, fmt.Errorf("%w: %w; see %s%s", ErrStartFailed, err, mgr.logs(s), tail)
	}
	want.PID, want.Started = newPID, o.now().UTC()
	if err := writeRecord(s.recordFile(), want); err != nil {
		return nil, fmt.Errorf("buildkitd started (pid %d), but writing %s failed: %w", newPID, s.recordFile(), err)
	}
	o.log.Info(verb+"ed buildkitd", "pid", newPID)
	res.PID = newPID
	res.Msg = fmt.Sprintf("%sed buildkitd (pid %d): %s", verb, newPID, reason)
	return res, nil
}

func removeRecord(s Spec) {
	os.Remove(s.recordFile())
}

// lock serialises Applys on one node (two tasks starting the daemon at
// once): an exclusive lock on a file beside the record. In check mode, when
// the directory does not exist, there is nothing to protect.
func lock(s Spec, checkMode bool) (func(), error) {
	dir := filepath.Dir(s.recordFile())
	if checkMode {
		if _, err := os.Stat(dir); err != nil {
			return func() {}, nil
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	path := s.recordFile() + ".lock"
	flags := os.O_RDWR | os.O_CREATE
	if checkMode {
		flags = os.O_RDONLY // check mode creates nothing
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		if checkMode {
			return func() {}, nil
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
