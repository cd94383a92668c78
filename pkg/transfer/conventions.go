package transfer

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
)

// Docker's registry conventions, as dockerd, podman and skopeo apply them
// on the host where they run, and as every registry connection of a Client
// applies them (newEndpointTransport):
//
//   - Trust: the system roots, plus every *.crt file of
//     <certs dir>/<host[:port]>/ (DefaultCertsDirs: /etc/docker/certs.d,
//     /etc/containers/certs.d), plus the endpoint's CA; a <name>.cert
//     with its <name>.key there is a client certificate.
//   - Plain HTTP: a loopback registry (localhost, 127.0.0.0/8, ::1) is
//     asked over HTTPS first and over HTTP when HTTPS fails, as dockerd
//     does; any other host only when it is declared insecure
//     (WithInsecureRegistries, or insecure-registries in dockerd's
//     daemon.json). A declared insecure registry's TLS certificate is not
//     verified either, as dockerd does.
//   - Credentials (basic or a token) are never sent over plain HTTP to a
//     host that is not loopback: an insecure registry outside the machine
//     is reached anonymously or not at all.

// DefaultCertsDirs are the directories of per-registry certificates that
// docker (certs.d) and podman, skopeo and cri-o (containers/certs.d) read.
var DefaultCertsDirs = []string{"/etc/docker/certs.d", "/etc/containers/certs.d"}

// DefaultDockerDaemonConfig is dockerd's configuration file, whose
// insecure-registries a Client honours.
const DefaultDockerDaemonConfig = "/etc/docker/daemon.json"

// ErrCredentialsInClear is a request that would send credentials over
// plain HTTP to a host that is not loopback.
var ErrCredentialsInClear = errors.New("refusing to send credentials over plain HTTP to a host that is not loopback")

// conventions are a Client's reading of docker's registry conventions.
type conventions struct {
	certsDirs []string
	// insecureHosts are canonical host[:port] names, insecureNets CIDRs.
	insecureHosts map[string]bool
	insecureNets  []netip.Prefix
	daemonConfig  string
}

func defaultConventions() conventions {
	return conventions{certsDirs: slices.Clone(DefaultCertsDirs), insecureHosts: map[string]bool{}, daemonConfig: DefaultDockerDaemonConfig}
}

// WithCertsDirs sets the directories of per-registry certificates
// (<dir>/<host[:port]>/*.crt, *.cert and *.key); the default is
// DefaultCertsDirs, and none disables them. Tests point it at their own
// directories.
func WithCertsDirs(dirs ...string) Option {
	return func(c *Client) error {
		c.conv.certsDirs = slices.Clone(dirs)
		return nil
	}
}

// WithInsecureRegistries declares registries that may be reached over
// plain HTTP, and whose TLS certificates are not verified, as dockerd's
// insecure-registries: host[:port] names or CIDRs (which match registries
// given by IP address). Loopback registries need no declaration. The
// default is none, plus dockerd's (WithDockerDaemonConfig).
func WithInsecureRegistries(entries ...string) Option {
	return func(c *Client) error {
		for _, e := range entries {
			if err := c.conv.addInsecure(e); err != nil {
				return fmt.Errorf("insecure registry %q: %w", e, err)
			}
		}
		return nil
	}
}

// WithDockerDaemonConfig sets the dockerd configuration file whose
// insecure-registries are honoured (default DefaultDockerDaemonConfig); ""
// reads none. A file that does not exist is no declaration; one that does
// not parse fails New, naming it.
func WithDockerDaemonConfig(path string) Option {
	return func(c *Client) error {
		c.conv.daemonConfig = path
		return nil
	}
}

// CheckInsecureRegistries checks entries as WithInsecureRegistries does,
// for callers that validate their parameters before any I/O.
func CheckInsecureRegistries(entries []string) error {
	cv := defaultConventions()
	for _, e := range entries {
		if err := cv.addInsecure(e); err != nil {
			return fmt.Errorf("insecure registry %q: %w", e, err)
		}
	}
	return nil
}

