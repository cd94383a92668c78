package runner

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// The nodeset, secret and project stanzas and job lists as written, decoded
// strictly (decode.go) into the definitions of config.go. The job stanza
// is in jobstanza.go.

// nodesetAttr is job.nodeset: a nodeset name, or an anonymous nodeset.
type nodesetAttr struct {
	name   string
	inline *Nodeset
}

func (a *nodesetAttr) decodeNode(d *decoder, at string, n *yaml.Node) error {
	switch n = resolve(n); n.Kind {
	case yaml.ScalarNode:
		if s, ok := scalarString(n); ok {
			a.name, a.inline = s, nil
			return nil
		}
	case yaml.MappingNode:
		ns, err := d.nodeset(at, n, false)
		if err != nil {
			return err
		}
		a.name, a.inline = "", ns
		return nil
	}
	return configErr("%s must be a nodeset name or a mapping with nodes", at)
}

// nodesetStanza is a nodeset stanza, or an anonymous nodeset.
type nodesetStanza struct {
	Name   string    `yaml:"name"`
	Nodes  nodeList  `yaml:"nodes"`
	Groups groupList `yaml:"groups"`
}

// nodeset decodes a nodeset; at is where it is, for messages. alternatives
// are accepted and ignored.
func (d *decoder) nodeset(at string, n *yaml.Node, needName bool) (*Nodeset, error) {
	var s nodesetStanza
	err := d.fields(n, &s, fieldSet{
		at:     func(string) string { return at },
		ignore: setOf("alternatives"),
		unknown: func(key string, _ *yaml.Node) error {
			return configErr("%s: unknown nodeset attribute %q (name, nodes, groups)", at, key)
		}})
	if err != nil {
		return nil, err
	}
	if needName && s.Name == "" {
		return nil, configErr("%s: a nodeset needs a name", at)
	}
	return &Nodeset{Name: s.Name, Nodes: s.Nodes, Groups: s.Groups}, nil
}

// nodeList is nodeset.nodes: {name, label} entries; a name may be a list,
// of which the runner uses the first.
type nodeList []Node

// nodeEntry is one node.
type nodeEntry struct {
	Name  stringList `yaml:"name"`
	Label string     `yaml:"label"`
}

func (l *nodeList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	*l = nil
	if isNull(n) {
		return nil
	}
	if n = resolve(n); n.Kind != yaml.SequenceNode {
		return configErr("%s: nodes must be a list", at)
	}
	for _, e := range n.Content {
		if e = resolve(e); e.Kind != yaml.MappingNode {
			return configErr("%s: each node is {name, label}", at)
		}
		var ne nodeEntry
		if err := d.entry(at, e, &ne, "a node"); err != nil {
			return err
		}
		if len(ne.Name.list) == 0 || ne.Name.list[0] == "" {
			return configErr("%s: a node needs a name", at)
		}
		*l = append(*l, Node{Name: ne.Name.list[0], Label: ne.Label})
	}
	return nil
}

// groupList is nodeset.groups: {name, nodes} entries.
type groupList []Group

// groupEntry is one group.
type groupEntry struct {
	Name  string     `yaml:"name"`
	Nodes stringList `yaml:"nodes"`
}

func (l *groupList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	*l = nil
	if isNull(n) {
		return nil
	}
	if n = resolve(n); n.Kind != yaml.SequenceNode {
		return configErr("%s: groups must be a list", at)
	}
	for _, e := range n.Content {
		if e = resolve(e); e.Kind != yaml.MappingNode {
			return configErr("%s: each group is {name, nodes}", at)
		}
		var ge groupEntry
		if err := d.fields(e, &ge, fieldSet{
			at:     func(key string) string { return at + ": groups." + key },
			ignore: map[string]bool{},
			unknown: func(key string, _ *yaml.Node) error {
				return configErr("%s: unknown key %q in a group (keys: name, nodes)", at, key)
			}}); err != nil {
			return err
		}
		if ge.Name == "" {
			return configErr("%s: a group needs a name", at)
		}
		*l = append(*l, Group{Name: ge.Name, Nodes: ge.Nodes.list})
	}
	return nil
}

// secretStanza is a secret stanza.
type secretStanza struct {
	Name string  `yaml:"name"`
	Data mapping `yaml:"data"`
}

