package runner

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Zuul configuration is decoded into typed structs (jobstanza.go,
// stanza.go), one field per attribute, named by its yaml tag.
// decoder.fields walks a mapping and refuses keys that name no field, so
// the struct is the one list of what is understood; a field decodes its
// value by its type: strings, booleans and non-negative integers here,
// Zuul's shapes (a string or a list, a path or {name: path}, !override) by
// the types beside the stanzas. Every error says where (file:line, job,
// attribute) and what to write instead.

// decoder decodes the stanzas of one configuration file.
type decoder struct {
	// file names the file in messages (project/path, or "queue file").
	file string
}

// nodeValue is a field type that decodes itself from its YAML node; at is
// where the value is, for messages ("zuul.d/jobs.yaml:3: job x: run").
type nodeValue interface {
	decodeNode(d *decoder, at string, n *yaml.Node) error
}

// fieldSet describes how a mapping is decoded into a struct.
type fieldSet struct {
	// at returns where the value of a key is, for messages.
	at func(key string) string
	// ignore lists keys that are accepted and ignored.
	ignore map[string]bool
	// unknown returns the error for a key that names no field; the value is
	// given for mappings whose other keys are data (a project's pipelines).
	unknown func(key string, v *yaml.Node) error
}

// fields decodes the mapping n into the struct dst points to.
func (d *decoder) fields(n *yaml.Node, dst any, fs fieldSet) error {
	v := reflect.ValueOf(dst).Elem()
	byKey := map[string]int{}
	for i := range v.NumField() {
		if tag := v.Type().Field(i).Tag.Get("yaml"); tag != "" {
			byKey[tag] = i
		}
	}
	kvs, err := d.pairs(n)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		key := kv[0].Value
		i, ok := byKey[key]
		switch {
		case ok:
			if err := d.value(fs.at(key), kv[1], v.Field(i).Addr().Interface()); err != nil {
				return err
			}
		case fs.ignore[key]:
		default:
			if err := fs.unknown(key, kv[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairs returns the key and value nodes of a mapping, with YAML merge keys
// (<<: *anchor) resolved: keys written in the mapping win over merged ones.
func (d *decoder) pairs(n *yaml.Node) ([][2]*yaml.Node, error) {
	n = resolve(n)
	var own, merged [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			var sources []*yaml.Node
			if v = resolve(v); v.Kind == yaml.SequenceNode {
				sources = v.Content
			} else {
				sources = []*yaml.Node{v}
			}
			for _, s := range sources {
				if s = resolve(s); s.Kind != yaml.MappingNode {
					return nil, configErr("%s:%d: a merge key (<<) takes a mapping", d.file, s.Line)
				}
				kvs, err := d.pairs(s)
				if err != nil {
					return nil, err
				}
				merged = append(merged, kvs...)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, configErr("%s:%d: mapping keys must be strings", d.file, k.Line)
		}
		own = append(own, [2]*yaml.Node{k, v})
	}
	seen := map[string]bool{}
	for _, kv := range own {
		seen[kv[0].Value] = true
	}
	out := own
	for _, kv := range merged {
		if !seen[kv[0].Value] {
			seen[kv[0].Value] = true
			out = append(out, kv)
		}
	}
	return out, nil
}

// resolve follows aliases and the document node.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode || (n.Kind == yaml.DocumentNode && len(n.Content) == 1) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else {
			n = n.Content[0]
		}
	}
	return n
}

// value decodes the node n into dst: a nodeValue decodes itself; strings,
// booleans and integers are scalars.
func (d *decoder) value(at string, n *yaml.Node, dst any) error {
	if nv, ok := dst.(nodeValue); ok {
		return nv.decodeNode(d, at, n)
	}
	v, err := d.plain(n)
	if err != nil {
		return err
	}
	switch p := dst.(type) {
	case *string:
		s, ok := v.(string)
		if !ok && v != nil {
			return configErr("%s must be a string", at)
		}
		*p = s
	case *bool:
		b, ok := v.(bool)
		if !ok {
			return configErr("%s must be true or false", at)
		}
		*p = b
	case **bool:
		b, ok := v.(bool)
		if !ok {
			return configErr("%s must be true or false", at)
		}
		*p = &b
	case **int:
		i, ok := v.(int)
		if !ok || i < 0 {
			return configErr("%s must be a non-negative integer", at)
		}
		*p = &i
	default:
		panic(fmt.Sprintf("runner: no decoding for %T (%s)", dst, at))
	}
	return nil
}

// plain converts a node to maps, lists and scalars (plainValue), as a
// configuration error.
func (d *decoder) plain(n *yaml.Node) (any, error) {
	v, err := plainValue(d.file, n)
	if err != nil {
		return nil, configErr("%v", err)
	}
	return v, nil
}

// unwrapNode removes an !override or !inherit tag, reporting whether the
// value replaces (rather than merges with) the inherited one.
func unwrapNode(n *yaml.Node) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Tag == "!override" || n.Tag == "!inherit" {
		c := *n
		c.Tag = ""
		return &c, n.Tag == "!override"
	}
	return n, false
}

// isNull reports whether a node is an explicit or implicit null.
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// scalarString returns the value of a string scalar.
func scalarString(n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!unsafe":
		return n.Value, true
	}
	return "", false
}

