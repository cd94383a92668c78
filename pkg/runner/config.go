package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Source is a project whose Zuul configuration the runner loads: a config
// tree such as the imagegate release tree, or the repository of a change.
// Playbook paths of its jobs are relative to Root, and its roles/ directory
// is on the role path of those playbooks.
type Source struct {
	// Project is the project's name (org/name), used by job.roles and the
	// same-project rule of secrets.
	Project string
	// Root is the project's top directory.
	Root string
}

// PlaybookRef is one entry of pre-run, run, post-run or cleanup-run.
type PlaybookRef struct {
	Name    string
	Cleanup bool
}

// SecretRef is one entry of job.secrets.
type SecretRef struct {
	// Name is the variable name the playbooks see.
	Name string
	// Secret is the name of the secret definition.
	Secret       string
	PassToParent bool
}

// Dependency is one entry of job.dependencies.
type Dependency struct {
	Name string
	Soft bool
}

// Node is one node of a nodeset.
type Node struct {
	Name  string
	Label string
}

// Group is a group of nodes of a nodeset.
type Group struct {
	Name  string
	Nodes []string
}

// Nodeset is job.nodeset: the nodes a job gets. An empty nodeset means the
// job runs on the executor only (implicit localhost).
type Nodeset struct {
	Name   string
	Nodes  []Node
	Groups []Group
}

// JobDef is one job stanza (a definition or a variant), as written.
type JobDef struct {
	Name   string
	Source *Source
	// Pos is file:line of the stanza, for messages.
	Pos string

	Parent      *string // nil: not set; "": parent: null (a base job)
	Description string
	Abstract    bool
	Final       bool

	PreRun     []PlaybookRef
	Run        []PlaybookRef // nil when not set
	PostRun    []PlaybookRef
	CleanupRun []PlaybookRef

	Vars, ExtraVars                map[string]any
	VarsReplace, ExtraVarsReplace  bool
	HostVars, GroupVars            map[string]map[string]any
	Secrets                        []SecretRef
	Nodeset                        *Nodeset
	NodesetName                    string
	Dependencies                   []Dependency
	DependenciesSet                bool
	Requires, Provides             []string
	RequiresReplace, ProvReplace   bool
	Timeout, PostTimeout, Attempts int
	Voting                         *bool
	Roles                          []string // project names from roles: [{zuul: name}]
	RequiredProjects               []string
}

// SecretDef is a secret stanza.
type SecretDef struct {
	Name      string
	Source    *Source
	Pos       string
	Data      map[string]any
	Encrypted bool
}

// ProjectPipeline is the job list of one pipeline in a project stanza.
type ProjectPipeline struct {
	Jobs []*JobDef // each entry is a variant of the named job
}

// ProjectDef is a project (or project-template) stanza.
type ProjectDef struct {
	Name      string
	Source    *Source
	Pos       string
	Templates []string
	Vars      map[string]any
	Pipelines map[string]*ProjectPipeline
}

