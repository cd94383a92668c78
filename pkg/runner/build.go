package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/atomicfile"
	"github.com/imagegate/imagegate/pkg/redact"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Executing one build, as Zuul's executor does: the build directory, each
// playbook as one ansible-playbook run in its own process group (output
// redacted into the job log and the stream), the pre-run, run and post-run
// phases with retries and timeouts, results.json, and the scrubbing of
// secrets when the build ends.

// build is one attempt of one job for one change.
type build struct {
	r    *Runner
	it   *itemRun
	jr   *jobRun
	job  *FrozenJob
	uuid string

	dir, ansibleDir, work, logs, srcRoot string
	resultFile, inventoryFile, secretInv string
	// controlDir holds the ssh control sockets of the build (ssh nodes
	// only): a short path, as a socket's must fit in 108 bytes.
	controlDir string
	logFile    *os.File
	logMu      sync.Mutex
	// red holds the secrets of the build: its playbooks' secrets and the
	// secret_data it received or returned.
	red *redact.Set

	parentData, parentSecret map[string]any
	artifacts                []map[string]any

	preLevel int // deepest inheritance level whose pre-run was started
	preFail  bool
	runOK    bool
	result   string
	message  string
	phases   []PhaseReport
	seq      int
}

func (b *build) logf(format string, args ...any) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Fprintf(b.logFile, format+"\n", args...)
}

