// Package faultproxy is a TLS-terminating reverse proxy that injects the
// failures of real networks and registries between a client and a
// registry, for tests of retry and resume behaviour.
//
// It forwards each request to the upstream registry over TLS, keeping the
// Host header, so the registry's Location headers and token realms point
// back at the proxy. Per request it may instead (or in addition):
//
//   - reset the connection (TCP RST), after reading part of a request body;
//   - answer 500, 502 or 503, before forwarding or after (the registry did
//     the work, the client never hears of it);
//   - answer 429 Too Many Requests with a Retry-After header;
//   - forward the response but cut its body short and drop the connection;
//   - delay the response;
//   - forward the response with one byte of its body changed (same length).
//
// Faults are decided by rates and a seed. The decision for a request is a
// hash of the seed, the request's method and path (upload session ids
// masked) and how many times that method and path were seen before, so a
// given seed gives the same faults to the same request sequence even when
// parallel requests interleave differently.
package faultproxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config says which faults to inject and how often. Rates are
// probabilities in [0, 1] per request; at most one fault hits a request,
// tried in the order of the fields.
type Config struct {
	// Seed makes the fault sequence reproducible.
	Seed uint64
	// Reset closes the connection with a TCP reset instead of answering,
	// after reading up to half of the request body.
	Reset float64
	// Error answers 500, 502 or 503: half of the time before forwarding,
	// half after the registry has handled the request.
	Error float64
	// Throttle answers 429 with Retry-After: RetryAfter (rounded up to whole
	// seconds, default 1).
	Throttle   float64
	RetryAfter time.Duration
	// Truncate forwards the request and sends the status, headers and half
	// of the response body, then drops the connection.
	Truncate float64
	// Slow delays the response by Delay (default 200ms).
	Slow  float64
	Delay time.Duration
	// Corrupt forwards the request and the whole response, with one byte
	// of the body (in its middle) changed: content that does not match its
	// digest, as a faulty disk or middlebox would deliver it.
	Corrupt float64
	// Match limits faults to the requests it returns true for; nil means
	// every request. Requests it rejects are forwarded untouched.
	Match func(*http.Request) bool
	// FailAll, when non-zero, answers every request with this status
	// without forwarding: a registry that is down.
	FailAll int
}

func (c Config) validate() error {
	for n, r := range map[string]float64{"Reset": c.Reset, "Error": c.Error, "Throttle": c.Throttle, "Truncate": c.Truncate, "Slow": c.Slow, "Corrupt": c.Corrupt} {
		if r < 0 || r > 1 {
			return fmt.Errorf("faultproxy: %s rate %v is not in [0, 1]", n, r)
		}
	}
	if c.Reset+c.Error+c.Throttle+c.Truncate+c.Slow+c.Corrupt > 1 {
		return errors.New("faultproxy: the rates add up to more than 1")
	}
	if c.FailAll != 0 && (c.FailAll < 400 || c.FailAll > 599) {
		return fmt.Errorf("faultproxy: FailAll %d is not an HTTP error status", c.FailAll)
	}
	return nil
}

// Stats counts what the proxy did.
type Stats struct {
	Requests                                                   int64
	Resets, Errors, Throttles, Truncations, Slows, Corruptions int64
	// BytesUp are request body bytes forwarded to the registry; BytesDown
	// response body bytes sent back.
	BytesUp, BytesDown int64
	// ByKind counts requests per method and kind of path, as Kind names
	// them ("PUT blob upload", "GET tags", ...).
	ByKind map[string]int64
}

// Faults is the number of requests that got a fault.
func (s Stats) Faults() int64 {
	return s.Resets + s.Errors + s.Throttles + s.Truncations + s.Slows + s.Corruptions
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	ln       net.Listener
	srv      *http.Server
	rp       *httputil.ReverseProxy
	upstream *url.URL

	mu     sync.Mutex
	cfg    Config
	seen   map[string]uint64
	byKind map[string]int64

	requests, resets, errs, throttles, truncations, slows, corruptions atomic.Int64
	up, down                                                           atomic.Int64
}

