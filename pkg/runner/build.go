package runner

import (
	"bufio"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/atomicfile"
	"github.com/imagegate/imagegate/pkg/zuul"
)

//go:embed plugins
var pluginFS embed.FS

// installPlugins writes the runner's Ansible plugins (zuul_return, the
// imagegate_node connection) under dir.
func installPlugins(dir string) error {
	return fs.WalkDir(pluginFS, "plugins", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, strings.TrimPrefix(p, "plugins"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := pluginFS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}

// Build results, as Zuul reports them.
const (
	Success     = "SUCCESS"
	Failure     = "FAILURE"
	PostFailure = "POST_FAILURE"
	RetryLimit  = "RETRY_LIMIT"
	TimedOut    = "TIMED_OUT"
	Skipped     = "SKIPPED"
	ErrorResult = "ERROR"
	Dequeued    = "DEQUEUED"
)

// PhaseReport is one playbook run of a build.
type PhaseReport struct {
	Phase    string        `json:"phase"`
	Playbook string        `json:"playbook"`
	Job      string        `json:"job"`
	Result   string        `json:"result"`
	Duration time.Duration `json:"duration"`
}

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
	red        *redactor

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

func (b *build) writeInventory() error {
	q := b.it.q
	hosts := map[string]any{}
	for _, n := range b.nodes() {
		hv := map[string]any{
			"ansible_host":               b.r.nodeAddress(q),
			"ansible_python_interpreter": firstNonEmpty(q.Node.Python, "/usr/bin/python3"),
			"nodepool": map[string]any{
				"label": n.Label, "interface_ip": b.r.nodeAddress(q), "private_ipv4": b.r.nodeAddress(q),
				"public_ipv4": nil, "provider": "imagegate-runner", "cloud": "local", "region": nil,
				"az": nil, "host_id": nil, "external_id": nil,
			},
		}
		switch q.Node.Connection {
		case "ssh":
			hv["ansible_connection"] = "ssh"
			if q.Node.User != "" {
				hv["ansible_user"] = q.Node.User
			}
			if q.Node.Port != 0 {
				hv["ansible_port"] = q.Node.Port
			}
			if q.Node.PrivateKey != "" {
				hv["ansible_ssh_private_key_file"] = q.Node.PrivateKey
			}
		default:
			hv["ansible_connection"] = "imagegate_node"
			hv["imagegate_node_home"] = filepath.Join(b.dir, "nodes", n.Name)
		}
		for k, v := range b.job.HostVars[n.Name] {
			hv[k] = v
		}
		hosts[n.Name] = hv
	}
	vars := deepMerge(b.parentData, b.it.projectVars)
	vars = deepMerge(vars, b.job.Vars)
	children := map[string]any{"zuul_unreachable": map[string]any{"hosts": map[string]any{}}}
	for _, g := range b.job.Nodeset.Groups {
		gh := map[string]any{}
		for _, n := range g.Nodes {
			gh[n] = map[string]any{}
		}
		children[g.Name] = map[string]any{"hosts": gh, "vars": b.job.GroupVars[g.Name]}
	}
	inv := map[string]any{"all": map[string]any{"hosts": hosts, "vars": vars, "children": children}}
	if err := writeYAML(b.inventoryFile, inv, 0o600); err != nil {
		return err
	}
	// secret_data of parent jobs: an inventory source read before the
	// main one, so every other variable of the same name wins, and kept
	// out of the inventory file that stays with the build.
	return writeYAML(b.secretInv, map[string]any{"all": map[string]any{"vars": b.parentSecret}}, 0o600)
}

// writeConfig writes ansible.cfg. SSH checks host keys strictly against
// node.known-hosts when the queue gives it; otherwise it accepts any host
// key and records none (UserKnownHostsFile=/dev/null), so the runner never
// writes the user's ~/.ssh/known_hosts.
func (b *build) writeConfig() error {
	checking, hostKeys := "False", "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
	if kh := b.it.q.Node.KnownHosts; kh != "" {
		checking, hostKeys = "True", "-o UserKnownHostsFile="+kh+" -o StrictHostKeyChecking=yes"
	}
	cfg := fmt.Sprintf(`[defaults]
action_plugins = %[1]s/action
connection_plugins = %[1]s/connection
host_key_checking = %[3]s
retry_files_enabled = False
interpreter_python = auto_silent
nocows = True
forks = 10
localhost_warning = False
inventory_unparsed_warning = False
deprecation_warnings = False
local_tmp = %[2]s/tmp
stdout_callback = default
gathering = implicit

[ssh_connection]
pipelining = True
control_path_dir = %[5]s
ssh_args = -o ControlMaster=auto -o ControlPersist=60s %[4]s
`, b.r.pluginDir, b.ansibleDir, checking, hostKeys, b.controlDir)
	return os.WriteFile(filepath.Join(b.ansibleDir, "ansible.cfg"), []byte(cfg), 0o600)
}

// zuulVars is the zuul variable of this build, plus the job's extra-vars.
func (b *build) zuulVars() map[string]any {
	it := b.it
	c := it.change
	z := map[string]any{
		"build":           b.uuid,
		"buildset":        it.buildset,
		"pipeline":        c.Pipeline,
		"post_review":     it.q.postReview(c.Pipeline),
		"job":             b.job.Name,
		"voting":          b.job.Voting,
		"attempts":        b.jr.attempt,
		"max_attempts":    b.jr.maxAttempts,
		"tenant":          it.q.Tenant,
		"event_id":        it.eventID,
		"ansible_version": "2.14",
		"jobtags":         []any{},
		"timeout":         int(b.job.Timeout / time.Second),
		"post_timeout":    int(b.job.PostTimeout / time.Second),
		"child_jobs":      b.jr.childJobNames(),
		"executor": map[string]any{
			"hostname":         b.r.hostname,
			"src_root":         b.srcRoot,
			"log_root":         b.logs,
			"work_root":        b.work,
			"result_data_file": b.resultFile,
			"inventory_file":   b.inventoryFile,
		},
	}
	for k, v := range it.refVars(it) {
		z[k] = v
	}
	projects := map[string]any{}
	for _, p := range it.projectList() {
		pv := p.vars()
		pv["required"] = p.Required
		pv["checkout"] = c.Branch
		pv["commit"] = p.Commit
		projects[p.Canonical] = pv
	}
	z["projects"] = projects
	var items []any
	for _, a := range it.ahead {
		items = append(items, a.refVars(a))
	}
	items = append(items, it.refVars(it))
	z["items"] = items
	z["buildset_refs"] = []any{it.refVars(it)}
	z["build_refs"] = []any{it.refVars(it)}
	if len(b.artifacts) > 0 {
		arts := make([]any, len(b.artifacts))
		for i, a := range b.artifacts {
			arts[i] = a
		}
		z["artifacts"] = arts
	}
	return z
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
		b.red.addSecret(k, v)
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
	out := b.red.writer(io.MultiWriter(lockedWriter{&b.logMu, b.logFile}, tail, b.r.streamFor(b)))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := runKillingGroup(ctx, cmd)
	out.Flush()
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
		b.red.addSecret("", secret)
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
			_ = atomicfile.WriteFile(path, []byte(b.red.redact(string(raw))), 0o600)
		}
	}
}