// setup creates the build directory as Zuul's executor does: a 0700 job
// directory, work/ with the prepared sources, logs/ and an empty
// results.json, and ansible/ with the inventory and configuration.
func (b *build) setup() error {
	b.dir = filepath.Join(b.r.workDir, "builds", b.uuid)
	b.ansibleDir = filepath.Join(b.dir, "ansible")
	b.work = filepath.Join(b.dir, "work")
	b.logs = filepath.Join(b.work, "logs")
	b.srcRoot = filepath.Join(b.work, "src")
	b.resultFile = filepath.Join(b.work, "results.json")
	b.inventoryFile = filepath.Join(b.ansibleDir, "inventory.yaml")
	b.secretInv = filepath.Join(b.ansibleDir, "secrets", "parent-secret-data.yaml")
	for _, d := range []string{b.dir, b.ansibleDir, filepath.Join(b.ansibleDir, "secrets"), filepath.Join(b.ansibleDir, "tmp"), b.work, b.logs, b.srcRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(b.dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(b.logs, "job-output.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	b.logFile = f
	if err := os.WriteFile(b.resultFile, nil, 0o600); err != nil {
		return err
	}
	for _, p := range b.it.projectList() {
		if err := zuul.CopySource(p.Path, filepath.Join(b.srcRoot, p.Canonical)); err != nil {
			return fmt.Errorf("preparing %s: %w", p.Canonical, err)
		}
	}
	if err := b.writeInventory(); err != nil {
		return err
	}
	b.controlDir = filepath.Join(b.ansibleDir, "cp")
	if b.it.q.Node.Connection == "ssh" {
		if b.controlDir, err = os.MkdirTemp("", "imagegate-ssh-"); err != nil {
			return fmt.Errorf("creating the ssh control directory: %w", err)
		}
	}
	return b.writeConfig()
}

func (b *build) nodes() []Node {
	return b.job.Nodeset.Nodes
}

// runPlaybook runs one playbook with ansible-playbook and reports whether
// it succeeded. Secrets reach ansible-playbook as an extra-vars file that
// exists only while it runs.
func (b *build) runPlaybook(ctx context.Context, phase string, pb Playbook) (bool, error) {
	b.seq++
	start := time.Now()
	secretsFile := filepath.Join(b.ansibleDir, "secrets", fmt.Sprintf("playbook-%d.yaml", b.seq))
	secrets := map[string]any{}
	for k, v := range pb.Secrets {
		secrets[k] = v
		b.red.AddTree(k, v)
	}
	if err := writeYAML(secretsFile, secrets, 0o600); err != nil {
		return false, err
	}
	defer os.Remove(secretsFile)
	varsFile := filepath.Join(b.ansibleDir, fmt.Sprintf("vars-%d.yaml", b.seq))
	vars := deepMerge(b.job.ExtraVars, map[string]any{
		"zuul":                  b.zuulVars(),
		"zuul_execution_phase":  phase,
		"zuul_execution_branch": b.it.change.Branch,
	})
	if phase == "post" || phase == "cleanup" {
		vars["zuul_success"] = b.runOK
		vars["zuul_will_retry"] = false
	}
	if err := writeVarsYAML(varsFile, vars, b.it.change.Message); err != nil {
		return false, err
	}
	args := []string{"-i", b.secretInv, "-i", b.inventoryFile, "-e", "@" + secretsFile, "-e", "@" + varsFile}
	args = append(args, b.r.ansibleArgs...)
	args = append(args, pb.Path)
	cmd := exec.Command(b.r.ansiblePlaybook, args...)
	cmd.Dir = b.work
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(b.ansibleDir, "ansible.cfg"),
		"ANSIBLE_ROLES_PATH="+strings.Join(pb.RoleDirs, ":"),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "PYTHONUNBUFFERED=1",
		"ZUUL_RESULT_DATA_FILE="+b.resultFile,
	)
	cmd.Env = append(cmd.Env, b.r.env...)
	b.logf("\n%s | %s %s (job %s, project %s)", time.Now().Format(time.RFC3339), phase, pb.Name, pb.Job, pb.Source.Project)
	tail := &tailWriter{max: 60}
	out := b.red.Writer(io.MultiWriter(lockedWriter{&b.logMu, b.logFile}, tail, b.r.streamFor(b)))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := runKillingGroup(ctx, cmd)
	_ = out.Flush()
	b.refreshSecrets()
	res := Success
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res = TimedOut
		b.logf("%s | %s %s timed out", time.Now().Format(time.RFC3339), phase, pb.Name)
	case err != nil:
		res = Failure
	}
	b.phases = append(b.phases, PhaseReport{Phase: phase, Playbook: pb.Name, Job: pb.Job, Result: res, Duration: time.Since(start)})
	if res != Success && b.message == "" {
		b.message = fmt.Sprintf("%s playbook %s (job %s): %s", phase, pb.Name, pb.Job, failureSummary(tail.lines(), err))
		if res == TimedOut {
			b.message = fmt.Sprintf("%s playbook %s (job %s) timed out", phase, pb.Name, pb.Job)
		}
	}
	if res == TimedOut {
		return false, context.DeadlineExceeded
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return false, fmt.Errorf("running ansible-playbook: %w", err)
	}
	return res == Success, nil
}

// runKillingGroup runs cmd and, when ctx ends first, kills its whole
// process group (ansible-playbook forks workers).
func runKillingGroup(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return <-done
		}
	}
}

// prepareWorkspace copies the prepared repositories to every node's home
// directory (src/<canonical name>), as the base job of a Zuul deployment
// does, with a playbook run through the node's connection. The file module
// expands "~" on the node ($HOME); unarchive gets the path it created, as
// its action plugin would expand "~" itself, from the remote user's
// password entry.
func (b *build) prepareWorkspace(ctx context.Context) (bool, error) {
	if len(b.nodes()) == 0 {
		return true, nil
	}
	tarball := filepath.Join(b.ansibleDir, "src.tar")
	if err := tarTree(b.srcRoot, tarball); err != nil {
		return false, fmt.Errorf("packing sources: %w", err)
	}
	pbPath := filepath.Join(b.ansibleDir, "prepare-workspace.yaml")
	pb := fmt.Sprintf(`- hosts: all
  gather_facts: false
  tasks:
    - name: Create the source directory on the node
      ansible.builtin.file:
        path: "~/src"
        state: directory
        mode: "0755"
      register: zj_src_dir
    - name: Copy the prepared repositories to the node
      ansible.builtin.unarchive:
        src: %q
        dest: "{{ zj_src_dir.path }}"
`, tarball)
	if err := os.WriteFile(pbPath, []byte(pb), 0o600); err != nil {
		return false, err
	}
	return b.runPlaybook(ctx, "pre", Playbook{Name: "prepare-workspace (runner)", Path: pbPath, Job: "(runner)", Source: &Source{Project: "imagegate runner"}})
}