// Layout is the Zuul configuration loaded from every source.
type Layout struct {
	Jobs      map[string][]*JobDef
	Secrets   map[string]*SecretDef
	Nodesets  map[string]*Nodeset
	Projects  map[string][]*ProjectDef
	Templates map[string]*ProjectDef
	Sources   []*Source
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("zuul configuration error")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// ConfigFiles returns the Zuul configuration files of a project directory,
// in the order Zuul reads them: zuul.yaml, zuul.d/, .zuul.yaml, .zuul.d/
// (Zuul uses the first of these that exists).
func ConfigFiles(root string) ([]string, error) {
	for _, c := range []string{"zuul.yaml", "zuul.d", ".zuul.yaml", ".zuul.d"} {
		p := filepath.Join(root, c)
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !st.IsDir() {
			return []string{p}, nil
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		return files, nil
	}
	return nil, nil
}

// NewLayout returns an empty layout.
func NewLayout() *Layout {
	return &Layout{
		Jobs: map[string][]*JobDef{}, Secrets: map[string]*SecretDef{},
		Nodesets: map[string]*Nodeset{}, Projects: map[string][]*ProjectDef{},
		Templates: map[string]*ProjectDef{},
	}
}

// LoadSource reads the configuration of one source into the layout.
func (l *Layout) LoadSource(src *Source) error {
	files, err := ConfigFiles(src.Root)
	if err != nil {
		return fmt.Errorf("reading zuul configuration of %s: %w", src.Project, err)
	}
	l.Sources = append(l.Sources, src)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := l.Parse(src, f, b); err != nil {
			return err
		}
	}
	return nil
}

// Parse reads one configuration file's content into the layout.
func (l *Layout) Parse(src *Source, file string, content []byte) error {
	rel := file
	if r, err := filepath.Rel(src.Root, file); err == nil && !strings.HasPrefix(r, "..") {
		rel = filepath.Join(src.Project, r)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		return configErr("%s: %v", rel, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.SequenceNode {
		return configErr("%s:%d: a Zuul configuration file is a list of stanzas (- job: ..., - project: ...)", rel, top.Line)
	}
	for _, item := range top.Content {
		if item.Kind != yaml.MappingNode || len(item.Content) != 2 {
			return configErr("%s:%d: each stanza is a mapping with one key (job, secret, nodeset, project, project-template, ...)", rel, item.Line)
		}
		kind := item.Content[0].Value
		pos := fmt.Sprintf("%s:%d", rel, item.Line)
		body, err := plainValue(rel, item.Content[1])
		if err != nil {
			return configErr("%v", err)
		}
		m, ok := body.(map[string]any)
		if !ok {
			return configErr("%s: the %s stanza must be a mapping", pos, kind)
		}
		switch kind {
		case "job":
			j, err := parseJob(src, pos, m, true)
			if err != nil {
				return err
			}
			for _, other := range l.Jobs[j.Name] {
				if other.Source.Project != src.Project {
					return configErr("%s: job %s is already defined in project %s (%s); variants must be in the same project", pos, j.Name, other.Source.Project, other.Pos)
				}
			}
			l.Jobs[j.Name] = append(l.Jobs[j.Name], j)
		case "secret":
			s, err := parseSecret(src, pos, m)
			if err != nil {
				return err
			}
			l.Secrets[s.Name] = s
		case "nodeset":
			ns, err := parseNodeset(pos, m, true)
			if err != nil {
				return err
			}
			l.Nodesets[ns.Name] = ns
		case "project", "project-template":
			p, err := parseProject(src, pos, m, kind == "project-template")
			if err != nil {
				return err
			}
			if kind == "project-template" {
				l.Templates[p.Name] = p
			} else {
				l.Projects[p.Name] = append(l.Projects[p.Name], p)
			}
		case "pipeline", "semaphore", "queue", "pragma", "image", "flavor", "label", "section", "provider":
			// Tenant-level objects: the queue file decides pipelines.
		default:
			return configErr("%s: unknown stanza %q", pos, kind)
		}
	}
	return nil
}

// knownJobAttrs are accepted job attributes; those not listed in
// docs/runner.md as implemented are accepted and ignored.
var knownJobAttrs = map[string]bool{
	"name": true, "parent": true, "description": true, "abstract": true, "final": true,
	"protected": true, "intermediate": true, "pre-run": true, "run": true, "post-run": true,
	"cleanup-run": true, "vars": true, "extra-vars": true, "host-vars": true, "group-vars": true,
	"secrets": true, "nodeset": true, "dependencies": true, "requires": true, "provides": true,
	"timeout": true, "post-timeout": true, "pre-timeout": true, "attempts": true, "voting": true,
	"roles": true, "required-projects": true, "tags": true, "branches": true, "files": true,
	"irrelevant-files": true, "success-message": true, "failure-message": true,
	"success-url": true, "failure-url": true, "hold-following-changes": true, "semaphore": true,
	"semaphores": true, "override-checkout": true, "override-branch": true, "ansible-version": true,
	"allowed-projects": true, "post-review": true, "workspace-scheme": true,
	"match-on-config-updates": true, "include-vars": true, "attribute-control": true,
	"deduplicate": true, "ansible-split-streams": true, "image-build-name": true,
}

func parseJob(src *Source, pos string, m map[string]any, needName bool) (*JobDef, error) {
	j := &JobDef{Source: src, Pos: pos}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !knownJobAttrs[k] {
			return nil, configErr("%s: unknown job attribute %q", pos, k)
		}
	}
	name, _ := m["name"].(string)
	if needName && name == "" {
		return nil, configErr("%s: a job needs a name", pos)
	}
	j.Name = name
	at := func(attr string) string {
		if name != "" {
			return fmt.Sprintf("%s: job %s: %s", pos, name, attr)
		}
		return fmt.Sprintf("%s: %s", pos, attr)
	}
	var err error
	if v, ok := m["parent"]; ok {
		switch p := v.(type) {
		case nil:
			empty := ""
			j.Parent = &empty
		case string:
			j.Parent = &p
		default:
			return nil, configErr("%s must be a job name or null", at("parent"))
		}
	}
	j.Description, _ = m["description"].(string)
	j.Abstract, _ = m["abstract"].(bool)
	j.Final, _ = m["final"].(bool)
	if j.PreRun, err = playbookRefs(at("pre-run"), m["pre-run"]); err != nil {
		return nil, err
	}
	if v, ok := m["run"]; ok {
		if j.Run, err = playbookRefs(at("run"), v); err != nil {
			return nil, err
		}
		if j.Run == nil {
			j.Run = []PlaybookRef{}
		}
	}
	if j.PostRun, err = playbookRefs(at("post-run"), m["post-run"]); err != nil {
		return nil, err
	}
	if j.CleanupRun, err = playbookRefs(at("cleanup-run"), m["cleanup-run"]); err != nil {
		return nil, err
	}
	for _, pb := range j.PostRun {
		if pb.Cleanup {
			j.CleanupRun = append(j.CleanupRun, pb)
		}
	}
	if j.Vars, j.VarsReplace, err = varsAttr(at("vars"), m["vars"]); err != nil {
		return nil, err
	}
	if j.ExtraVars, j.ExtraVarsReplace, err = varsAttr(at("extra-vars"), m["extra-vars"]); err != nil {
		return nil, err
	}
	if j.HostVars, err = nestedVars(at("host-vars"), m["host-vars"]); err != nil {
		return nil, err
	}
	if j.GroupVars, err = nestedVars(at("group-vars"), m["group-vars"]); err != nil {
		return nil, err
	}
	if j.Secrets, err = secretRefs(at("secrets"), m["secrets"]); err != nil {
		return nil, err
	}
	if v, ok := m["nodeset"]; ok {
		switch ns := v.(type) {
		case string:
			j.NodesetName = ns
		case map[string]any:
			if j.Nodeset, err = parseNodeset(at("nodeset"), ns, false); err != nil {
				return nil, err
			}
		default:
			return nil, configErr("%s must be a nodeset name or a mapping with nodes", at("nodeset"))
		}
	}
	if v, ok := m["dependencies"]; ok {
		j.DependenciesSet = true
		if j.Dependencies, err = dependencies(at("dependencies"), v); err != nil {
			return nil, err
		}
	}
	if j.Requires, j.RequiresReplace, err = stringList(at("requires"), m["requires"]); err != nil {
		return nil, err
	}
	if j.Provides, j.ProvReplace, err = stringList(at("provides"), m["provides"]); err != nil {
		return nil, err
	}
	for attr, dst := range map[string]*int{"timeout": &j.Timeout, "post-timeout": &j.PostTimeout, "attempts": &j.Attempts} {
		if v, ok := m[attr]; ok {
			n, ok := v.(int)
			if !ok || n < 0 {
				return nil, configErr("%s must be a non-negative integer", at(attr))
			}
			*dst = n
		}
	}
	if v, ok := m["voting"]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, configErr("%s must be true or false", at("voting"))
		}
		j.Voting = &b
	}
	if v, ok := m["roles"]; ok {
		l, ok := v.([]any)
		if !ok {
			return nil, configErr("%s must be a list of {zuul: <project>}", at("roles"))
		}
		for _, e := range l {
			em, ok := e.(map[string]any)
			p, _ := em["zuul"].(string)
			if !ok || p == "" {
				return nil, configErr("%s: each entry needs zuul: <project> (galaxy roles are not supported)", at("roles"))
			}
			j.Roles = append(j.Roles, p)
		}
	}
	if v, ok := m["required-projects"]; ok {
		v, _ = unwrap(v)
		l, ok := v.([]any)
		if s, isStr := v.(string); isStr {
			l, ok = []any{s}, true
		}
		if !ok {
			return nil, configErr("%s must be a list", at("required-projects"))
		}
		for _, e := range l {
			switch x := e.(type) {
			case string:
				j.RequiredProjects = append(j.RequiredProjects, x)
			case map[string]any:
				n, _ := x["name"].(string)
				if n == "" {
					return nil, configErr("%s: each entry needs a name", at("required-projects"))
				}
				j.RequiredProjects = append(j.RequiredProjects, n)
			default:
				return nil, configErr("%s: entries are project names", at("required-projects"))
			}
		}
	}
	return j, nil
}

