package runner

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Queue is a queue file: the changes to run, in order, and what a Zuul
// deployment would otherwise provide (tenant, pipelines, site secrets, the
// node). See docs/runner.md for the format.
type Queue struct {
	Tenant string `yaml:"tenant"`
	// Pipeline is the default pipeline of the changes.
	Pipeline string `yaml:"pipeline"`
	// Pipelines configures pipelines by name; a pipeline not listed is
	// dependent when named gate, independent otherwise.
	Pipelines map[string]PipelineConfig `yaml:"pipelines"`
	// CanonicalHostname is the host part of canonical project names.
	CanonicalHostname string `yaml:"canonical-hostname"`
	// ChangeURL is the change URL pattern; {change} and {project} are
	// replaced.
	ChangeURL string `yaml:"change-url"`
	// Config lists configuration projects besides the change's own:
	// directories holding zuul.d/, playbooks/ and roles/.
	Config []ConfigRef `yaml:"config"`
	// Secrets are the site's secret definitions by name, in plain text:
	// the runner cannot decrypt Zuul's encrypted secrets.
	Secrets map[string]map[string]any `yaml:"secrets"`
	// Projects are other projects' sources, by name, for
	// required-projects.
	Projects map[string]string `yaml:"projects"`
	// Node says how nodes of a nodeset are reached.
	Node NodeConfig `yaml:"node"`
	// Nodeset is the nodeset of jobs whose inheritance chain sets none
	// (a Zuul site sets it on its base job): a nodeset name or
	// {nodes: [...], groups: [...]}. Default: no nodes.
	Nodeset yaml.Node `yaml:"nodeset"`
	// Changes are the queue items, in order.
	Changes []*Change `yaml:"changes"`

	// Dir is the directory relative paths are resolved against.
	Dir string `yaml:"-"`
}

// PipelineConfig is the part of a Zuul pipeline the runner uses.
type PipelineConfig struct {
	// Manager is dependent (items ahead in the same pipeline are part of
	// the speculative state, as in gate) or independent (only depends-on).
	Manager    string `yaml:"manager"`
	PostReview bool   `yaml:"post-review"`
}

// ConfigRef names a configuration project.
type ConfigRef struct {
	Project string `yaml:"project"`
	Path    string `yaml:"path"`
}

// NodeConfig says how the runner reaches the node(s) of a nodeset. Every
// node is this machine.
type NodeConfig struct {
	// Connection is imagegate_node (default: this machine, commands run
	// with a private home directory per node) or ssh.
	Connection string `yaml:"connection"`
	// Address is the node's ansible_host; default: this machine's first
	// non-loopback IPv4 address.
	Address string `yaml:"address"`
	// User, Port and PrivateKey are the SSH settings.
	User       string `yaml:"user"`
	Port       int    `yaml:"port"`
	PrivateKey string `yaml:"private-key"`
	// KnownHosts is an OpenSSH known_hosts file holding the node's host
	// key: with it, ssh checks the key strictly (StrictHostKeyChecking=yes)
	// and refuses a node whose key it does not hold. Without it, ssh
	// accepts any host key and records none.
	KnownHosts string `yaml:"known-hosts"`
	// Python is ansible_python_interpreter on the node.
	Python string `yaml:"python"`
}

// checkKnownHosts checks node.known-hosts, made absolute.
func (n *NodeConfig) checkKnownHosts() error {
	path := n.KnownHosts
	if path == "" {
		return nil
	}
	if n.Connection != "ssh" {
		return fmt.Errorf("queue file: node.known-hosts is for connection ssh (node.connection is %s)", n.Connection)
	}
	// ssh reads UserKnownHostsFile as a list of files separated by spaces,
	// with %-tokens; ansible.cfg interpolates %.
	if strings.ContainsAny(path, " \t\n\"'\\%") {
		return fmt.Errorf("queue file: node.known-hosts %q: the path must not hold spaces, quotes, backslashes or %%", path)
	}
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("queue file: node.known-hosts %s is not a file: give a known_hosts file holding the node's host key", path)
	}
	return nil
}

// Change is one queue item: a change (or, without a change number, a
// branch tip) of a project, and the jobs to run for it.
type Change struct {
	Project string `yaml:"project"`
	// Change is the change number; 0 for a branch item (periodic or
	// post-merge pipelines).
	Change   int    `yaml:"change"`
	Patchset int    `yaml:"patchset"`
	Branch   string `yaml:"branch"`
	// Src is the project's source: a git repository (its committed state
	// at Checkout is used) or a plain directory (copied as it is).
	Src      string `yaml:"src"`
	Checkout string `yaml:"checkout"`
	// DependsOn lists change numbers this change depends on; they must be
	// earlier in the queue.
	DependsOn []int  `yaml:"depends-on"`
	Pipeline  string `yaml:"pipeline"`
	Message   string `yaml:"message"`
	// Vars are project variables for every job of the change.
	Vars map[string]any `yaml:"vars"`
	// Jobs is the job list (as in a project pipeline); when empty, the
	// project stanza's list for the pipeline is used.
	Jobs yaml.Node `yaml:"jobs"`
}