// closeConnections ends the build's SSH connections and removes their
// control directory: ControlPersist keeps each control master, and its
// connection to the node, for a minute after the last playbook, past the
// end of the build and of the runner.
func (b *build) closeConnections() {
	if b.it.q.Node.Connection != "ssh" || b.controlDir == "" {
		return
	}
	defer os.RemoveAll(b.controlDir)
	sockets, _ := filepath.Glob(filepath.Join(b.controlDir, "*"))
	for _, s := range sockets {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// -O exit talks to the master only; -F /dev/null keeps the user's
		// ssh configuration out of it. ssh expands % in the socket path.
		cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-S", strings.ReplaceAll(s, "%", "%%"), "-O", "exit", "node")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.r.log.Debug("closing an ssh control master", "build", b.uuid, "socket", s, "err", err, "output", strings.TrimSpace(string(out)))
		}
		cancel()
	}
}

// readResults reads results.json: the data and secret_data returned so far.
func (b *build) readResults() (data, secret map[string]any, err error) {
	raw, err := os.ReadFile(b.resultFile)
	if err != nil {
		return nil, nil, err
	}
	var doc struct {
		Data       map[string]any `json:"data"`
		SecretData map[string]any `json:"secret_data"`
	}
	if strings.TrimSpace(string(raw)) != "" {
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", b.resultFile, err)
		}
	}
	if doc.Data == nil {
		doc.Data = map[string]any{}
	}
	if doc.SecretData == nil {
		doc.SecretData = map[string]any{}
	}
	return doc.Data, doc.SecretData, nil
}

func (b *build) refreshSecrets() {
	_, secret, err := b.readResults()
	if err == nil {
		b.red.AddTree("", secret)
	}
}

