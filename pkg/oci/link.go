package oci

import (
	"fmt"
	"net/url"
	"strings"
)

// NextLink returns the next page of a paginated listing: the target of the
// rel="next" link among the Link header values (RFC 8288;
// distribution-spec, "Listing Tags"), resolved against page, the URL of the
// page that carried it. It returns nil when there is no next page.
//
// The link may move within the registry only: a target on another host is
// an error (it would receive the client's credentials), and the target
// takes page's scheme and host. Hosts are compared canonically
// (CanonicalHost), so a registry that writes its links with an explicit
// :443, or in another case, is followed; and a registry behind a proxy that
// writes http:// links is still spoken to as page was.
func NextLink(page *url.URL, values ...string) (*url.URL, error) {
	for _, v := range values {
		for rest := v; ; {
			target, params, more, ok := nextLinkValue(rest)
			if !ok {
				break
			}
			rest = more
			if !hasRel(params, "next") {
				continue
			}
			u, err := page.Parse(target)
			if err != nil {
				return nil, fmt.Errorf("link %q: %w", target, err)
			}
			if CanonicalHost(u.Host) != CanonicalHost(page.Host) {
				return nil, fmt.Errorf("link %q leaves %s: refusing to follow it", target, page.Host)
			}
			u.Scheme, u.Host = page.Scheme, page.Host
			return u, nil
		}
	}
	return nil, nil
}

// nextLinkValue splits the first link-value off s: its target (inside
// <...>, which may hold commas), its parameters, and the rest.
func nextLinkValue(s string) (target, params, rest string, ok bool) {
	start := strings.IndexByte(s, '<')
	if start < 0 {
		return "", "", "", false
	}
	end := strings.IndexByte(s[start:], '>')
	if end < 0 {
		return "", "", "", false
	}
	target = s[start+1 : start+end]
	rest = s[start+end+1:]
	// The parameters run to the comma before the next '<'.
	next := strings.IndexByte(rest, '<')
	if next < 0 {
		return target, rest, "", true
	}
	cut := strings.LastIndexByte(rest[:next], ',')
	if cut < 0 {
		cut = next
	}
	return target, rest[:cut], rest[cut:], true
}

// hasRel reports whether link parameters carry rel with the relation type
// (rel may list several, separated by spaces).
func hasRel(params, rel string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, r := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
			if strings.EqualFold(r, rel) {
				return true
			}
		}
	}
	return false
}

// Link returns a Link header value pointing at target with relation rel,
// as a registry writes one for the next page.
func Link(target, rel string) string { return "<" + target + `>; rel="` + rel + `"` }