// Options are where the proxy listens and what it trusts.
type Options struct {
	// Listen is the listen address (default "127.0.0.1:0"; "[::1]:0" for
	// IPv6).
	Listen string
	// Certificate is the proxy's server certificate; clients must trust
	// its issuer and it must cover the listen address.
	Certificate tls.Certificate
	// UpstreamRoots verifies the registry's certificate.
	UpstreamRoots *x509.CertPool
}

// Start starts a proxy to the registry at upstream (host:port, reached
// over https).
func Start(upstream string, o Options, cfg Config) (*Proxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	u, err := url.Parse("https://" + upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: upstream %q: want host:port", upstream)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{ln: ln, upstream: u, cfg: cfg, seen: map[string]uint64{}, byKind: map[string]int64{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: o.UpstreamRoots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if cut, _ := resp.Request.Context().Value(truncateKey{}).(bool); cut {
				resp.Body = &cutReader{r: resp.Body, left: max(resp.ContentLength/2, 1)}
				p.truncations.Add(1)
			}
			if bad, _ := resp.Request.Context().Value(corruptKey{}).(bool); bad && resp.ContentLength > 0 {
				resp.Body = &flipReader{r: resp.Body, at: resp.ContentLength / 2}
				p.corruptions.Add(1)
			}
			resp.Body = &countReader{r: resp.Body, n: &p.down}
			return nil
		},
		ErrorLog: quiet,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "faultproxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{o.Certificate}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		// HTTP/1.1 only, so a reset can hijack the connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     quiet,
	}
	go p.srv.ServeTLS(ln, "", "")
	return p, nil
}

// Host is the proxy's host:port, an IPv6 address in brackets.
func (p *Proxy) Host() string { return p.ln.Addr().String() }

// SetConfig replaces the fault configuration for the requests to come.
func (p *Proxy) SetConfig(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	return nil
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	kinds := make(map[string]int64, len(p.byKind))
	for k, v := range p.byKind {
		kinds[k] = v
	}
	p.mu.Unlock()
	return Stats{Requests: p.requests.Load(), Resets: p.resets.Load(), Errors: p.errs.Load(),
		Throttles: p.throttles.Load(), Truncations: p.truncations.Load(), Slows: p.slows.Load(), Corruptions: p.corruptions.Load(),
		BytesUp: p.up.Load(), BytesDown: p.down.Load(), ByKind: kinds}
}

// Close stops the proxy and drops open connections.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	if t, ok := p.rp.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	return err
}

type fault int

const (
	none fault = iota
	reset
	errBefore
	errAfter
	throttle
	truncate
	slow
	corrupt
)

type (
	truncateKey struct{}
	corruptKey  struct{}
)

// quiet swallows the logs of the reverse proxy and server: aborted
// responses and dropped connections are the point here.
var quiet = log.New(io.Discard, "", 0)

// Kind names the kind of a registry request: "GET manifest", "PUT blob
// upload", ...
func Kind(r *http.Request) string {
	path := r.URL.Path
	k := "other"
	switch {
	case path == "/v2/" || path == "/v2":
		k = "ping"
	case strings.Contains(path, "/blobs/uploads"):
		k = "blob upload"
	case strings.Contains(path, "/blobs/"):
		k = "blob"
	case strings.Contains(path, "/manifests/"):
		k = "manifest"
	case strings.HasSuffix(path, "/tags/list"):
		k = "tags"
	case strings.Contains(path, "token") || strings.Contains(path, "auth"):
		k = "token"
	}
	return r.Method + " " + k
}

// key is the request's identity for fault decisions: method and path,
// with the upload session id masked.
func key(r *http.Request) string {
	path := r.URL.Path
	if i := strings.Index(path, "/blobs/uploads/"); i >= 0 {
		path = path[:i] + "/blobs/uploads/*"
	}
	return r.Method + " " + path
}