// scrub removes what holds secrets from the build directory once the build
// is over: secret files, and secret_data in results.json (kept in memory for
// dependent jobs). The job log is redacted once more with every secret
// known by then.
func (b *build) scrub() {
	_ = os.RemoveAll(filepath.Join(b.ansibleDir, "secrets"))
	_ = os.Remove(filepath.Join(b.ansibleDir, "src.tar"))
	if data, _, err := b.readResults(); err == nil {
		doc := map[string]any{"data": data, "secret_data": map[string]any{}}
		if raw, err := json.MarshalIndent(doc, "", "  "); err == nil {
			_ = atomicfile.WriteFile(b.resultFile, raw, 0o600)
		}
	}
	_ = os.Remove(b.resultFile + ".lock")
	if b.logFile != nil {
		b.logFile.Close()
		path := filepath.Join(b.logs, "job-output.txt")
		if raw, err := os.ReadFile(path); err == nil {
			_ = atomicfile.WriteFile(path, []byte(b.red.String(string(raw))), 0o600)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// runMain runs a job's pre-run and run playbooks (with retries of pre-run
// failures up to its attempts) and leaves the build ready for its post-run.
func (r *Runner) runMain(ctx context.Context, jr *jobRun) error {
	it := jr.item
	data, secret, arts := jr.inputs()
	for attempt := 1; ; attempt++ {
		jr.attempt = attempt
		b := &build{r: r, it: it, jr: jr, job: jr.job, uuid: newUUID(), red: &redact.Set{},
			parentData: data, parentSecret: secret, artifacts: arts, preLevel: -1}
		b.red.AddTree("", secret)
		jr.b = b
		rep := jr.report
		rep.UUID, rep.Attempts = b.uuid, attempt
		if err := b.setup(); err != nil {
			return fmt.Errorf("setting up build %s of %s: %w", b.uuid, jr.name, err)
		}
		rep.Dir = b.dir
		rep.Log = b.logFile.Name()
		r.progressf("   %-40s started (build %s, attempt %d/%d)", jr.name, b.uuid[:12], attempt, jr.maxAttempts)

		mainCtx := ctx
		cancel := func() {}
		if jr.job.Timeout > 0 {
			mainCtx, cancel = context.WithTimeout(ctx, jr.job.Timeout)
		}
		err := b.runMainPhases(mainCtx)
		cancel()
		if err != nil {
			return err
		}
		if b.preFail && attempt < jr.maxAttempts && !b.noRetry() {
			r.progressf("   %-40s pre-run failed, retrying: %s", jr.name, b.message)
			if err := b.runPostPhases(ctx, true); err != nil {
				return err
			}
			b.closeConnections()
			b.scrub()
			continue
		}
		jr.data, jr.secret, err = b.readResults()
		if err != nil {
			b.message = err.Error()
			b.runOK = false
			jr.data, jr.secret = map[string]any{}, map[string]any{}
		}
		return nil
	}
}

// runMainPhases runs the workspace preparation, pre-run and run playbooks.
func (b *build) runMainPhases(ctx context.Context) error {
	ok, err := b.prepareWorkspace(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	if !ok {
		b.preFail = true
		return nil
	}
	for _, pb := range b.job.PreRun {
		b.preLevel = max(b.preLevel, pb.Level)
		ok, err := b.runPlaybook(ctx, "pre", pb)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if !ok {
			b.preFail = true
			if ctx.Err() != nil {
				b.result = TimedOut
			}
			return nil
		}
	}
	b.preLevel = len(b.job.Chain)
	for _, pb := range b.job.Run {
		ok, err := b.runPlaybook(ctx, "run", pb)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if !ok {
			if ctx.Err() != nil {
				b.result = TimedOut
			}
			return nil
		}
	}
	b.runOK = true
	return nil
}

// runPostPhases runs the post-run playbooks of the levels whose pre-run
// started (all of them once run started), then cleanup playbooks.
func (b *build) runPostPhases(ctx context.Context, willRetry bool) error {
	postFailed := false
	for _, pb := range b.job.PostRun {
		if pb.Level > b.preLevel {
			continue
		}
		pctx, cancel := ctx, func() {}
		if b.job.PostTimeout > 0 {
			pctx, cancel = context.WithTimeout(ctx, b.job.PostTimeout)
		}
		ok, err := b.runPlaybook(pctx, "post", pb)
		cancel()
		if err != nil && pctx.Err() == nil {
			return err
		}
		if !ok {
			postFailed = true
		}
	}
	for _, pb := range b.job.CleanupRun {
		if _, err := b.runPlaybook(ctx, "cleanup", pb); err != nil && ctx.Err() == nil {
			return err
		}
	}
	switch {
	case b.result == TimedOut:
	case b.preFail && b.noRetry():
		b.result = Failure
	case b.preFail && !willRetry:
		b.result = RetryLimit
	case b.preFail:
		b.result = Failure
	case !b.runOK:
		b.result = Failure
	case postFailed:
		b.result = PostFailure
	default:
		b.result = Success
	}
	return nil
}

// noRetry reports whether the job returned zuul.retry: false, which makes
// a pre-run failure final (FAILURE, not retried).
func (b *build) noRetry() bool {
	data, _, err := b.readResults()
	if err != nil {
		return false
	}
	z, _ := data["zuul"].(map[string]any)
	r, ok := z["retry"].(bool)
	return ok && !r
}

// runPost finishes a build: post-run and cleanup playbooks, the result, and
// the scrubbing of secrets from its directory.
func (r *Runner) runPost(ctx context.Context, jr *jobRun) error {
	b := jr.b
	err := b.runPostPhases(ctx, false)
	rep := jr.report
	data, _, rerr := b.readResults()
	if rerr == nil {
		rep.Data = data
	}
	b.closeConnections()
	b.scrub()
	rep.Result = b.result
	rep.Message = b.message
	if b.result == Success {
		rep.Message = ""
	}
	rep.Phases = append(rep.Phases, b.phases...)
	rep.Duration = time.Since(rep.Start)
	r.progressf("   %-40s %s in %s%s", jr.name, rep.Result, rep.Duration.Round(100*time.Millisecond), suffix(rep.Message))
	return err
}
