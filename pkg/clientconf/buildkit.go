package clientconf

import (
	"fmt"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

// buildkit plans the CA file for buildkitd and the buildkitd.toml edit.
// buildkitd trusts the registry under its location and under its address:
// docker_image_build pushes to the location when the alias resolves on the
// node, and to the address otherwise (pkg/build).
func (p *plan) buildkit(paths Paths, location, address string, ca []byte, nss []Namespace) error {
	caPath := caFile(paths.BuildkitCertsDir, location)
	if _, err := p.put(string(Buildkit), caPath, 0o644, ca); err != nil {
		return err
	}
	trusted := []string{location}
	if address != location {
		trusted = append(trusted, address)
	}
	_, err := p.edit(string(Buildkit), paths.BuildkitdTOML, 0o644, func(before []byte, _ bool) ([]byte, error) {
		after, err := editBuildkitdTOML(before, location, trusted, caPath, nss)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; fix the file (it was left as it is)", paths.BuildkitdTOML, err)
		}
		return after, nil
	})
	return err
}

// editBuildkitdTOML puts, for each namespace, the mirror at the head of
// [registry."<ns>"].mirrors, and sets the own section of each trusted
// host:port (the mirror's location first) [registry."<host:port>"]:
// buildkitd looks up a registry's TLS settings by its host:port, so that is
// where the CA goes (ca, kept with any other CA files listed), and http =
// false, without which buildkitd speaks plain HTTP to a registry on
// localhost. Other settings are kept.
func editBuildkitdTOML(before []byte, location string, trusted []string, caPath string, nss []Namespace) ([]byte, error) {
	doc, err := parseTOML(before)
	if err != nil {
		return nil, err
	}
	orig, _ := parseTOML(before)
	regs := map[string]any{}
	if v, ok := doc["registry"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf(`"registry" must be a table`)
		}
		regs = m
	}
	section := func(host string) (map[string]any, error) {
		v, ok := regs[host]
		if !ok {
			m := map[string]any{}
			regs[host] = m
			return m, nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("registry.%q must be a table", host)
		}
		return m, nil
	}
	for _, ns := range nss {
		sec, err := section(ns.Host)
		if err != nil {
			return nil, err
		}
		mirrors, err := stringList(sec["mirrors"], fmt.Sprintf("registry.%q.mirrors", ns.Host))
		if err != nil {
			return nil, err
		}
		mirror := Mirror(location, ns.Host)
		sec["mirrors"] = append([]string{mirror}, slices.DeleteFunc(mirrors, func(m string) bool { return m == mirror })...)
	}
	for _, host := range trusted {
		sec, err := section(host)
		if err != nil {
			return nil, err
		}
		cas, err := stringList(sec["ca"], fmt.Sprintf("registry.%q.ca", host))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(cas, caPath) {
			cas = append(cas, caPath)
		}
		sec["ca"] = cas
		sec["http"] = false
	}
	doc["registry"] = regs
	if normalizedEqual(orig, doc) {
		return before, nil
	}
	return toml.Marshal(doc)
}

// stringList converts a decoded TOML array of strings; nil is an empty list.
func stringList(v any, what string) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s must be an array of strings", what)
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%s must be an array of strings", what)
		}
		out[i] = s
	}
	return out, nil
}
