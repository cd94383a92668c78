package transfer

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/imagegate/imagegate/pkg/oci"
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

// UserAgent is the User-Agent of every request imagegate sends to a
// registry or to Docker Hub's web API.
const UserAgent = "imagegate"

// endpointTransport is the transport stack of one registry: TLS as the
// endpoint says, plain HTTP refused, the retry policy, the user agent and
// a debug line per request. It also remembers how the registry
// authenticates (its challenge) and whether its basic credentials were
// checked, so that neither is asked twice.
type endpointTransport struct {
	ep   Endpoint
	auth authn.Authenticator
	// rt is the transport every request of this registry takes, under
	// authentication.
	rt http.RoundTripper
	// bases close idle connections when the Client is closed.
	bases []*http.Transport

	// probe is rt without retries, for the HTTPS attempt of a registry
	// that may fall back to plain HTTP.
	probe http.RoundTripper
	conv  *conventions

	mu        sync.Mutex
	challenge *oci.Challenge
	basicOK   bool
	// scheme is how the registry answered its ping: https, or http for a
	// loopback or insecure registry that does not speak TLS.
	scheme string
}

// transportConfig is what a Client decides for every registry's transport.
type transportConfig struct {
	retry RetryPolicy
	log   *slog.Logger
	// conns is the most requests in flight to one host.
	conns int
	// wrap, when set, wraps the finished stack (WithTransportWrapper).
	wrap func(http.RoundTripper) http.RoundTripper
	// conv are docker's registry conventions (certs directories,
	// insecure registries).
	conv *conventions
}

// newEndpointTransport builds the transport stack of the registry ep. It is
// the one place that decides how imagegate reaches a registry (which CAs
// it trusts, that nothing travels in plain HTTP, retries, user agent):
// copies, repository calls and Docker Hub's web API all take their
// transport from here, through a Client.
func newEndpointTransport(ep Endpoint, cfg transportConfig) (*endpointTransport, error) {
	conv := cfg.conv
	if conv == nil {
		d := defaultConventions()
		conv = &d
	}
	trust, err := conv.trust(ep.Host)
	if err != nil {
		return nil, err
	}
	regTLS, otherTLS, err := tlsConfigs(ep, trust, conv.insecure(ep.Host))
	if err != nil {
		return nil, err
	}
	reg := newHTTPTransport(regTLS, cfg.conns)
	other := reg
	if otherTLS != regTLS {
		other = newHTTPTransport(otherTLS, cfg.conns)
	}
	var base http.RoundTripper = reg
	bases := []*http.Transport{reg}
	if other != reg {
		base = hostRouter{host: oci.CanonicalHost(ep.Host), reg: reg, other: other}
		bases = append(bases, other)
	}
	guarded := plainHTTPGuard{next: base, conv: conv}
	rt, err := NewTransport(guarded, cfg.retry, cfg.log)
	if err != nil {
		return nil, err
	}
	var probe http.RoundTripper = observe{next: guarded, log: cfg.log}
	auth := authn.Anonymous
	if ep.Username != "" || ep.Password != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: ep.Username, Password: ep.Password})
	}
	rt = observe{next: rt, log: cfg.log}
	if cfg.wrap != nil {
		rt = cfg.wrap(rt)
		probe = cfg.wrap(probe)
	}
	return &endpointTransport{ep: ep, auth: auth, rt: rt, probe: probe, bases: bases, conv: conv, scheme: "https"}, nil
}

// tlsConfigs returns the TLS configuration for the registry host and the
// one for every other host. trust is what the certs directories hold for
// the registry host: its CAs join the endpoint's, its client certificates
// are presented to the registry host only. skipVerify is for a registry
// declared insecure.
func tlsConfigs(ep Endpoint, trust hostTrust, skipVerify bool) (reg, other *tls.Config, err error) {
	reg, other, err = baseTLSConfigs(ep, trust.roots)
	if err != nil {
		return nil, nil, err
	}
	if len(trust.certs) == 0 && !skipVerify {
		return reg, other, nil
	}
	r := reg.Clone()
	r.Certificates = trust.certs
	// dockerd does not verify the certificate of an insecure registry.
	r.InsecureSkipVerify = skipVerify //nolint:gosec // declared insecure by the user, as dockerd's insecure-registries
	return r, other, nil
}

func baseTLSConfigs(ep Endpoint, certsD []byte) (reg, other *tls.Config, err error) {
	sys, err := x509.SystemCertPool()
	if err != nil || sys == nil {
		sys = x509.NewCertPool()
	}
	if len(ep.CA) == 0 {
		if ep.NoSystemRoots {
			return nil, nil, fmt.Errorf("registry %s: NoSystemRoots needs a CA certificate", ep.Host)
		}
		if len(certsD) > 0 {
			sys = sys.Clone()
			sys.AppendCertsFromPEM(certsD)
		}
		c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: sys}
		return c, c, nil
	}
	withSys := sys.Clone()
	if !withSys.AppendCertsFromPEM(ep.CA) {
		return nil, nil, fmt.Errorf("registry %s: no PEM certificate found in the CA", ep.Host)
	}
	withSys.AppendCertsFromPEM(certsD)
	other = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: withSys}
	if !ep.NoSystemRoots {
		return other, other, nil
	}
	only := x509.NewCertPool()
	only.AppendCertsFromPEM(ep.CA)
	only.AppendCertsFromPEM(certsD)
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
	if oci.CanonicalHost(req.URL.Host) == h.host {
		return h.reg.RoundTrip(req)
	}
	return h.other.RoundTrip(req)
}

// plainHTTPGuard refuses requests that are not https, except to a
// loopback or declared insecure host; and never lets credentials travel
// over plain HTTP to a host that is not loopback.
type plainHTTPGuard struct {
	next http.RoundTripper
	conv *conventions
}

func (g plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		var err error
		switch {
		case req.URL.Scheme != "http" || !g.conv.plainHTTPAllowed(req.URL.Host):
			err = ErrPlainHTTP
		case req.Header.Get("Authorization") != "" && !IsLoopback(req.URL.Host):
			err = ErrCredentialsInClear
		}
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, fmt.Errorf("%s %s://%s%s: %w", req.Method, req.URL.Scheme, req.URL.Host, req.URL.Path, err)
		}
	}
	return g.next.RoundTrip(req)
}

// observe sets the user agent and logs every request at debug level:
// method, host and path (never the query, which may carry an upload
// session's state, nor headers), status and duration.
type observe struct {
	next http.RoundTripper
	log  *slog.Logger
}

func (o observe) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") == "" {
		r := req.Clone(req.Context())
		r.Header.Set("User-Agent", UserAgent)
		req = r
	}
	start := time.Now()
	resp, err := o.next.RoundTrip(req)
	if err == nil {
		o.log.Debug("registry request", "method", req.Method, "host", req.URL.Host, "path", req.URL.Path,
			"status", resp.StatusCode, "duration", time.Since(start))
	}
	return resp, err
}
