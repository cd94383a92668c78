package runner

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The job stanza as written, decoded strictly (decode.go) into a JobDef,
// and the types of its attributes.

// jobStanza is a job stanza, or the attributes of a job list entry.
type jobStanza struct {
	Name             string          `yaml:"name"`
	Parent           parentName      `yaml:"parent"`
	Description      string          `yaml:"description"`
	Abstract         bool            `yaml:"abstract"`
	Final            bool            `yaml:"final"`
	PreRun           playbookList    `yaml:"pre-run"`
	Run              playbookList    `yaml:"run"`
	PostRun          playbookList    `yaml:"post-run"`
	CleanupRun       playbookList    `yaml:"cleanup-run"`
	Vars             variables       `yaml:"vars"`
	ExtraVars        variables       `yaml:"extra-vars"`
	HostVars         nestedVariables `yaml:"host-vars"`
	GroupVars        nestedVariables `yaml:"group-vars"`
	Secrets          secretList      `yaml:"secrets"`
	Nodeset          nodesetAttr     `yaml:"nodeset"`
	Dependencies     dependencyList  `yaml:"dependencies"`
	Requires         stringList      `yaml:"requires"`
	Provides         stringList      `yaml:"provides"`
	Timeout          *int            `yaml:"timeout"`
	PostTimeout      *int            `yaml:"post-timeout"`
	Attempts         *int            `yaml:"attempts"`
	Voting           *bool           `yaml:"voting"`
	Roles            roleList        `yaml:"roles"`
	RequiredProjects projectList     `yaml:"required-projects"`
}

// ignoredJobAttrs are Zuul job attributes the runner accepts and ignores
// (docs/runner.md, "Not implemented").
var ignoredJobAttrs = setOf("protected", "intermediate", "pre-timeout", "tags", "branches", "files",
	"irrelevant-files", "success-message", "failure-message", "success-url", "failure-url",
	"hold-following-changes", "semaphore", "semaphores", "override-checkout", "override-branch",
	"ansible-version", "allowed-projects", "post-review", "workspace-scheme",
	"match-on-config-updates", "include-vars", "attribute-control", "deduplicate",
	"ansible-split-streams", "image-build-name")

// job decodes a job stanza (name "" : the name is an attribute) or the
// attributes of a job list entry (name is the entry's key).
func (d *decoder) job(src *Source, pos string, n *yaml.Node, name string) (*JobDef, error) {
	entry := name != ""
	kvs, err := d.pairs(n)
	if err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		switch {
		case kv[0].Value != "name":
		case entry:
			return nil, configErr("%s: job %s: name is given by the key", pos, name)
		default:
			name, _ = scalarString(kv[1])
		}
	}
	at := func(attr string) string {
		if name != "" {
			return fmt.Sprintf("%s: job %s: %s", pos, name, attr)
		}
		return fmt.Sprintf("%s: %s", pos, attr)
	}
	var s jobStanza
	err = d.fields(n, &s, fieldSet{at: at, ignore: ignoredJobAttrs,
		unknown: func(key string, _ *yaml.Node) error {
			return configErr("%s: unknown job attribute %q", pos, key)
		}})
	if err != nil {
		return nil, err
	}
	if !entry && s.Name == "" {
		return nil, configErr("%s: a job needs a name", pos)
	}
	if entry {
		s.Name = name
	}
	j := &JobDef{
		Name: s.Name, Source: src, Pos: pos,
		Parent: s.Parent.ref(), Description: s.Description, Abstract: s.Abstract, Final: s.Final,
		PreRun: s.PreRun.refs, PostRun: s.PostRun.refs, CleanupRun: s.CleanupRun.refs,
		Vars: s.Vars.vars, VarsReplace: s.Vars.replace,
		ExtraVars: s.ExtraVars.vars, ExtraVarsReplace: s.ExtraVars.replace,
		HostVars: s.HostVars, GroupVars: s.GroupVars,
		Secrets: s.Secrets, Nodeset: s.Nodeset.inline, NodesetName: s.Nodeset.name,
		Dependencies: s.Dependencies.deps, DependenciesSet: s.Dependencies.set,
		Requires: s.Requires.list, RequiresReplace: s.Requires.replace,
		Provides: s.Provides.list, ProvReplace: s.Provides.replace,
		Voting: s.Voting, Roles: s.Roles, RequiredProjects: s.RequiredProjects,
	}
	if s.Run.set {
		// run: set to nothing is a job without run playbooks, not one that
		// inherits its parent's.
		j.Run = append([]PlaybookRef{}, s.Run.refs...)
	}
	for _, pb := range j.PostRun {
		if pb.Cleanup {
			j.CleanupRun = append(j.CleanupRun, pb)
		}
	}
	for _, x := range []struct {
		dst *int
		src *int
	}{{&j.Timeout, s.Timeout}, {&j.PostTimeout, s.PostTimeout}, {&j.Attempts, s.Attempts}} {
		if x.src != nil {
			*x.dst = *x.src
		}
	}
	return j, nil
}

