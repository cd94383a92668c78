package buildset

import (
	"encoding"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/upstream"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// State is the desired state of the registry daemon.
type State string

// The states Apply accepts.
const (
	// Started: the daemon runs and answers (the default).
	Started State = "started"
	// Stopped: the daemon does not run; its data is kept, so a later start
	// returns the same connection data and content.
	Stopped State = "stopped"
	// Absent: the daemon does not run and its root directory is removed.
	Absent State = "absent"
)

var _ encoding.TextUnmarshaler = (*State)(nil)

// UnmarshalText accepts started, stopped and absent.
func (s *State) UnmarshalText(b []byte) error {
	switch v := State(b); v {
	case Started, Stopped, Absent:
		*s = v
		return nil
	}
	return fmt.Errorf("state %q: must be one of started, stopped, absent", b)
}

// Username is the name of the registry's only user, as upstream.
const Username = "zuul"

// Spec is what Apply is asked to make true: the buildset_registry
// module's parameters, which the error messages name.
type Spec struct {
	// State is the desired state; empty means the default, started.
	State State `ansible:"state" default:"started" choices:"started,stopped,absent"`
	// Root is the directory holding the registry's configuration,
	// credentials, CA, log and content. It must be absolute.
	Root string `ansible:"buildset_registry_root,path" default:"~/buildset_registry"`
	// Port is the TCP port the registry listens on, 1-65535; only State
	// Started uses it. The module's default is upstream's 5000; a 0 is
	// refused rather than read as "unset" (upstream's socat would have
	// listened on a random port), so Go callers set it too.
	Port int `ansible:"buildset_registry_port" default:"5000"`
	// Host is the address clients use to reach the registry, returned as
	// buildset_registry.host and covered by the server certificate. Empty
	// means DefaultHost().
	Host string `ansible:"buildset_registry_host"`
	// Listen are the IP addresses to listen on; empty means every address,
	// IPv4 and IPv6.
	Listen []string `ansible:"buildset_registry_listen"`
	// PullThrough makes the registry a pull-through cache: a pull of an
	// image nobody pushed, in a repository of one of Namespaces, is
	// fetched from that namespace's upstream, stored and served
	// (registry.WithUpstreams).
	PullThrough bool `ansible:"buildset_registry_pull_through" default:"false"`
	// Namespaces are [registry host, upstream URL] pairs, as
	// use_buildset_registry takes them; zuul.DefaultNamespaces when nil.
	// Only PullThrough uses them. An upstream URL may carry a repository
	// prefix as its path (https://ir.example.org:5000/quay.io), to read an
	// intermediate registry's cache of that namespace.
	Namespaces [][]string `ansible:"buildset_registry_namespaces"`
	// UpstreamCA is a PEM CA trusted for the upstreams besides the
	// system's roots (the intermediate registry's).
	UpstreamCA string `ansible:"buildset_registry_upstream_ca"`
	// UpstreamTagTTL is how long a tag fetched from an upstream is served
	// before the upstream is asked again (0: at every pull).
	UpstreamTagTTL time.Duration `ansible:"buildset_registry_upstream_tag_ttl,seconds" default:"300"`
}

// upstreams checks the pull-through settings and returns the namespaces
// to cache, nil when pull-through is off.
func (s Spec) upstreams() ([]upstreamConfig, error) {
	if !s.PullThrough {
		return nil, nil
	}
	if s.UpstreamTagTTL < 0 {
		return nil, fmt.Errorf("buildset_registry_upstream_tag_ttl %s is negative", s.UpstreamTagTTL)
	}
	if s.UpstreamCA != "" {
		if _, err := pki.CertPool([]byte(s.UpstreamCA)); err != nil {
			return nil, fmt.Errorf("buildset_registry_upstream_ca: %w: give the PEM of the CA that signed the upstream's certificate", err)
		}
	}
	var out []upstreamConfig
	if s.Namespaces == nil {
		for _, ns := range zuul.DefaultNamespaces {
			out = append(out, upstreamConfig{Registry: ns.Registry, URL: ns.Upstream})
		}
	}
	seen := map[string]int{}
	for i, e := range s.Namespaces {
		if len(e) != 2 {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: must be a [registry-host, upstream-url] pair such as [quay.io, https://quay.io], got %d item(s)", i, len(e))
		}
		reg, u := strings.TrimSpace(e[0]), strings.TrimSpace(e[1])
		if j, dup := seen[reg]; dup {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: %s is already listed at index %d", i, reg, j)
		}
		seen[reg] = i
		out = append(out, upstreamConfig{Registry: reg, URL: u})
	}
	// The registry and the client check the rest (names usable as a
	// repository component, https URLs); their errors name the entry.
	for i, u := range out {
		if _, err := upstream.New(u.URL); err != nil {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: %w", i, err)
		}
		if u.Registry != "docker.io" && (strings.ContainsAny(u.Registry, "/:") || storage.ValidateRepository(u.Registry) != nil) {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: registry %q must be a lower-case registry host name without port, such as quay.io (the buildset registry stores its images under <registry>/)", i, u.Registry)
		}
	}
	return out, nil
}

// hostRE matches a DNS name: dot-separated labels of letters, digits,
// hyphens and underscores (seen in the wild in internal names), not starting
// or ending with a hyphen.
var hostRE = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$`)

// normalize validates s and fills in defaults. Each error names the module
// parameter to fix.
func (s Spec) normalize() (Spec, error) {
	// The state's default of its tag, for Go callers; the root and the
	// port have none here: an empty root is an error, never the default's
	// home directory, and a port 0 is refused.
	if err := ansible.ApplyDefaults(&s, "state"); err != nil {
		return s, err
	}
	if err := s.State.UnmarshalText([]byte(s.State)); err != nil {
		return s, err
	}
	if s.Root == "" {
		return s, fmt.Errorf("buildset_registry_root is empty: give the directory that holds the registry's data")
	}
	if !filepath.IsAbs(s.Root) {
		return s, fmt.Errorf("buildset_registry_root %q is not an absolute path", s.Root)
	}
	s.Root = filepath.Clean(s.Root)
	if s.Root == "/" {
		return s, fmt.Errorf("buildset_registry_root must not be /")
	}
	if s.State != Started {
		// Stopping needs only the root: the daemon is found by the lock
		// on its pid file, whatever port it serves.
		return s, nil
	}
	if s.Port < 1 || s.Port > 65535 {
		return s, fmt.Errorf("buildset_registry_port %d is not a TCP port: use 1-65535", s.Port)
	}
	s.Host = strings.TrimSpace(s.Host)
	if s.Host == "" {
		h, err := DefaultHost()
		if err != nil {
			return s, fmt.Errorf("buildset_registry_host is not set and %w: set it, normally to {{ ansible_host }}", err)
		}
		s.Host = h
	}
	if strings.HasPrefix(s.Host, "[") && strings.HasSuffix(s.Host, "]") {
		s.Host = s.Host[1 : len(s.Host)-1]
	}
	if ip := net.ParseIP(s.Host); ip != nil {
		s.Host = ip.String()
	} else if !hostRE.MatchString(s.Host) || len(s.Host) > 253 {
		return s, fmt.Errorf("buildset_registry_host %q is not a host name or IP address: give it without scheme, port or path, e.g. 203.0.113.5 or node1.example.org", s.Host)
	}
	var listen []string
	seen := map[string]bool{}
	for i, a := range s.Listen {
		a = strings.Trim(strings.TrimSpace(a), "[]")
		ip := net.ParseIP(a)
		if ip == nil {
			return s, fmt.Errorf("buildset_registry_listen[%d] %q is not an IP address: list addresses of this node to listen on, or leave it empty for all", i, s.Listen[i])
		}
		if !seen[ip.String()] {
			seen[ip.String()] = true
			listen = append(listen, ip.String())
		}
	}
	s.Listen = listen
	if _, err := s.upstreams(); err != nil {
		return s, err
	}
	return s, nil
}

// DefaultHost returns the node's main address: the source address of its
// route to the internet (IPv4, else IPv6), found without sending a packet,
// or else its first global unicast address. Upstream uses the inventory's
// ansible_host, which a module cannot see; the role passes it explicitly.
func DefaultHost() (string, error) {
	// Connecting a UDP socket only selects a route and a source address.
	// The destinations are documentation addresses (RFC 5737, RFC 3849).
	for _, probe := range []string{"198.51.100.1:9", "[2001:db8::1]:9"} {
		c, err := net.Dial("udp", probe)
		if err != nil {
			continue
		}
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if ip.IsGlobalUnicast() {
			return ip.String(), nil
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "", fmt.Errorf("this node has no routable address")
}
