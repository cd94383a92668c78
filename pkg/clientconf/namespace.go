package clientconf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ParseNamespaces converts buildset_registry_namespaces entries, each a
// [registry-host, upstream-url] pair, into namespaces. A malformed entry is
// an error naming its index.
func ParseNamespaces(entries [][]string) ([]Namespace, error) {
	if entries == nil {
		return nil, nil
	}
	out := make([]Namespace, 0, len(entries))
	for i, e := range entries {
		if len(e) != 2 {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: must be a [registry-host, upstream-url] pair such as [quay.io, https://quay.io], got %d item(s): %q", i, len(e), e)
		}
		ns := Namespace{Host: strings.TrimSpace(e[0]), Upstream: strings.TrimSpace(e[1])}
		if err := ns.validate(); err != nil {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: %w", i, err)
		}
		out = append(out, ns)
	}
	return out, nil
}

func (ns Namespace) validate() error {
	if err := validRegistryHost(ns.Host); err != nil {
		return fmt.Errorf("registry host: %w", err)
	}
	u, err := url.Parse(ns.Upstream)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("upstream %q for %s is not an http(s) URL such as https://%s", ns.Upstream, ns.Host, ns.Host)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("upstream %q for %s must not carry credentials, a query or a fragment", ns.Upstream, ns.Host)
	}
	return nil
}

// validRegistryHost accepts a registry name as it starts an image reference:
// a host name or IP address with an optional port, no scheme and no path.
func validRegistryHost(h string) error {
	switch {
	case h == "":
		return errors.New("is empty")
	case strings.Contains(h, "://"):
		return fmt.Errorf("%q must be a registry name such as quay.io, without a scheme", h)
	case strings.ContainsAny(h, "/ \t\"'[]") && !strings.HasPrefix(h, "["):
		return fmt.Errorf("%q must be a registry name such as quay.io, without a path or spaces", h)
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if port == "" {
			return fmt.Errorf("%q has an empty port", h)
		}
		host = hh
	} else if strings.HasPrefix(h, "[") {
		return fmt.Errorf("%q: a bracketed IPv6 address needs a port", h)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a valid host name", h)
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("%q is not a valid host name", h)
			}
		}
	}
	return nil
}