// parentName is job.parent: a job name, or null for a base job.
type parentName struct {
	set  bool
	name string
}

func (p *parentName) decodeNode(d *decoder, at string, n *yaml.Node) error {
	p.set = true
	if isNull(n) {
		p.name = ""
		return nil
	}
	s, ok := scalarString(n)
	if !ok {
		return configErr("%s must be a job name or null", at)
	}
	p.name = s
	return nil
}

// ref returns the parent as JobDef.Parent: nil when not set, "" for null.
func (p parentName) ref() *string {
	if !p.set {
		return nil
	}
	name := p.name
	return &name
}

// playbookList is pre-run, run, post-run or cleanup-run: a path, a
// {name: path, cleanup: bool} entry, or a list of them.
type playbookList struct {
	set  bool
	refs []PlaybookRef
}

// playbookEntry is a playbook written as a mapping.
type playbookEntry struct {
	Name    string `yaml:"name"`
	Cleanup bool   `yaml:"cleanup"`
}

func (l *playbookList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, _ = unwrapNode(n)
	l.set, l.refs = true, nil
	if isNull(n) {
		return nil
	}
	for _, e := range sequence(n) {
		var ref PlaybookRef
		switch e = resolve(e); e.Kind {
		case yaml.ScalarNode:
			s, ok := scalarString(e)
			if !ok {
				return configErr("%s: a playbook is a path or {name: path}", at)
			}
			ref.Name = s
		case yaml.MappingNode:
			var pe playbookEntry
			if err := d.entry(at, e, &pe, "a playbook entry", "semaphore", "semaphores"); err != nil {
				return err
			}
			if pe.Name == "" {
				return configErr("%s: a playbook entry needs a name", at)
			}
			ref = PlaybookRef(pe)
		default:
			return configErr("%s: a playbook is a path or {name: path}", at)
		}
		if filepath.IsAbs(ref.Name) || strings.HasPrefix(filepath.Clean(ref.Name), "..") {
			return configErr("%s: playbook %q must be a path inside the project", at, ref.Name)
		}
		l.refs = append(l.refs, ref)
	}
	return nil
}

// secretList is job.secrets: secret names, or {name, secret,
// pass-to-parent} entries.
type secretList []SecretRef

// secretEntry is a secret written as a mapping.
type secretEntry struct {
	Name         string `yaml:"name"`
	Secret       string `yaml:"secret"`
	PassToParent bool   `yaml:"pass-to-parent"`
}

func (l *secretList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	*l = nil
	if isNull(n) {
		return nil
	}
	if n = resolve(n); n.Kind != yaml.SequenceNode && n.Kind != yaml.ScalarNode || n.Tag == "!override" || n.Tag == "!inherit" {
		return configErr("%s must be a list", at)
	}
	for _, e := range sequence(n) {
		switch e = resolve(e); e.Kind {
		case yaml.ScalarNode:
			s, ok := scalarString(e)
			if !ok {
				return configErr("%s: entries are secret names or {name, secret}", at)
			}
			*l = append(*l, SecretRef{Name: s, Secret: s})
		case yaml.MappingNode:
			var se secretEntry
			if err := d.entry(at, e, &se, "a secret entry"); err != nil {
				return err
			}
			if se.Name == "" || se.Secret == "" {
				return configErr("%s: each entry needs name (the variable) and secret (the definition)", at)
			}
			*l = append(*l, SecretRef(se))
		default:
			return configErr("%s: entries are secret names or {name, secret}", at)
		}
	}
	return nil
}