func playbookRefs(at string, v any) ([]PlaybookRef, error) {
	v, _ = unwrap(v)
	var refs []PlaybookRef
	add := func(e any) error {
		switch x := e.(type) {
		case string:
			refs = append(refs, PlaybookRef{Name: x})
		case map[string]any:
			n, _ := x["name"].(string)
			if n == "" {
				return configErr("%s: a playbook entry needs a name", at)
			}
			c, _ := x["cleanup"].(bool)
			refs = append(refs, PlaybookRef{Name: n, Cleanup: c})
		default:
			return configErr("%s: a playbook is a path or {name: path}", at)
		}
		return nil
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		for _, e := range x {
			if err := add(e); err != nil {
				return nil, err
			}
		}
	default:
		if err := add(x); err != nil {
			return nil, err
		}
	}
	for _, r := range refs {
		if filepath.IsAbs(r.Name) || strings.HasPrefix(filepath.Clean(r.Name), "..") {
			return nil, configErr("%s: playbook %q must be a path inside the project", at, r.Name)
		}
	}
	return refs, nil
}

func varsAttr(at string, v any) (map[string]any, bool, error) {
	v, replace := unwrap(v)
	if v == nil {
		return nil, false, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false, configErr("%s must be a mapping of variable names to values", at)
	}
	for k := range m {
		if k == "zuul" || k == "nodepool" || k == "unsafe_vars" {
			return nil, false, configErr("%s: the variable name %q is reserved by Zuul", at, k)
		}
	}
	return m, replace, nil
}