// stringList is a string or a list of strings; with !override it replaces
// the inherited list.
type stringList struct {
	list    []string
	replace bool
}

func (l *stringList) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, l.replace = unwrapNode(n)
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			l.list, l.replace = nil, false
			return nil
		}
		s, ok := scalarString(n)
		if !ok {
			return configErr("%s must be a string or a list of strings", at)
		}
		l.list = []string{s}
	case yaml.SequenceNode:
		l.list = nil
		for _, e := range n.Content {
			s, ok := scalarString(e)
			if !ok {
				return configErr("%s must be a list of strings", at)
			}
			l.list = append(l.list, s)
		}
	default:
		return configErr("%s must be a string or a list of strings", at)
	}
	return nil
}

// variables is a vars or extra-vars mapping; with !override it replaces the
// inherited variables instead of merging into them.
type variables struct {
	vars    map[string]any
	replace bool
}

func (v *variables) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, v.replace = unwrapNode(n)
	if isNull(n) {
		v.vars, v.replace = nil, false
		return nil
	}
	val, err := d.plain(n)
	if err != nil {
		return err
	}
	m, ok := val.(map[string]any)
	if !ok {
		return configErr("%s must be a mapping of variable names to values", at)
	}
	for k := range m {
		if k == "zuul" || k == "nodepool" || k == "unsafe_vars" {
			return configErr("%s: the variable name %q is reserved by Zuul", at, k)
		}
	}
	v.vars = m
	return nil
}

// nestedVariables is host-vars or group-vars: variables by host or group
// name.
type nestedVariables map[string]map[string]any

func (nv *nestedVariables) decodeNode(d *decoder, at string, n *yaml.Node) error {
	n, _ = unwrapNode(n)
	if isNull(n) {
		*nv = nil
		return nil
	}
	val, err := d.plain(n)
	if err != nil {
		return err
	}
	m, ok := val.(map[string]any)
	if !ok {
		return configErr("%s must be a mapping of names to variable mappings", at)
	}
	out := nestedVariables{}
	for k, e := range m {
		vm, ok := e.(map[string]any)
		if !ok {
			return configErr("%s.%s must be a mapping of variables", at, k)
		}
		out[k] = vm
	}
	*nv = out
	return nil
}

// mapping is free-form data (a secret's data), !encrypted values kept as
// such.
type mapping map[string]any

func (m *mapping) decodeNode(d *decoder, at string, n *yaml.Node) error {
	val, err := d.plain(n)
	if err != nil {
		return err
	}
	mm, ok := val.(map[string]any)
	if !ok {
		return configErr("%s must be a mapping", at)
	}
	*m = mm
	return nil
}

// setOf returns the set of keys.
func setOf(keys ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// sequence returns the entries of a list, or of a single entry written
// without the list (Zuul accepts both for most list attributes).
func sequence(n *yaml.Node) []*yaml.Node {
	if n = resolve(n); n.Kind == yaml.SequenceNode {
		return n.Content
	}
	return []*yaml.Node{n}
}

// entry decodes one mapping entry of a list (a playbook, a secret, a
// dependency, ...) strictly: a key that names no field is refused with the
// kind of entry and its keys.
func (d *decoder) entry(at string, n *yaml.Node, dst any, kind string, ignore ...string) error {
	ign := map[string]bool{}
	for _, k := range ignore {
		ign[k] = true
	}
	return d.fields(n, dst, fieldSet{
		at:     func(key string) string { return at + ": " + key },
		ignore: ign,
		unknown: func(key string, _ *yaml.Node) error {
			return configErr("%s: unknown key %q in %s (keys: %s)", at, key, kind, strings.Join(tags(dst, ignore), ", "))
		},
	})
}

// tags lists the yaml tags of the struct dst points to, then extra.
func tags(dst any, extra []string) []string {
	t := reflect.TypeOf(dst).Elem()
	var out []string
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" {
			out = append(out, tag)
		}
	}
	return append(out, extra...)
}
