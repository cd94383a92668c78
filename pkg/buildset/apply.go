package buildset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Option configures Apply.
type Option func(*options)

type options struct {
	checkMode    bool
	diff         bool
	logger       *slog.Logger
	executable   string
	startTimeout time.Duration
}

// WithCheckMode makes Apply decide what it would do and report it, without
// writing or starting anything (Ansible's check mode). Default false.
func WithCheckMode(on bool) Option { return func(o *options) { o.checkMode = on } }

// WithDiff makes the result carry a description of the daemon and its
// configuration before and after (Ansible's diff mode). Default false.
func WithDiff(on bool) Option { return func(o *options) { o.diff = on } }

// WithLogger sets the logger for what Apply does. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithExecutable sets the executable that is installed in the root and
// started in serve mode; it must call ServeIfRequested first thing. Default:
// the running executable (os.Executable).
func WithExecutable(path string) Option { return func(o *options) { o.executable = path } }

// WithStartTimeout bounds the wait for a started registry to answer over
// TLS. Default 30 s; a healthy start takes well under a second.
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// Result is what Apply did, or would do in check mode.
type Result struct {
	// Changed reports whether anything was (or would be) started, stopped,
	// written or removed; Msg says what was done, or would be done in
	// check mode; Diff (WithDiff) describes the daemon and its
	// configuration before and after, without secrets.
	ansible.Outcome
	// State is the state the registry was brought to.
	State State `json:"state"`
	// Root and LogFile are the root directory and the daemon's log.
	Root    string `json:"root"`
	LogFile string `json:"log_file"`
	// PID is the daemon's process id when it runs, else 0.
	PID int `json:"pid"`
	// Registry is the connection data for clients, shaped for zuul_return
	// secret_data. It holds the password: never log it. It is set when
	// the state is started; in check mode, only when the root already holds
	// credentials.
	Registry *zuul.BuildsetRegistry `json:"buildset_registry,omitempty"`

	before, after string
}

// Apply makes the buildset registry under spec.Root reach spec.State:
//
//   - started: the daemon runs with the spec's host, port and listen
//     addresses, and answers over TLS. A running daemon with that
//     configuration is left alone (Changed false). A missing daemon (never
//     started, stopped, or killed, leaving a stale pid file) is started, and
//     a running one whose configuration differs is restarted; the password
//     and CA of the root are kept, so clients keep working.
//   - stopped: the daemon is stopped (SIGTERM, then SIGKILL after a grace
//     period); the root is kept.
//   - absent: the daemon is stopped and the root is removed.
//
// Stopping or removing what is not there is not a change.
func Apply(ctx context.Context, spec Spec, opts ...Option) (*Result, error) {
	o := options{logger: slog.New(slog.NewTextHandler(io.Discard, nil)), startTimeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.startTimeout <= 0 {
		return nil, errors.New("buildset: start timeout must be positive")
	}
	spec, err := spec.normalize()
	if err != nil {
		return nil, err
	}
	l := layout(spec.Root)
	var res *Result
	if spec.State == Started {
		res, err = o.start(ctx, l, spec)
	} else {
		res, err = o.stop(ctx, l, spec.State == Absent)
	}
	if res != nil {
		res.State = spec.State
		if o.diff {
			res.Diff = []ansible.Diff{{Before: res.before, After: res.after}}
		}
	}
	return res, err
}

// lock takes the root's lock: shared in check mode, which only reads,
// exclusive otherwise. It gives up after a minute.
func (o *options) lock(ctx context.Context, l layout) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return lockRoot(lctx.Done(), l, !o.checkMode)
}