func nestedVars(at string, v any) (map[string]map[string]any, error) {
	v, _ = unwrap(v)
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, configErr("%s must be a mapping of names to variable mappings", at)
	}
	out := map[string]map[string]any{}
	for k, e := range m {
		vm, ok := e.(map[string]any)
		if !ok {
			return nil, configErr("%s.%s must be a mapping of variables", at, k)
		}
		out[k] = vm
	}
	return out, nil
}

func secretRefs(at string, v any) ([]SecretRef, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		if s, isStr := v.(string); isStr {
			l = []any{s}
		} else {
			return nil, configErr("%s must be a list", at)
		}
	}
	var refs []SecretRef
	for _, e := range l {
		switch x := e.(type) {
		case string:
			refs = append(refs, SecretRef{Name: x, Secret: x})
		case map[string]any:
			n, _ := x["name"].(string)
			s, _ := x["secret"].(string)
			if n == "" || s == "" {
				return nil, configErr("%s: each entry needs name (the variable) and secret (the definition)", at)
			}
			p, _ := x["pass-to-parent"].(bool)
			refs = append(refs, SecretRef{Name: n, Secret: s, PassToParent: p})
		default:
			return nil, configErr("%s: entries are secret names or {name, secret}", at)
		}
	}
	return refs, nil
}