func (d *decoder) secret(src *Source, pos string, n *yaml.Node) (*SecretDef, error) {
	var s secretStanza
	err := d.fields(n, &s, fieldSet{
		at:     func(key string) string { return pos + ": " + key },
		ignore: map[string]bool{},
		unknown: func(key string, _ *yaml.Node) error {
			return configErr("%s: unknown secret attribute %q (name, data)", pos, key)
		}})
	if err != nil {
		return nil, err
	}
	if s.Name == "" {
		return nil, configErr("%s: a secret needs a name", pos)
	}
	if s.Data == nil {
		return nil, configErr("%s: secret %s needs a data mapping", pos, s.Name)
	}
	return &SecretDef{Name: s.Name, Source: src, Pos: pos, Data: s.Data, Encrypted: hasEncrypted(map[string]any(s.Data))}, nil
}

// projectStanza is the part of a project or project-template stanza that
// is not a pipeline; every other key names a pipeline.
type projectStanza struct {
	Name      string     `yaml:"name"`
	Templates stringList `yaml:"templates"`
	Vars      variables  `yaml:"vars"`
}

// ignoredProjectAttrs are project attributes the runner accepts and ignores.
var ignoredProjectAttrs = setOf("description", "default-branch", "merge-mode", "queue", "branches", "default-parent")

// pipelineStanza is one pipeline of a project stanza.
type pipelineStanza struct {
	Jobs jobList `yaml:"jobs"`
}

// jobList is a project-pipeline job list (ParseJobList); src is set before
// decoding.
type jobList struct {
	src  *Source
	jobs []*JobDef
}

func (l *jobList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	jobs, err := d.jobList(l.src, at, n)
	l.jobs = jobs
	return err
}

func (d *decoder) project(src *Source, pos string, n *yaml.Node, template bool) (*ProjectDef, error) {
	p := &ProjectDef{Source: src, Pos: pos, Pipelines: map[string]*ProjectPipeline{}}
	var s projectStanza
	err := d.fields(n, &s, fieldSet{
		at:     func(key string) string { return pos + ": " + key },
		ignore: ignoredProjectAttrs,
		unknown: func(pipeline string, v *yaml.Node) error {
			if v = resolve(v); v.Kind != yaml.MappingNode {
				return configErr("%s: pipeline %s must be a mapping with jobs", pos, pipeline)
			}
			ps := pipelineStanza{Jobs: jobList{src: src}}
			err := d.fields(v, &ps, fieldSet{
				at:     func(key string) string { return fmt.Sprintf("%s: %s.%s", pos, pipeline, key) },
				ignore: setOf("queue", "debug", "fail-fast"),
				unknown: func(key string, _ *yaml.Node) error {
					return configErr("%s: pipeline %s: unknown key %q (jobs, queue, debug, fail-fast)", pos, pipeline, key)
				}})
			if err != nil {
				return err
			}
			p.Pipelines[pipeline] = &ProjectPipeline{Jobs: ps.Jobs.jobs}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	p.Name, p.Templates, p.Vars = s.Name, s.Templates.list, s.Vars.vars
	if p.Name == "" {
		if template {
			return nil, configErr("%s: a project-template needs a name", pos)
		}
		p.Name = src.Project
	}
	return p, nil
}

// ParseJobList reads a project-pipeline job list (a project stanza's, or
// a queue item's jobs): each entry is a job name or {name: {attributes}},
// and becomes a variant of that job. file names the file in messages; at
// is where the list is.
func ParseJobList(src *Source, file, at string, n *yaml.Node) ([]*JobDef, error) {
	d := &decoder{file: file}
	return d.jobList(src, at, n)
}

func (d *decoder) jobList(src *Source, at string, n *yaml.Node) ([]*JobDef, error) {
	if n == nil || n.Kind == 0 || isNull(n) {
		return nil, nil
	}
	if n = resolve(n); n.Kind != yaml.SequenceNode {
		return nil, configErr("%s must be a list of jobs", at)
	}
	var out []*JobDef
	for _, e := range n.Content {
		switch e = resolve(e); e.Kind {
		case yaml.ScalarNode:
			name, ok := scalarString(e)
			if !ok {
				return nil, configErr("%s: a job entry is a name or {name: {attributes}}", at)
			}
			out = append(out, &JobDef{Name: name, Source: src, Pos: at})
		case yaml.MappingNode:
			kvs, err := d.pairs(e)
			if err != nil {
				return nil, err
			}
			if len(kvs) != 1 {
				return nil, configErr("%s: a job entry is a name or {name: {attributes}}", at)
			}
			name, attrs := kvs[0][0].Value, resolve(kvs[0][1])
			if isNull(attrs) {
				out = append(out, &JobDef{Name: name, Source: src, Pos: at})
				continue
			}
			if attrs.Kind != yaml.MappingNode {
				return nil, configErr("%s: attributes of job %s must be a mapping", at, name)
			}
			j, err := d.job(src, at, attrs, name)
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		default:
			return nil, configErr("%s: a job entry is a name or {name: {attributes}}", at)
		}
	}
	return out, nil
}