// LoadQueue reads and checks a queue file.
func LoadQueue(path string) (*Queue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading queue file: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return ParseQueue(b, filepath.Dir(abs))
}

// ParseQueue parses a queue file's content; relative paths are resolved
// against dir.
func ParseQueue(content []byte, dir string) (*Queue, error) {
	var q Queue
	dec := yaml.NewDecoder(bytes.NewReader(content))
	dec.KnownFields(true)
	if err := dec.Decode(&q); err != nil {
		return nil, fmt.Errorf("queue file: %w", err)
	}
	q.Dir = dir
	if err := q.normalize(); err != nil {
		return nil, err
	}
	return &q, nil
}

// abs makes a path of the queue file absolute: "~" and "~/..." are in
// the home directory of the user running the runner (as a shell would
// expand them), other relative paths relative to the queue file.
func (q *Queue) abs(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(q.Dir, p)
}

func (q *Queue) normalize() error {
	if q.Tenant == "" {
		q.Tenant = "local"
	}
	if q.Pipeline == "" {
		q.Pipeline = "check"
	}
	if q.CanonicalHostname == "" {
		q.CanonicalHostname = "review.example.org"
	}
	if q.ChangeURL == "" {
		q.ChangeURL = "https://" + q.CanonicalHostname + "/c/{project}/+/{change}"
	}
	for i := range q.Config {
		if q.Config[i].Path == "" {
			return fmt.Errorf("queue file: config[%d]: path is required", i)
		}
		q.Config[i].Path = q.abs(q.Config[i].Path)
		if q.Config[i].Project == "" {
			q.Config[i].Project = filepath.Base(q.Config[i].Path)
		}
	}
	for name, p := range q.Projects {
		q.Projects[name] = q.abs(p)
	}
	switch q.Node.Connection {
	case "":
		q.Node.Connection = "imagegate_node"
	case "imagegate_node", "ssh":
	default:
		return fmt.Errorf("queue file: node.connection %q: use imagegate_node or ssh", q.Node.Connection)
	}
	q.Node.PrivateKey = q.abs(q.Node.PrivateKey)
	q.Node.KnownHosts = q.abs(q.Node.KnownHosts)
	if err := q.Node.checkKnownHosts(); err != nil {
		return err
	}
	for name, p := range q.Pipelines {
		switch p.Manager {
		case "dependent", "independent":
		case "":
			p.Manager = defaultManager(name)
		default:
			return fmt.Errorf("queue file: pipelines.%s.manager %q: use dependent or independent", name, p.Manager)
		}
		q.Pipelines[name] = p
	}
	if len(q.Changes) == 0 {
		return fmt.Errorf("queue file: changes is empty: list at least one change")
	}
	seen := map[int]bool{}
	for i, c := range q.Changes {
		at := fmt.Sprintf("queue file: changes[%d]", i)
		if c.Project == "" {
			return fmt.Errorf("%s: project is required (org/name)", at)
		}
		if c.Src == "" {
			return fmt.Errorf("%s (%s): src is required: the project's source directory", at, c.Project)
		}
		c.Src = q.abs(c.Src)
		if st, err := os.Stat(c.Src); err != nil || !st.IsDir() {
			return fmt.Errorf("%s (%s): src %s is not a directory", at, c.Project, c.Src)
		}
		if c.Change < 0 || c.Patchset < 0 {
			return fmt.Errorf("%s (%s): change and patchset must be positive", at, c.Project)
		}
		if c.Change > 0 && c.Patchset == 0 {
			c.Patchset = 1
		}
		if c.Branch == "" {
			c.Branch = "master"
		}
		if c.Pipeline == "" {
			c.Pipeline = q.Pipeline
		}
		for _, d := range c.DependsOn {
			if !seen[d] {
				return fmt.Errorf("%s (%s): depends-on %d: that change must appear earlier in the queue", at, c.Project, d)
			}
		}
		if c.Change > 0 {
			seen[c.Change] = true
		}
	}
	return nil
}

func defaultManager(pipeline string) string {
	if pipeline == "gate" {
		return "dependent"
	}
	return "independent"
}

// manager returns the pipeline manager of a pipeline.
func (q *Queue) manager(pipeline string) string {
	if p, ok := q.Pipelines[pipeline]; ok {
		return p.Manager
	}
	return defaultManager(pipeline)
}

func (q *Queue) postReview(pipeline string) bool {
	if p, ok := q.Pipelines[pipeline]; ok {
		return p.PostReview
	}
	switch pipeline {
	case "gate", "promote", "post", "release", "tag", "periodic", "deploy":
		return true
	}
	return false
}

// canonical returns the canonical name of a project: the name itself when
// its first component is a host name, else <canonical-hostname>/<name>.
func (q *Queue) canonical(project string) (host, name string) {
	first, rest, ok := strings.Cut(project, "/")
	if ok && strings.Contains(first, ".") {
		return first, rest
	}
	return q.CanonicalHostname, project
}

// changeURL returns the change URL of a change.
func (q *Queue) changeURL(c *Change) string {
	_, name := q.canonical(c.Project)
	u := strings.ReplaceAll(q.ChangeURL, "{project}", name)
	return strings.ReplaceAll(u, "{change}", fmt.Sprint(c.Change))
}
