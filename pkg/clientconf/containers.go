package clientconf

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

// containers plans the CA in the containers certs directory and the
// registries.conf edit (podman, skopeo, buildah and cri-o read both).
func (p *plan) containers(paths Paths, location string, ca []byte, nss []Namespace, unqualified []string, warnings *[]string) error {
	if _, err := p.put(string(Containers), caFile(paths.ContainersCertsDir, location), 0o644, ca); err != nil {
		return err
	}
	_, err := p.edit(string(Containers), paths.RegistriesConf, 0o644, func(before []byte, _ bool) ([]byte, error) {
		after, warns, err := editRegistriesConf(before, location, nss, unqualified)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; fix the file (it was left as it is)", paths.RegistriesConf, err)
		}
		for _, w := range warns {
			*warnings = append(*warnings, paths.RegistriesConf+": "+w)
		}
		return after, nil
	})
	return err
}

// parseTOML decodes a TOML document into a map; an empty file is an empty
// document.
func parseTOML(b []byte) (map[string]any, error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(b)) == 0 {
		return doc, nil
	}
	if err := toml.Unmarshal(b, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("not valid TOML at line %d, column %d: %v", row, col, de)
		}
		return nil, fmt.Errorf("not valid TOML: %v", err)
	}
	return doc, nil
}

// tables returns the array of tables at doc[key] as maps.
func tables(doc map[string]any, key string) ([]map[string]any, error) {
	v, ok := doc[key]
	if !ok {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%q must be an array of tables ([[%s]])", key, key)
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q entry %d is not a table", key, i)
		}
		out[i] = m
	}
	return out, nil
}

func toAnyList(ms []map[string]any) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// editRegistriesConf edits a containers-registries.conf(5) version 2
// document. For each namespace, the [[registry]] table whose prefix (or,
// without a prefix, location) is the namespace gets the mirror at the head
// of its mirror list; a namespace without a table gets one with the mirror
// first and the upstream itself after it. unqualified-search-registries is
// set to unqualified. Other tables and keys are kept; comments are not (the
// file is re-encoded, as upstream's module does), so the file is only
// rewritten when its content must change.
func editRegistriesConf(before []byte, location string, nss []Namespace, unqualified []string) ([]byte, []string, error) {
	doc, err := parseTOML(before)
	if err != nil {
		return nil, nil, err
	}
	if _, v1 := doc["registries"]; v1 {
		return nil, nil, errors.New("it uses the version 1 format ([registries.search] and friends), which cannot be mixed with version 2 [[registry]] tables; convert it to version 2 (containers-registries.conf(5))")
	}
	orig, err := parseTOML(before)
	if err != nil {
		return nil, nil, err
	}
	regs, err := tables(doc, "registry")
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, ns := range nss {
		mirror := Mirror(location, ns.Host)
		i := slices.IndexFunc(regs, func(r map[string]any) bool {
			if prefix, ok := r["prefix"].(string); ok {
				return prefix == ns.Host
			}
			loc, _ := r["location"].(string)
			return loc == ns.Host
		})
		if i < 0 {
			regs = append(regs, map[string]any{
				"prefix":   ns.Host,
				"location": ns.Host,
				"mirror":   []any{map[string]any{"location": mirror}, map[string]any{"location": ns.Host}},
			})
			continue
		}
		r := regs[i]
		ms, err := tables(r, "mirror")
		if err != nil {
			return nil, nil, fmt.Errorf("[[registry]] for %s: %w", ns.Host, err)
		}
		ours := map[string]any{"location": mirror}
		var rest []map[string]any
		for _, m := range ms {
			if m["location"] == mirror {
				ours = m
				continue
			}
			rest = append(rest, m)
		}
		r["mirror"] = toAnyList(append([]map[string]any{ours}, rest...))
		if b, _ := r["mirror-by-digest-only"].(bool); b {
			warnings = append(warnings, fmt.Sprintf("the [[registry]] for %s sets mirror-by-digest-only = true: pulls by tag skip the buildset registry", ns.Host))
		}
		if pfm, _ := ours["pull-from-mirror"].(string); pfm == "digest-only" {
			warnings = append(warnings, fmt.Sprintf("the mirror %s sets pull-from-mirror = \"digest-only\": pulls by tag skip it", mirror))
		}
	}
	doc["registry"] = toAnyList(regs)
	u := make([]any, len(unqualified))
	for i, s := range unqualified {
		u[i] = s
	}
	doc["unqualified-search-registries"] = u
	if normalizedEqual(orig, doc) {
		return before, warnings, nil
	}
	after, err := toml.Marshal(doc)
	if err != nil {
		return nil, nil, err
	}
	return after, warnings, nil
}

// normalizedEqual compares two decoded documents after a TOML round trip,
// so that []any{"a"} and []string{"a"} compare equal.
func normalizedEqual(a, b map[string]any) bool {
	ab, err1 := toml.Marshal(a)
	bb, err2 := toml.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var an, bn map[string]any
	if toml.Unmarshal(ab, &an) != nil || toml.Unmarshal(bb, &bn) != nil {
		return false
	}
	return reflect.DeepEqual(an, bn)
}
