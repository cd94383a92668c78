package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The Runner, its options, and the run of a queue: items one after
// another, each with the items ahead of it.

// Runner runs queues of changes. Create it with New.
type Runner struct {
	ansiblePlaybook string
	ansibleArgs     []string
	workDir         string
	pluginDir       string
	concurrency     int
	maxAttempts     int
	log             *slog.Logger
	progress        io.Writer
	stream          io.Writer
	sources         []*Source
	env             []string
	hostname        string
	nodeAddr        string
	itemDone        func(*ItemReport)
	outMu           sync.Mutex
	history         BuildHistory
}

// Builds is the history of the builds of every item this Runner has
// finished, which BuildHistory.BuildsHandler serves as Zuul's builds API.
func (r *Runner) Builds() *BuildHistory { return &r.history }

// Option configures a Runner.
type Option func(*Runner) error

// WithWorkDir sets the directory that holds the build directories
// (builds/<uuid>/{ansible,work}). Default: a new directory under the
// system temporary directory. It is created with mode 0700.
func WithWorkDir(dir string) Option {
	return func(r *Runner) error {
		if dir == "" {
			return errors.New("work directory is empty")
		}
		r.workDir = dir
		return nil
	}
}

// WithConfig adds configuration projects (directories with zuul.d/,
// playbooks/ and roles/), such as the imagegate release tree. Default: none
// besides those of the queue file.
func WithConfig(srcs ...*Source) Option {
	return func(r *Runner) error {
		for _, s := range srcs {
			if s.Project == "" || s.Root == "" {
				return fmt.Errorf("config project needs a name and a root directory (%+v)", *s)
			}
			if st, err := os.Stat(s.Root); err != nil || !st.IsDir() {
				return fmt.Errorf("config project %s: %s is not a directory", s.Project, s.Root)
			}
			r.sources = append(r.sources, s)
		}
		return nil
	}
}

// WithAnsiblePlaybook sets the ansible-playbook executable. Default:
// ansible-playbook from PATH.
func WithAnsiblePlaybook(path string) Option {
	return func(r *Runner) error { r.ansiblePlaybook = path; return nil }
}

// WithAnsibleArgs adds arguments to every ansible-playbook run (for example
// -v). Default: none.
func WithAnsibleArgs(args ...string) Option {
	return func(r *Runner) error { r.ansibleArgs = append(r.ansibleArgs, args...); return nil }
}

// WithEnv adds environment variables (KEY=value) to every ansible-playbook
// run. Default: the runner's own environment only.
func WithEnv(env ...string) Option {
	return func(r *Runner) error {
		for _, e := range env {
			if !strings.Contains(e, "=") {
				return fmt.Errorf("environment entry %q is not KEY=value", e)
			}
		}
		r.env = append(r.env, env...)
		return nil
	}
}

// WithConcurrency sets how many builds of one change run at once.
// Default: 1, which keeps the output readable and the machine calm.
func WithConcurrency(n int) Option {
	return func(r *Runner) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d: must be at least 1", n)
		}
		r.concurrency = n
		return nil
	}
}

// WithMaxAttempts caps job.attempts (Zuul retries a job whose pre-run
// failed). Default: 1, so a pre-run failure is reported at once.
func WithMaxAttempts(n int) Option {
	return func(r *Runner) error {
		if n < 1 {
			return fmt.Errorf("max attempts %d: must be at least 1", n)
		}
		r.maxAttempts = n
		return nil
	}
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(r *Runner) error { r.log = l; return nil }
}

// WithProgress sets where one line per build start and end is written.
// Default: nowhere.
func WithProgress(w io.Writer) Option {
	return func(r *Runner) error { r.progress = w; return nil }
}

// WithStream sets where ansible-playbook output is copied live (redacted),
// besides each build's job-output.txt. Default: nowhere.
func WithStream(w io.Writer) Option {
	return func(r *Runner) error { r.stream = w; return nil }
}

// WithNodeAddress sets the default ansible_host of nodes. Default: this
// machine's first non-loopback IPv4 address, or 127.0.0.1.
func WithNodeAddress(addr string) Option {
	return func(r *Runner) error {
		if net.ParseIP(addr) == nil {
			return fmt.Errorf("node address %q is not an IP address", addr)
		}
		r.nodeAddr = addr
		return nil
	}
}

// WithItemDone sets a function called after each queue item, with its
// report, before the next item starts (to report progress, or to change
// the world between items in a test). Default: none.
func WithItemDone(f func(*ItemReport)) Option {
	return func(r *Runner) error { r.itemDone = f; return nil }
}

