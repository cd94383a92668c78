package transfer

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Endpoint is how to reach one registry: its credentials and the CA
// certificates to trust for it. Both stay in memory.
type Endpoint struct {
	// Host is host[:port], an IPv6 literal in brackets: "[::1]:5000".
	Host string
	// Username and Password authenticate to the registry (HTTP basic, or
	// exchanged for a bearer token); both empty means anonymous.
	Username, Password string
	// CA holds PEM certificates to trust for this registry, on top of the
	// system roots unless NoSystemRoots is set.
	CA []byte
	// NoSystemRoots trusts only CA for the registry host itself: for a
	// buildset registry, whose certificate a job has just made. Other hosts
	// the registry sends the client to (a token realm, a storage redirect)
	// are checked against the system roots and CA.
	NoSystemRoots bool
}

// String names the endpoint without its secrets.
func (e Endpoint) String() string {
	if e.Username == "" {
		return e.Host + " (anonymous)"
	}
	return e.Host + " (as " + e.Username + ")"
}

// canonicalHost is the key endpoints are looked up by: lower case, no
// default port, docker.io's aliases folded.
func canonicalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(h, ":443")
	if reg, err := name.NewRegistry(h, name.WeakValidation); err == nil {
		h = reg.RegistryStr()
	}
	return h
}

// endpointTransport is the transport stack of one registry: TLS as the
// endpoint says, plain HTTP refused, and the retry policy.
type endpointTransport struct {
	ep   Endpoint
	auth authn.Authenticator
	// rt is the retrying transport every request of this registry takes.
	rt http.RoundTripper
	// base closes idle connections when the Copier is closed.
	bases []*http.Transport

	mu        sync.Mutex
	challenge *transport.Challenge
}

func newEndpointTransport(ep Endpoint, c *Copier) (*endpointTransport, error) {
	regTLS, otherTLS, err := tlsConfigs(ep)
	if err != nil {
		return nil, err
	}
	reg := newHTTPTransport(regTLS, c.maxRequests())
	other := reg
	if otherTLS != regTLS {
		other = newHTTPTransport(otherTLS, c.maxRequests())
	}
	var base http.RoundTripper = reg
	bases := []*http.Transport{reg}
	if other != reg {
		base = hostRouter{host: canonicalHost(ep.Host), reg: reg, other: other}
		bases = append(bases, other)
	}
	rt, err := NewTransport(plainHTTPGuard{next: base}, c.retry, c.log)
	if err != nil {
		return nil, err
	}
	auth := authn.Anonymous
	if ep.Username != "" || ep.Password != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: ep.Username, Password: ep.Password})
	}
	return &endpointTransport{ep: ep, auth: auth, rt: rt, bases: bases}, nil
}

// tlsConfigs returns the TLS configuration for the registry host and the
// one for every other host.
func tlsConfigs(ep Endpoint) (reg, other *tls.Config, err error) {
	sys, err := x509.SystemCertPool()
	if err != nil || sys == nil {
		sys = x509.NewCertPool()
	}
	if len(ep.CA) == 0 {
		if ep.NoSystemRoots {
			return nil, nil, fmt.Errorf("registry %s: NoSystemRoots needs a CA certificate", ep.Host)
		}
		c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: sys}
		return c, c, nil
	}
	withSys := sys.Clone()
	if !withSys.AppendCertsFromPEM(ep.CA) {
		return nil, nil, fmt.Errorf("registry %s: no PEM certificate found in the CA", ep.Host)
	}
	other = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: withSys}
	if !ep.NoSystemRoots {
		return other, other, nil
	}
	only := x509.NewCertPool()
	only.AppendCertsFromPEM(ep.CA)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: only}, other, nil
}

func newHTTPTransport(tc *tls.Config, conns int) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		// One connection per request in flight, kept for the next one:
		// HTTP/1.1 streams in parallel over separate connections, where
		// HTTP/2 would share one connection's flow-control window. An
		// idle pool smaller than the requests in flight closes the
		// surplus after each burst and dials (a TLS handshake on both
		// sides) for the next.
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: conns,
	}
}

// hostRouter sends requests for the registry host through reg and every
// other request through other.
type hostRouter struct {
	host       string
	reg, other http.RoundTripper
}

func (h hostRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	if canonicalHost(req.URL.Host) == h.host {
		return h.reg.RoundTrip(req)
	}
	return h.other.RoundTrip(req)
}
