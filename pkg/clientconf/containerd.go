package clientconf

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// containerd plans the CA under a containerd certs directory and one
// hosts.toml per namespace (the config_path layout read by containerd's CRI
// plugin and by ctr --hosts-dir; microk8s' containerd reads the same
// layout in its own directory).
func (p *plan) containerd(client, certsDir, location string, ca []byte, nss []Namespace) error {
	// <certs.d>/<location>/ca.crt is also what containerd uses for pulls
	// straight from the buildset registry (a host directory without a
	// hosts.toml is read the docker way).
	caPath := caFile(certsDir, location)
	if _, err := p.put(client, caPath, 0o644, ca); err != nil {
		return err
	}
	for _, ns := range nss {
		path := filepath.Join(certsDir, ns.Host, "hosts.toml")
		_, err := p.edit(client, path, 0o644, func(before []byte, _ bool) ([]byte, error) {
			after, err := editHostsTOML(before, ns, MirrorURL(location, ns.Host), caPath)
			if err != nil {
				return nil, fmt.Errorf("%s: %w; fix the file (it was left as it is)", path, err)
			}
			return after, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// MirrorURL is the containerd host key of a namespace's mirror: the full
// API root, https://<location>/v2[/<ns>]. containerd appends /v2 to a host
// path unless override_path is set, so the path is given whole, with
// override_path = true.
func MirrorURL(location, host string) string {
	if host == "docker.io" {
		return "https://" + location + "/v2"
	}
	return "https://" + location + "/v2/" + host
}

// hostOrder returns the [host."..."] table names of a hosts.toml in file
// order: containerd tries hosts in that order, which a decoded map loses.
func hostOrder(b []byte) ([]string, error) {
	var p unstable.Parser
	p.Reset(b)
	var order []string
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) >= 2 && parts[0] == "host" && !slices.Contains(order, parts[1]) {
			order = append(order, parts[1])
		}
	}
	return order, p.Error()
}

// editHostsTOML makes the mirror the first [host] of a namespace's
// hosts.toml, able to pull and resolve (never push), with the CA and
// override_path = true. server is set to the upstream URL when the file has
// none; hosts and keys already there are kept, after ours. The file is
// written in containerd's host order; it is returned unchanged when it
// already holds all of this.
func editHostsTOML(before []byte, ns Namespace, mirrorURL, caPath string) ([]byte, error) {
	doc, err := parseTOML(before)
	if err != nil {
		return nil, err
	}
	order, err := hostOrder(before)
	if err != nil {
		return nil, fmt.Errorf("not valid TOML: %v", err)
	}
	hosts := map[string]any{}
	if v, ok := doc["host"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf(`"host" must be a table of [host."<url>"] tables`)
		}
		hosts = m
	}
	for k := range hosts {
		if !slices.Contains(order, k) {
			// A host defined by a dotted key rather than a table header.
			order = append(order, k)
		}
	}
	ours := map[string]any{}
	if v, ok := hosts[mirrorURL]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("host.%q must be a table", mirrorURL)
		}
		ours = m
	}
	wantOurs := map[string]any{}
	for k, v := range ours {
		wantOurs[k] = v
	}
	wantOurs["capabilities"] = []any{"pull", "resolve"}
	wantOurs["ca"] = caPath
	wantOurs["override_path"] = true
	newOrder := append([]string{mirrorURL}, slices.DeleteFunc(slices.Clone(order), func(h string) bool { return h == mirrorURL })...)

	top := map[string]any{}
	for k, v := range doc {
		if k != "host" {
			top[k] = v
		}
	}
	if _, ok := top["server"]; !ok {
		top["server"] = ns.Upstream
	}

	unchanged := slices.Equal(order, newOrder) && reflectEqualTOML(ours, wantOurs)
	if _, ok := doc["server"]; !ok {
		unchanged = false
	}
	if unchanged {
		return before, nil
	}

	var buf bytes.Buffer
	head, err := toml.Marshal(top)
	if err != nil {
		return nil, err
	}
	buf.Write(head)
	for _, h := range newOrder {
		hc := hosts[h]
		if h == mirrorURL {
			hc = wantOurs
		}
		b, err := toml.Marshal(map[string]any{"host": map[string]any{h: hc}})
		if err != nil {
			return nil, err
		}
		// The encoder opens with the (empty) parent table [host]; one per
		// file is allowed, so it is dropped from each host's section.
		b, ok := bytes.CutPrefix(b, []byte("[host]\n"))
		if !ok {
			return nil, fmt.Errorf("encoding host %q: unexpected encoder output %q", h, firstLine(b))
		}
		buf.WriteString("\n")
		buf.Write(b)
	}
	after := buf.Bytes()
	// Check that what containerd will read is what was meant.
	got, err := hostOrder(after)
	if err != nil || !slices.Equal(got, newOrder) {
		return nil, fmt.Errorf("internal error (please report): re-encoded hosts.toml has hosts %q, want %q (%v)", got, newOrder, err)
	}
	return after, nil
}

func reflectEqualTOML(a, b map[string]any) bool {
	return normalizedEqual(map[string]any{"x": a}, map[string]any{"x": b})
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