func dependencies(at string, v any) ([]Dependency, error) {
	v, _ = unwrap(v)
	if v == nil {
		return []Dependency{}, nil
	}
	l, ok := v.([]any)
	if !ok {
		if s, isStr := v.(string); isStr {
			l = []any{s}
		} else {
			return nil, configErr("%s must be a list of job names", at)
		}
	}
	deps := []Dependency{}
	for _, e := range l {
		switch x := e.(type) {
		case string:
			deps = append(deps, Dependency{Name: x})
		case map[string]any:
			n, _ := x["name"].(string)
			if n == "" {
				return nil, configErr("%s: each entry needs a name", at)
			}
			s, _ := x["soft"].(bool)
			deps = append(deps, Dependency{Name: n, Soft: s})
		default:
			return nil, configErr("%s: entries are job names or {name, soft}", at)
		}
	}
	return deps, nil
}

func stringList(at string, v any) ([]string, bool, error) {
	v, replace := unwrap(v)
	switch x := v.(type) {
	case nil:
		return nil, false, nil
	case string:
		return []string{x}, replace, nil
	case []any:
		var out []string
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false, configErr("%s must be a list of strings", at)
			}
			out = append(out, s)
		}
		return out, replace, nil
	}
	return nil, false, configErr("%s must be a string or a list of strings", at)
}

func parseSecret(src *Source, pos string, m map[string]any) (*SecretDef, error) {
	name, _ := m["name"].(string)
	if name == "" {
		return nil, configErr("%s: a secret needs a name", pos)
	}
	data, ok := m["data"].(map[string]any)
	if !ok {
		return nil, configErr("%s: secret %s needs a data mapping", pos, name)
	}
	return &SecretDef{Name: name, Source: src, Pos: pos, Data: data, Encrypted: hasEncrypted(data)}, nil
}

func parseNodeset(at string, m map[string]any, needName bool) (*Nodeset, error) {
	ns := &Nodeset{}
	ns.Name, _ = m["name"].(string)
	if needName && ns.Name == "" {
		return nil, configErr("%s: a nodeset needs a name", at)
	}
	if v, ok := m["nodes"]; ok && v != nil {
		l, ok := v.([]any)
		if !ok {
			return nil, configErr("%s: nodes must be a list", at)
		}
		for _, e := range l {
			em, ok := e.(map[string]any)
			if !ok {
				return nil, configErr("%s: each node is {name, label}", at)
			}
			var n Node
			n.Name, _ = em["name"].(string)
			n.Label, _ = em["label"].(string)
			if n.Name == "" {
				if l, isList := em["name"].([]any); isList && len(l) > 0 {
					n.Name, _ = l[0].(string)
				}
			}
			if n.Name == "" {
				return nil, configErr("%s: a node needs a name", at)
			}
			ns.Nodes = append(ns.Nodes, n)
		}
	}
	if v, ok := m["groups"]; ok && v != nil {
		l, ok := v.([]any)
		if !ok {
			return nil, configErr("%s: groups must be a list", at)
		}
		for _, e := range l {
			em, _ := e.(map[string]any)
			var g Group
			g.Name, _ = em["name"].(string)
			nodes, _, err := stringList(at+": groups.nodes", em["nodes"])
			if err != nil {
				return nil, err
			}
			g.Nodes = nodes
			if g.Name == "" {
				return nil, configErr("%s: a group needs a name", at)
			}
			ns.Groups = append(ns.Groups, g)
		}
	}
	return ns, nil
}

