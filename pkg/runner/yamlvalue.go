package runner

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// encrypted is a secret value written with Zuul's !encrypted/pkcs1-oaep tag.
// The runner cannot decrypt it: the queue file supplies the plain value.
type encrypted struct{}

// override marks a value written with Zuul's !override or !inherit tag.
type override struct {
	Value   any
	Inherit bool
}

// plainValue converts a YAML node to maps, lists and scalars, keeping the
// Zuul tags the runner understands (!encrypted/..., !override, !inherit,
// !unsafe) and rejecting others with their position.
func plainValue(file string, n *yaml.Node) (any, error) {
	if n.Kind == yaml.AliasNode {
		return plainValue(file, n.Alias)
	}
	tag := n.Tag
	switch {
	case strings.HasPrefix(tag, "!encrypted/"):
		return encrypted{}, nil
	case tag == "!override" || tag == "!inherit":
		c := *n
		c.Tag = ""
		v, err := plainValue(file, &c)
		if err != nil {
			return nil, err
		}
		return override{Value: v, Inherit: tag == "!inherit"}, nil
	case tag == "!unsafe":
		c := *n
		c.Tag = ""
		return plainValue(file, &c)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return plainValue(file, n.Content[0])
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
				merged, err := plainValue(file, v)
				if err != nil {
					return nil, err
				}
				if mm, ok := merged.(map[string]any); ok {
					for mk, mv := range mm {
						if _, set := m[mk]; !set {
							m[mk] = mv
						}
					}
				}
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("%s:%d: mapping keys must be strings", file, k.Line)
			}
			val, err := plainValue(file, v)
			if err != nil {
				return nil, err
			}
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := plainValue(file, c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		if tag != "" && strings.HasPrefix(tag, "!") && !strings.HasPrefix(tag, "!!") {
			return nil, fmt.Errorf("%s:%d: unsupported YAML tag %s", file, n.Line, tag)
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n.Line, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("%s:%d: unexpected YAML node", file, n.Line)
}

// hasEncrypted reports whether v holds an !encrypted value anywhere.
func hasEncrypted(v any) bool {
	switch x := v.(type) {
	case encrypted:
		return true
	case map[string]any:
		for _, e := range x {
			if hasEncrypted(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasEncrypted(e) {
				return true
			}
		}
	case override:
		return hasEncrypted(x.Value)
	}
	return false
}

// deepMerge returns base with over merged into it: mappings are merged
// recursively, any other value of over replaces the one in base. Neither
// argument is modified.
func deepMerge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if om, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = deepMerge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// deepCopy copies maps and lists so later merges cannot alias them.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}