// dependencyList is job.dependencies: job names, or {name, soft} entries.
// Set, even to nothing, it replaces the inherited dependencies.
type dependencyList struct {
	set  bool
	deps []Dependency
}

// dependencyEntry is a dependency written as a mapping.
type dependencyEntry struct {
	Name string `yaml:"name"`
	Soft bool   `yaml:"soft"`
}

func (l *dependencyList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, _ = unwrapNode(n)
	l.set, l.deps = true, []Dependency{}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode && n.Kind != yaml.ScalarNode {
		return configErr("%s must be a list of job names", at)
	}
	for _, e := range sequence(n) {
		switch e = resolve(e); e.Kind {
		case yaml.ScalarNode:
			s, ok := scalarString(e)
			if !ok {
				return configErr("%s: entries are job names or {name, soft}", at)
			}
			l.deps = append(l.deps, Dependency{Name: s})
		case yaml.MappingNode:
			var de dependencyEntry
			if err := d.entry(at, e, &de, "a dependency entry"); err != nil {
				return err
			}
			if de.Name == "" {
				return configErr("%s: each entry needs a name", at)
			}
			l.deps = append(l.deps, Dependency(de))
		default:
			return configErr("%s: entries are job names or {name, soft}", at)
		}
	}
	return nil
}

// roleList is job.roles: {zuul: <project>} entries (galaxy roles are not
// supported).
type roleList []string

// roleEntry is a role entry; name, the role's name when the project holds
// a single role at its top, is accepted and not used.
type roleEntry struct {
	Zuul string `yaml:"zuul"`
}

func (l *roleList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	*l = nil
	if n = resolve(n); n.Kind != yaml.SequenceNode {
		return configErr("%s must be a list of {zuul: <project>}", at)
	}
	for _, e := range n.Content {
		var re roleEntry
		if e = resolve(e); e.Kind == yaml.MappingNode {
			err := d.fields(e, &re, fieldSet{
				at:     func(key string) string { return at + ": " + key },
				ignore: setOf("name"),
				unknown: func(key string, _ *yaml.Node) error {
					return configErr("%s: each entry needs zuul: <project> (galaxy roles are not supported; unknown key %q)", at, key)
				}})
			if err != nil {
				return err
			}
		}
		if re.Zuul == "" {
			return configErr("%s: each entry needs zuul: <project> (galaxy roles are not supported)", at)
		}
		*l = append(*l, re.Zuul)
	}
	return nil
}

// projectList is job.required-projects: project names, or {name, ...}
// entries.
type projectList []string

// projectEntry is a required project written as a mapping; the override
// keys are accepted and ignored (the runner tests each project's given
// state).
type projectEntry struct {
	Name string `yaml:"name"`
}

func (l *projectList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, _ = unwrapNode(n)
	*l = nil
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode && n.Kind != yaml.ScalarNode {
		return configErr("%s must be a list", at)
	}
	for _, e := range sequence(n) {
		switch e = resolve(e); e.Kind {
		case yaml.ScalarNode:
			s, ok := scalarString(e)
			if !ok {
				return configErr("%s: entries are project names", at)
			}
			*l = append(*l, s)
		case yaml.MappingNode:
			var pe projectEntry
			if err := d.entry(at, e, &pe, "a required-projects entry", "override-checkout", "override-branch"); err != nil {
				return err
			}
			if pe.Name == "" {
				return configErr("%s: each entry needs a name", at)
			}
			*l = append(*l, pe.Name)
		default:
			return configErr("%s: entries are project names", at)
		}
	}
	return nil
}