func (o *options) start(ctx context.Context, l layout, spec Spec) (*Result, error) {
	res := &Result{Root: l.root(), LogFile: l.logFile()}
	exists, err := rootExists(l)
	if err != nil {
		return nil, err
	}
	if !exists && !o.checkMode {
		if err := mkdirRoot(l); err != nil {
			return nil, err
		}
		exists = true
	}
	st := rootMissing
	if exists {
		// What is in the root is judged under its lock, where another
		// task's start is seen whole or not at all. A foreign directory is
		// refused before anything is written to it.
		unlock, err := o.lock(ctx, l)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if st, err = inspectRoot(l); err != nil {
			return nil, err
		}
		if st == rootEmpty && !o.checkMode {
			if err := prepareRoot(l); err != nil {
				return nil, err
			}
		}
	}
	var old *config
	var ca *pki.CA
	pid := 0
	if st == rootOurs {
		if old, err = readConfig(l); err != nil {
			return nil, err
		}
		if ca, err = loadCA(l); err != nil {
			return nil, err
		}
		if pid, err = runningPID(l); err != nil {
			return nil, err
		}
	}
	cfg, err := desiredConfig(old, spec)
	if err != nil {
		return nil, err
	}
	res.before = describe(old, pid != 0)
	res.after = describe(cfg, true)

	reason := "it was not running"
	switch {
	case pid != 0 && old != nil && ca != nil && old.sameServing(cfg):
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		perr := probe(pctx, old, ca.CertPEM)
		cancel()
		if perr == nil {
			res.PID, res.Registry = pid, connection(old, ca)
			res.Msg = fmt.Sprintf("the buildset registry is running (pid %d)", pid)
			return res, nil
		}
		reason = fmt.Sprintf("the running daemon (pid %d) does not answer: %v", pid, perr)
	case pid != 0:
		reason = fmt.Sprintf("its configuration changed (pid %d)", pid)
	case old != nil:
		reason = "it was stopped, or its daemon died"
	}
	res.Changed = true
	if o.checkMode {
		if old != nil && ca != nil {
			res.Registry = connection(cfg, ca)
		}
		res.Msg = fmt.Sprintf("would start the buildset registry in %s: %s", l.root(), reason)
		return res, nil
	}
	o.logger.Info("starting the buildset registry", "root", l.root(), "reason", reason)

	// registry.json first: it marks the directory as ours, so a start that
	// fails later leaves a root that a retry or absent may use.
	if old == nil || !reflect.DeepEqual(old, cfg) {
		if err := writeConfig(l, cfg); err != nil {
			return nil, unusable(l, fmt.Errorf("writing the configuration: %w", err))
		}
	}
	if ca == nil {
		if ca, err = pki.NewCA("imagegate buildset registry CA", caValidity); err != nil {
			return nil, err
		}
		if err := ca.WriteFiles(l.caCert(), l.caKey()); err != nil {
			return nil, unusable(l, fmt.Errorf("writing the CA: %w", err))
		}
	}
	if pid != 0 {
		if err := stopDaemon(ctx, l, pid, shutdownGrace+5*time.Second); err != nil {
			return nil, err
		}
	}
	exe := o.executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding the module executable: %w", err)
		}
	}
	t0 := time.Now()
	installed, err := installExecutable(l, exe)
	if err != nil {
		return nil, err
	}
	o.logger.Debug("registry executable", "path", l.binary(), "copied", installed, "elapsed", time.Since(t0))
	sctx, cancel := context.WithTimeout(ctx, o.startTimeout)
	defer cancel()
	t0 = time.Now()
	newPID, err := startDaemon(sctx, l)
	if err != nil {
		return nil, err
	}
	o.logger.Debug("daemon reported ready", "pid", newPID, "elapsed", time.Since(t0))
	t0 = time.Now()
	if err := probe(sctx, cfg, ca.CertPEM); err != nil {
		_ = stopDaemon(ctx, l, newPID, 5*time.Second)
		return nil, fmt.Errorf("%w: it did not answer over TLS: %w; see %s%s", ErrStartFailed, err, l.logFile(), logTail(l))
	}
	o.logger.Debug("registry answered over TLS", "elapsed", time.Since(t0))
	o.logger.Info("buildset registry started", "pid", newPID, "port", cfg.Port)
	res.PID, res.Registry = newPID, connection(cfg, ca)
	res.Msg = fmt.Sprintf("started the buildset registry (pid %d) on port %d: %s", newPID, cfg.Port, reason)
	return res, nil
}