// New returns a Runner.
func New(opts ...Option) (*Runner, error) {
	r := &Runner{ansiblePlaybook: "ansible-playbook", concurrency: 1, maxAttempts: 1,
		log: slog.New(slog.DiscardHandler), progress: io.Discard}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	if r.workDir == "" {
		d, err := os.MkdirTemp("", "imagegate-runner-")
		if err != nil {
			return nil, err
		}
		r.workDir = d
	}
	abs, err := filepath.Abs(r.workDir)
	if err != nil {
		return nil, err
	}
	r.workDir = abs
	if err := os.MkdirAll(r.workDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating work directory: %w", err)
	}
	if err := os.Chmod(r.workDir, 0o700); err != nil {
		return nil, err
	}
	if p, err := exec.LookPath(r.ansiblePlaybook); err != nil {
		return nil, fmt.Errorf("ansible-playbook not found (%s): install ansible-core", r.ansiblePlaybook)
	} else {
		r.ansiblePlaybook = p
	}
	r.pluginDir = filepath.Join(r.workDir, "plugins")
	if err := installPlugins(r.pluginDir); err != nil {
		return nil, fmt.Errorf("installing the runner's ansible plugins: %w", err)
	}
	r.hostname, _ = os.Hostname()
	if r.nodeAddr == "" {
		r.nodeAddr = localIPv4()
	}
	return r, nil
}

// WorkDir is the directory holding the build directories.
func (r *Runner) WorkDir() string { return r.workDir }

func localIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

func (r *Runner) nodeAddress(q *Queue) string {
	if q.Node.Address != "" {
		return q.Node.Address
	}
	return r.nodeAddr
}

// streamFor returns where a build's ansible output is copied live; builds
// running at once share it under the runner's output lock.
func (r *Runner) streamFor(*build) io.Writer {
	if r.stream == nil {
		return io.Discard
	}
	return lockedWriter{&r.outMu, r.stream}
}

func (r *Runner) progressf(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.progress, format+"\n", args...)
}

func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b)
}

// Run runs every change of the queue, in order, and reports what happened.
// The error is for failures of the runner itself; job failures are in the
// report.
func (r *Runner) Run(ctx context.Context, q *Queue) (*Report, error) {
	rep := &Report{Started: time.Now(), WorkDir: r.workDir}
	var done []*itemRun
	for i, c := range q.Changes {
		it := &itemRun{idx: i, q: q, change: c, buildset: newUUID(), eventID: newUUID()}
		it.report = &ItemReport{Project: c.Project, Change: c.Change, Patchset: c.Patchset, Pipeline: c.Pipeline, Buildset: it.buildset}
		rep.Items = append(rep.Items, it.report)
		r.progressf("== %s", it.report.Title())
		if msg := r.selectAhead(it, done); msg != "" {
			it.report.Result, it.report.Message = Dequeued, msg
			r.progressf("   %s: %s", Dequeued, msg)
			done = append(done, it)
			continue
		}
		if err := r.prepareItem(it); err != nil {
			if errors.Is(err, ErrConfig) {
				it.report.Result, it.report.Message = ErrorResult, err.Error()
				r.progressf("   %s: %v", ErrorResult, err)
				done = append(done, it)
				continue
			}
			return rep, err
		}
		if err := r.runBuildset(ctx, it); err != nil {
			return rep, err
		}
		it.report.Result = Success
		for _, b := range it.report.Builds {
			if b.Voting && b.Result != Success && b.Result != Skipped {
				it.report.Result = Failure
			}
		}
		done = append(done, it)
		r.history.record(it)
		if r.itemDone != nil {
			r.itemDone(it.report)
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

// selectAhead finds the items ahead of it: the changes it depends on
// (transitively) and, in a dependent pipeline, every earlier item of the
// same pipeline that did not fail. It returns a reason to dequeue the item
// when a change it depends on failed in a dependent pipeline.
func (r *Runner) selectAhead(it *itemRun, done []*itemRun) string {
	latest := map[int]*itemRun{}
	for _, d := range done {
		if d.change.Change > 0 {
			latest[d.change.Change] = d
		}
	}
	want := map[*itemRun]bool{}
	var visit func(deps []int)
	visit = func(deps []int) {
		for _, n := range deps {
			d := latest[n]
			if d == nil || want[d] {
				continue
			}
			want[d] = true
			visit(d.change.DependsOn)
		}
	}
	visit(it.change.DependsOn)
	dependent := it.q.manager(it.change.Pipeline) == "dependent"
	for _, d := range done {
		failed := d.report.Result != Success
		if want[d] && failed && dependent {
			return fmt.Sprintf("it depends on change %d, which failed ahead of it in the %s pipeline (%s)", d.change.Change, it.change.Pipeline, d.report.Result)
		}
		if dependent && d.change.Pipeline == it.change.Pipeline && !failed {
			want[d] = true
		}
	}
	for _, d := range done {
		if want[d] {
			it.ahead = append(it.ahead, d)
		}
	}
	return ""
}