// pipelineAttrs are the non-pipeline keys of a project stanza.
var projectAttrs = map[string]bool{
	"name": true, "description": true, "templates": true, "vars": true,
	"default-branch": true, "merge-mode": true, "queue": true, "branches": true,
	"default-parent": true,
}

func parseProject(src *Source, pos string, m map[string]any, template bool) (*ProjectDef, error) {
	p := &ProjectDef{Source: src, Pos: pos, Pipelines: map[string]*ProjectPipeline{}}
	p.Name, _ = m["name"].(string)
	if p.Name == "" {
		if template {
			return nil, configErr("%s: a project-template needs a name", pos)
		}
		p.Name = src.Project
	}
	var err error
	if p.Templates, _, err = stringList(pos+": templates", m["templates"]); err != nil {
		return nil, err
	}
	if p.Vars, _, err = varsAttr(pos+": vars", m["vars"]); err != nil {
		return nil, err
	}
	for k, v := range m {
		if projectAttrs[k] {
			continue
		}
		pm, ok := v.(map[string]any)
		if !ok {
			return nil, configErr("%s: pipeline %s must be a mapping with jobs", pos, k)
		}
		jobs, err := ParseJobList(src, fmt.Sprintf("%s: %s.jobs", pos, k), pm["jobs"])
		if err != nil {
			return nil, err
		}
		p.Pipelines[k] = &ProjectPipeline{Jobs: jobs}
	}
	return p, nil
}

// ParseJobList reads a project-pipeline job list: each entry is a job name
// or {name: {attributes}}, and becomes a variant of that job.
func ParseJobList(src *Source, at string, v any) ([]*JobDef, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, configErr("%s must be a list of jobs", at)
	}
	var out []*JobDef
	for _, e := range l {
		switch x := e.(type) {
		case string:
			out = append(out, &JobDef{Name: x, Source: src, Pos: at})
		case map[string]any:
			if len(x) != 1 {
				return nil, configErr("%s: a job entry is a name or {name: {attributes}}", at)
			}
			for name, attrs := range x {
				am, ok := attrs.(map[string]any)
				if attrs == nil {
					am, ok = map[string]any{}, true
				}
				if !ok {
					return nil, configErr("%s: attributes of job %s must be a mapping", at, name)
				}
				if _, has := am["name"]; has {
					return nil, configErr("%s: job %s: name is given by the key", at, name)
				}
				j, err := parseJob(src, at, am, false)
				if err != nil {
					return nil, err
				}
				j.Name = name
				out = append(out, j)
			}
		default:
			return nil, configErr("%s: a job entry is a name or {name: {attributes}}", at)
		}
	}
	return out, nil
}

// PipelineJobs returns the job list of a project in a pipeline: its
// templates' jobs then its own, plus the project's variables.
func (l *Layout) PipelineJobs(project, pipeline string) ([]*JobDef, map[string]any, error) {
	var jobs []*JobDef
	vars := map[string]any{}
	for _, p := range l.Projects[project] {
		for _, t := range p.Templates {
			tp, ok := l.Templates[t]
			if !ok {
				return nil, nil, configErr("%s: project-template %s is not defined", p.Pos, t)
			}
			if pp := tp.Pipelines[pipeline]; pp != nil {
				jobs = append(jobs, pp.Jobs...)
			}
			vars = deepMerge(vars, tp.Vars)
		}
		if pp := p.Pipelines[pipeline]; pp != nil {
			jobs = append(jobs, pp.Jobs...)
		}
		vars = deepMerge(vars, p.Vars)
	}
	return jobs, vars, nil
}