func (cv *conventions) addInsecure(e string) error {
	e = strings.TrimSpace(e)
	if e == "" {
		return errors.New("empty entry")
	}
	if strings.Contains(e, "://") {
		return errors.New("give host[:port] or a CIDR, without a scheme")
	}
	if p, err := netip.ParsePrefix(e); err == nil {
		cv.insecureNets = append(cv.insecureNets, p.Masked())
		return nil
	}
	if strings.ContainsAny(e, "/ @?#") {
		return errors.New("give host[:port] or a CIDR")
	}
	cv.insecureHosts[oci.CanonicalHost(e)] = true
	return nil
}

// load reads dockerd's insecure-registries.
func (cv *conventions) load() error {
	if cv.daemonConfig == "" {
		return nil
	}
	b, err := os.ReadFile(cv.daemonConfig)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading dockerd's configuration: %w", err)
	}
	var cfg struct {
		Insecure []string `json:"insecure-registries"`
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s does not parse: %w; fix the file (dockerd would not start with it either)", cv.daemonConfig, err)
	}
	for _, e := range cfg.Insecure {
		if err := cv.addInsecure(e); err != nil {
			return fmt.Errorf("%s: insecure-registries entry %q: %w", cv.daemonConfig, e, err)
		}
	}
	return nil
}

// splitHost returns the host of host[:port] without brackets.
func splitHost(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// IsLoopback reports whether host[:port] names this machine: localhost,
// 127.0.0.0/8 or ::1. Names are not resolved.
func IsLoopback(hostport string) bool {
	h := strings.ToLower(splitHost(hostport))
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// insecure reports whether host[:port] is declared insecure.
func (cv *conventions) insecure(hostport string) bool {
	if cv.insecureHosts[oci.CanonicalHost(hostport)] {
		return true
	}
	if a, err := netip.ParseAddr(splitHost(hostport)); err == nil {
		for _, p := range cv.insecureNets {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
	}
	return false
}

// plainHTTPAllowed reports whether host[:port] may be reached over plain
// HTTP: loopback or declared insecure.
func (cv *conventions) plainHTTPAllowed(hostport string) bool {
	return IsLoopback(hostport) || cv.insecure(hostport)
}

// hostTrust is what the certs directories say of one registry host.
type hostTrust struct {
	// roots are PEM certificates to trust; certs client certificates.
	roots []byte
	certs []tls.Certificate
}

// trust reads <dir>/<host[:port]>/ of every certs directory, as docker
// does: *.crt are CAs, <name>.cert with <name>.key a client certificate.
// An unreadable or invalid file is an error naming it.
func (cv *conventions) trust(hostport string) (hostTrust, error) {
	var t hostTrust
	names := []string{strings.ToLower(hostport)}
	if h, p, err := net.SplitHostPort(hostport); err == nil && p == "443" {
		names = append(names, strings.ToLower(h))
	}
	for _, root := range cv.certsDirs {
		for _, n := range names {
			dir := filepath.Join(root, n)
			if err := t.readDir(dir); err != nil {
				return hostTrust{}, fmt.Errorf("registry %s: certificates in %s: %w", hostport, dir, err)
			}
		}
	}
	return t, nil
}

func (t *hostTrust) readDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	files := map[string]bool{}
	for _, e := range entries {
		files[e.Name()] = true
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := filepath.Join(dir, n)
		switch filepath.Ext(n) {
		case ".crt":
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("%s is not readable: %w", path, err)
			}
			if _, err := pki.CertPool(b); err != nil {
				return fmt.Errorf("%s: %w: a .crt file there must hold the PEM of a CA certificate", path, err)
			}
			t.roots = append(append(t.roots, b...), '\n')
		case ".cert":
			key := strings.TrimSuffix(path, ".cert") + ".key"
			if !files[strings.TrimSuffix(n, ".cert")+".key"] {
				return fmt.Errorf("client certificate %s has no key %s", path, key)
			}
			c, err := tls.LoadX509KeyPair(path, key)
			if err != nil {
				return fmt.Errorf("client certificate %s with key %s: %w", path, key, err)
			}
			t.certs = append(t.certs, c)
		case ".key":
			if !files[strings.TrimSuffix(n, ".key")+".cert"] {
				return fmt.Errorf("key %s has no client certificate %s", path, strings.TrimSuffix(path, ".key")+".cert")
			}
		}
	}
	return nil
}

// daemonConfigName names dockerd's configuration file in messages.
func (cv *conventions) daemonConfigName() string {
	if cv.daemonConfig == "" {
		return DefaultDockerDaemonConfig
	}
	return cv.daemonConfig
}