var fatalRE = regexp.MustCompile(`^(fatal|failed): \[([^\]]+)\].*?=> (\{.*\})\s*$`)
var taskRE = regexp.MustCompile(`^TASK \[(.*)\]`)

// failureSummary extracts the failing task and its msg from ansible's
// output, so the summary says what to fix without opening the log.
func failureSummary(lines []string, err error) string {
	task := ""
	for _, l := range lines {
		if m := taskRE.FindStringSubmatch(l); m != nil {
			task = m[1]
		}
		if m := fatalRE.FindStringSubmatch(l); m != nil {
			var res map[string]any
			msg := ""
			if json.Unmarshal([]byte(m[3]), &res) == nil {
				msg, _ = res["msg"].(string)
				if msg == "" {
					if r, ok := res["reason"].(string); ok {
						msg = r
					}
				}
			}
			if msg == "" {
				msg = "the task failed (see the job log)"
			}
			msg = strings.Join(strings.Fields(msg), " ")
			if task != "" {
				return fmt.Sprintf("task %q on %s failed: %s", task, m[2], msg)
			}
			return fmt.Sprintf("%s failed: %s", m[2], msg)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "ERROR!") {
			return strings.TrimSpace(l)
		}
	}
	if err != nil {
		return fmt.Sprintf("ansible-playbook: %v (see the job log)", err)
	}
	return "failed (see the job log)"
}

