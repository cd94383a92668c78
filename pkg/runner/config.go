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

// The Zuul configuration the runner loads: definitions (JobDef,
// SecretDef, Nodeset, ProjectDef), the Layout holding them, and the reading
// of configuration files; the stanzas are decoded in stanza.go and
// jobstanza.go.

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
	top := resolve(&doc)
	if top.Kind != yaml.SequenceNode {
		return configErr("%s:%d: a Zuul configuration file is a list of stanzas (- job: ..., - project: ...)", rel, top.Line)
	}
	d := &decoder{file: rel}
	for _, item := range top.Content {
		if item = resolve(item); item.Kind != yaml.MappingNode || len(item.Content) != 2 {
			return configErr("%s:%d: each stanza is a mapping with one key (job, secret, nodeset, project, project-template, ...)", rel, item.Line)
		}
		kind := item.Content[0].Value
		pos := fmt.Sprintf("%s:%d", rel, item.Line)
		body := resolve(item.Content[1])
		if body.Kind != yaml.MappingNode {
			return configErr("%s: the %s stanza must be a mapping", pos, kind)
		}
		switch kind {
		case "job":
			j, err := d.job(src, pos, body, "")
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
			s, err := d.secret(src, pos, body)
			if err != nil {
				return err
			}
			l.Secrets[s.Name] = s
		case "nodeset":
			ns, err := d.nodeset(pos, body, true)
			if err != nil {
				return err
			}
			l.Nodesets[ns.Name] = ns
		case "project", "project-template":
			p, err := d.project(src, pos, body, kind == "project-template")
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