func (o *options) stop(ctx context.Context, l layout, remove bool) (*Result, error) {
	res := &Result{Root: l.root(), LogFile: l.logFile(), before: describe(nil, false), after: describe(nil, false)}
	exists, err := rootExists(l)
	if err != nil {
		return nil, err
	}
	if !exists {
		res.Msg = fmt.Sprintf("no buildset registry in %s", l.root())
		return res, nil
	}
	unlock, err := o.lock(ctx, l)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := inspectRoot(l)
	if errors.Is(err, ErrForeignRoot) && !remove {
		res.Msg = fmt.Sprintf("no buildset registry in %s", l.root())
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	if st == rootMissing {
		res.Msg = fmt.Sprintf("no buildset registry in %s", l.root())
		return res, nil
	}
	if st == rootEmpty {
		if !remove {
			res.Msg = fmt.Sprintf("no buildset registry in %s", l.root())
			return res, nil
		}
		res.Changed = true
		if o.checkMode {
			res.Msg = "would remove the empty directory " + l.root()
			return res, nil
		}
		if err := os.Remove(l.root()); err != nil {
			return nil, fmt.Errorf("removing buildset_registry_root %s: %w", l.root(), err)
		}
		res.Msg = "removed the empty directory " + l.root()
		return res, nil
	}
	// A damaged registry.json must not prevent a stop or a removal.
	old, _ := readConfig(l)
	pid, err := runningPID(l)
	if err != nil {
		return nil, err
	}
	res.before = describe(old, pid != 0)
	res.after = describe(old, false)
	var will, did []string
	if pid != 0 {
		res.Changed = true
		will = append(will, fmt.Sprintf("stop the buildset registry (pid %d)", pid))
		did = append(did, fmt.Sprintf("stopped the buildset registry (pid %d)", pid))
		if !o.checkMode {
			if err := stopDaemon(ctx, l, pid, shutdownGrace+5*time.Second); err != nil {
				return nil, err
			}
			o.logger.Info("stopped the buildset registry", "pid", pid)
		}
	}
	if remove {
		res.Changed = true
		res.after = describe(nil, false)
		will = append(will, "remove "+l.root())
		did = append(did, "removed "+l.root())
		if !o.checkMode {
			if err := os.RemoveAll(l.root()); err != nil {
				return nil, fmt.Errorf("removing buildset_registry_root %s: %w", l.root(), err)
			}
			o.logger.Info("removed the buildset registry root", "root", l.root())
		}
	}
	switch {
	case len(did) == 0:
		res.Msg = "the buildset registry is not running"
	case o.checkMode:
		res.Msg = "would " + strings.Join(will, " and ")
	default:
		res.Msg = strings.Join(did, " and ")
	}
	return res, nil
}

// connection is the data clients need, as zuul_return carries it.
func connection(c *config, ca *pki.CA) *zuul.BuildsetRegistry {
	return &zuul.BuildsetRegistry{Host: c.Host, Port: c.Port, Username: c.Username, Password: c.Password, Cert: string(ca.CertPEM)}
}

// describe is the daemon's state and configuration as diff text, without
// the password.
func describe(c *config, running bool) string {
	if c == nil {
		return "state: absent\n"
	}
	state := "stopped"
	if running {
		state = "started"
	}
	listen := "all addresses"
	if len(c.Listen) > 0 {
		listen = strings.Join(c.Listen, ", ")
	}
	out := "state: " + state + "\nhost: " + c.Host + "\nport: " + strconv.Itoa(c.Port) + "\nlisten: " + listen + "\n"
	if len(c.Upstreams) > 0 {
		var ups []string
		for _, u := range c.Upstreams {
			ups = append(ups, u.Registry+" from "+u.URL)
		}
		out += "pull-through: " + strings.Join(ups, ", ") + " (tag TTL " + strconv.FormatInt(c.UpstreamTagTTL, 10) + "s)\n"
	}
	return out
}