// tailWriter keeps the last max lines written to it.
type tailWriter struct {
	mu   sync.Mutex
	max  int
	buf  []string
	part string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.buf = append(t.buf, parts[:len(parts)-1]...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(append([]string{}, t.buf...), t.part)
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

// writeYAML writes v as YAML with the given mode, atomically.
func writeYAML(path string, v any, mode os.FileMode) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, mode)
}

// writeVarsYAML writes the extra variables; the change message is tagged
// !unsafe (as Zuul does) so Ansible never templates what a change author
// wrote.
func writeVarsYAML(path string, vars map[string]any, message string) error {
	var doc yaml.Node
	if err := doc.Encode(vars); err != nil {
		return err
	}
	if z := mappingValue(&doc, "zuul"); z != nil && message != "" {
		for _, key := range []string{"change_message"} {
			z.Content = append(z.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: key},
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!unsafe", Value: message, Style: yaml.DoubleQuotedStyle})
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// redactor replaces secret values in everything the runner writes or prints.
type redactor struct {
	mu     sync.Mutex
	values map[string]bool
	list   []string
}

func newRedactor() *redactor { return &redactor{values: map[string]bool{}} }

var secretKeyRE = regexp.MustCompile(`(?i)pass|token|secret|private|api_?key|auth|credential`)

// addSecret records the secret strings of v: every string under a key that
// names a secret (password, token, ...), and every string of a job secret
// whose key says so. Short values are ignored so that "zuul" or a port
// number is not blanked out everywhere.
func (r *redactor) addSecret(key string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.walk(key, v, false)
	sort.Slice(r.list, func(i, j int) bool { return len(r.list[i]) > len(r.list[j]) })
}

func (r *redactor) walk(key string, v any, secret bool) {
	secret = secret || secretKeyRE.MatchString(key)
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			r.walk(k, e, secret)
		}
	case []any:
		for _, e := range x {
			r.walk(key, e, secret)
		}
	case string:
		if secret && len(x) >= 6 && !r.values[x] {
			r.values[x] = true
			r.list = append(r.list, x)
		}
	}
}

func (r *redactor) redact(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.list {
		s = strings.ReplaceAll(s, v, "********")
	}
	return s
}

// writer returns a line-buffered writer that redacts before writing to w,
// so a secret split across two writes is still caught.
func (r *redactor) writer(w io.Writer) *redactWriter {
	return &redactWriter{r: r, w: bufio.NewWriter(w), out: w}
}

type redactWriter struct {
	mu   sync.Mutex
	r    *redactor
	w    *bufio.Writer
	out  io.Writer
	part string
}

func (rw *redactWriter) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	s := rw.part + string(p)
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		rw.part = s
		return len(p), nil
	}
	rw.part = s[i+1:]
	if _, err := rw.w.WriteString(rw.r.redact(s[:i+1])); err != nil {
		return 0, err
	}
	return len(p), rw.w.Flush()
}

// Flush writes what is left without a final newline.
func (rw *redactWriter) Flush() {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.part != "" {
		_, _ = rw.w.WriteString(rw.r.redact(rw.part) + "\n")
		rw.part = ""
	}
	_ = rw.w.Flush()
}