func (p *Proxy) decide(r *http.Request) (fault, byte, Config) {
	p.mu.Lock()
	cfg := p.cfg
	k := key(r)
	n := p.seen[k]
	p.seen[k] = n + 1
	p.byKind[Kind(r)]++
	p.mu.Unlock()
	if cfg.Match != nil && !cfg.Match(r) {
		return none, 0, cfg
	}
	var buf [8]byte
	h := sha256.New()
	binary.BigEndian.PutUint64(buf[:], cfg.Seed)
	h.Write(buf[:])
	h.Write([]byte(k))
	binary.BigEndian.PutUint64(buf[:], n)
	h.Write(buf[:])
	sum := h.Sum(nil)
	x := float64(binary.BigEndian.Uint64(sum[:8])>>11) / float64(1<<53)
	sub := sum[8] // picks a variant of the fault
	for _, c := range []struct {
		rate float64
		f    fault
	}{{cfg.Reset, reset}, {cfg.Error, errBefore}, {cfg.Throttle, throttle}, {cfg.Truncate, truncate}, {cfg.Slow, slow}, {cfg.Corrupt, corrupt}} {
		if x < c.rate {
			if c.f == errBefore && sub%2 == 1 {
				return errAfter, sub / 2, cfg
			}
			return c.f, sub / 2, cfg
		}
		x -= c.rate
	}
	return none, 0, cfg
}

var errorStatuses = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	f, variant, cfg := p.decide(r)
	if cfg.FailAll != 0 {
		p.errs.Add(1)
		writeError(w, cfg.FailAll)
		return
	}
	if r.Body != nil {
		r.Body = &countReader{r: r.Body, n: &p.up}
	}
	status := errorStatuses[int(variant)%len(errorStatuses)]
	switch f {
	case reset:
		p.resets.Add(1)
		if r.ContentLength > 0 {
			io.CopyN(io.Discard, r.Body, r.ContentLength/2)
		}
		hijackReset(w)
		return
	case errBefore:
		p.errs.Add(1)
		writeError(w, status)
		return
	case throttle:
		p.throttles.Add(1)
		ra := cfg.RetryAfter
		if ra <= 0 {
			ra = time.Second
		}
		w.Header().Set("Retry-After", strconv.Itoa(int((ra+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests)
		return
	case slow:
		p.slows.Add(1)
		d := cfg.Delay
		if d <= 0 {
			d = 200 * time.Millisecond
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	case truncate:
		r = r.WithContext(context.WithValue(r.Context(), truncateKey{}, true))
	case corrupt:
		r = r.WithContext(context.WithValue(r.Context(), corruptKey{}, true))
	case errAfter:
		p.errs.Add(1)
		rec := &discardWriter{h: http.Header{}}
		p.rp.ServeHTTP(rec, r)
		writeError(w, status)
		return
	}
	p.rp.ServeHTTP(w, r)
}

func writeError(w http.ResponseWriter, status int) {
	code := "UNAVAILABLE"
	if status == http.StatusTooManyRequests {
		code = "TOOMANYREQUESTS"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"faultproxy: injected %d"}]}`+"\n", code, status)
}

// hijackReset drops the connection with a TCP reset (SO_LINGER 0).
func hijackReset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	raw.Close()
}

// cutReader returns an error after left bytes: the reverse proxy then
// aborts the response mid-body.
type cutReader struct {
	r    io.ReadCloser
	left int64
}

var errCut = errors.New("faultproxy: response body cut short")

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

// flipReader passes a body through with the byte at offset at inverted.
type flipReader struct {
	r   io.ReadCloser
	at  int64
	off int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }

type countReader struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countReader) Close() error { return c.r.Close() }

// discardWriter swallows the registry's answer of an errAfter fault.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
