// Package ratelimit emulates a rate-limited upstream registry (Docker
// Hub's pull limit, quay.io's 429s) in front of a real registry: a
// TLS-terminating reverse proxy that counts the requests it forwards per
// method and path and, once a quota of pulls is used up, answers 429 Too
// Many Requests with Retry-After and the TOOMANYREQUESTS error envelope
// Docker Hub sends, as a real upstream does. Tests and benchmarks read the
// counts to check how often content was fetched from the upstream.
//
// What counts against the quota is a pull as Docker Hub counts it: by
// default a GET of a manifest (Docker Hub's documented rule; HEAD requests
// are free) and here a GET of a blob too, so a test sees every fetch; Config.Counts
// changes it. The proxy can also be taken down (every request refused at
// the TCP level, as a registry that is unreachable) and brought back.
package ratelimit

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets the quota.
type Config struct {
	// Quota is the number of counted requests answered before the proxy
	// answers 429; 0 means no limit.
	Quota int
	// RetryAfter is sent with a 429 (whole seconds, at least 1; default
	// 60 s, as Docker Hub's limit window is hours).
	RetryAfter time.Duration
	// Counts says which requests count against the quota; nil counts GETs
	// of manifests and blobs.
	Counts func(*http.Request) bool
	// Latency delays every answer, and Bandwidth (bytes per second, 0 for
	// no limit) paces response bodies: a registry across the internet
	// rather than on loopback, for benchmarks.
	Latency   time.Duration
	Bandwidth int64
}

// Options are where the proxy listens and what it trusts.
type Options struct {
	// Listen is the listen address (default "127.0.0.1:0").
	Listen string
	// Certificate is the proxy's server certificate.
	Certificate tls.Certificate
	// UpstreamRoots verifies the registry's certificate.
	UpstreamRoots *x509.CertPool
}

// Proxy is a running rate-limiting proxy.
type Proxy struct {
	cfg      Config
	opts     Options
	upstream *url.URL
	rp       *httputil.ReverseProxy
	addr     string

	mu       sync.Mutex
	srv      *http.Server
	paths    map[string]int // "GET /v2/..." → requests forwarded
	counted  int
	refused  atomic.Int64
	requests atomic.Int64
}

// Start starts a proxy in front of the registry at upstream (host:port,
// reached over https).
func Start(upstream string, o Options, cfg Config) (*Proxy, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 60 * time.Second
	}
	if cfg.Counts == nil {
		cfg.Counts = IsPull
	}
	u, err := url.Parse("https://" + upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("ratelimit: upstream %q: want host:port", upstream)
	}
	p := &Proxy{cfg: cfg, opts: o, upstream: u, paths: map[string]int{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			// The registry's token realm and Location headers then point
			// back at the proxy.
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: o.UpstreamRoots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	return p, nil
}

func (p *Proxy) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(p.handle),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{p.opts.Certificate}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go srv.ServeTLS(ln, "", "")
}

// IsPull reports a GET of a manifest or a blob.
func IsPull(r *http.Request) bool {
	return r.Method == http.MethodGet && (strings.Contains(r.URL.Path, "/manifests/") || strings.Contains(r.URL.Path, "/blobs/sha"))
}

func (p *Proxy) handle(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	key := r.Method + " " + r.URL.Path
	p.mu.Lock()
	over := false
	if p.cfg.Counts(r) {
		if p.cfg.Quota > 0 && p.counted >= p.cfg.Quota {
			over = true
		} else {
			p.counted++
		}
	}
	if !over {
		p.paths[key]++
	}
	p.mu.Unlock()
	if over {
		p.refused.Add(1)
		secs := int((p.cfg.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		// Docker Hub's answer (docs.docker.com, "Docker Hub pull usage and
		// limits").
		fmt.Fprint(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}`)
		return
	}
	if p.cfg.Latency > 0 {
		select {
		case <-time.After(p.cfg.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if p.cfg.Bandwidth > 0 {
		w = &pacedWriter{ResponseWriter: w, rate: p.cfg.Bandwidth, start: time.Now()}
	}
	p.rp.ServeHTTP(w, r)
}

// pacedWriter sends a body no faster than rate bytes per second.
type pacedWriter struct {
	http.ResponseWriter
	rate  int64
	start time.Time
	sent  int64
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		k, err := w.ResponseWriter.Write(b[:n])
		total += k
		w.sent += int64(k)
		if err != nil {
			return total, err
		}
		b = b[n:]
		if due := time.Duration(float64(w.sent) / float64(w.rate) * float64(time.Second)); due > time.Since(w.start) {
			time.Sleep(due - time.Since(w.start))
		}
	}
	return total, nil
}

func (w *pacedWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Host is the proxy's host:port.
func (p *Proxy) Host() string { return p.addr }

// URL is https://<Host>.
func (p *Proxy) URL() string { return "https://" + p.addr }

// Count returns how many requests with method and a path ending in suffix
// were forwarded (not refused).
func (p *Proxy) Count(method, suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, v := range p.paths {
		m, path, _ := strings.Cut(k, " ")
		if m == method && strings.HasSuffix(path, suffix) {
			n += v
		}
	}
	return n
}

// Paths returns the forwarded requests per "METHOD path", sorted by key.
func (p *Proxy) Paths() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.paths))
	for k, v := range p.paths {
		out[k] = v
	}
	return out
}

// Summary renders Paths one per line, for test failures.
func (p *Proxy) Summary() string {
	paths := p.Paths()
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%4d %s\n", paths[k], k)
	}
	return b.String()
}

// Counted is the number of requests that counted against the quota and
// were forwarded; Refused the number answered 429; Requests every request
// received.
func (p *Proxy) Counted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counted
}

// Refused is the number of requests answered 429.
func (p *Proxy) Refused() int64 { return p.refused.Load() }

// Requests is the number of requests received.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Reset forgets the counts and the quota used.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paths, p.counted = map[string]int{}, 0
	p.refused.Store(0)
	p.requests.Store(0)
}

// SetQuota sets the number of counted requests answered before 429s,
// counting from those already answered; 0 lifts the limit.
func (p *Proxy) SetQuota(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.Quota = n
}

// Down closes the listener and every connection: the upstream is
// unreachable (connections refused) until Up.
func (p *Proxy) Down() error {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	if t, ok := p.rp.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	return srv.Close()
}

// Up listens again on the same address.
func (p *Proxy) Up() error {
	p.mu.Lock()
	up := p.srv != nil
	p.mu.Unlock()
	if up {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("ratelimit: listening again on %s: %w", p.addr, err)
	}
	p.serve(ln)
	return nil
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.Down() }
