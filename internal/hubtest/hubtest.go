// Package hubtest emulates Docker Hub for tests, in front of a real
// registry: Docker Hub itself cannot be reached from imagegate's test
// machines, and only its web API may be emulated.
//
// A Server has two TLS listeners on loopback, with a CA of its own:
//
//   - URL plays https://hub.docker.com, the web API: POST /v2/users/login/
//     (a JWT for the account, 401 {"detail":"Incorrect authentication
//     credentials"} otherwise), GET /v2/repositories/<ns>/<repo>/tags/ (and
//     the newer /v2/namespaces/<ns>/repositories/<repo>/tags) with Docker
//     Hub's pagination {"count","next","previous","results"} (page_size 10
//     by default, at most 100, newest first), and DELETE
//     /v2/repositories/<ns>/<repo>/tags/<tag>/ (204; 404 for an unknown tag;
//     403 outside the account's namespaces). Every call but the login needs
//     "Authorization: Bearer <jwt>" (or "JWT <jwt>", which zuul-jobs
//     sends); the emulated repositories are private.
//   - RegistryHost plays registry-1.docker.io: a transparent proxy to the
//     backend registry (Host header kept, so a token realm points back at
//     the proxy). Like Docker Hub's registry endpoint, it refuses DELETE of
//     manifests: tags are deleted through the web API. A manifest PUT under
//     a tag through the proxy records the tag's last_updated time.
//
// The listing reflects the backend's tags (GET /v2/<name>/tags/list), with
// the digest, media type and platforms of each; deletion removes the tag in
// the backend, which must support deleting a single tag (imagegate's
// registry does; distribution 2.8 does not). A tag's last_updated is the
// time of the last push through the proxy, the time set by SetLastUpdated
// (to make a tag older than the 24-hour sweep), or else the time the
// Server first saw it.
package hubtest

import (
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// Backend is the real registry behind the emulation.
type Backend struct {
	// Host is its host:port.
	Host string
	// CA is the PEM certificate to trust for it.
	CA []byte
	// Username and Password may push and delete there. They are also the
	// Docker Hub account's credentials unless WithAccount says otherwise,
	// as one Docker Hub account serves both the web API and the registry.
	Username, Password string
}

// Counts are the requests a Server received.
type Counts struct {
	// Hub counts web API requests, Registry requests to the registry proxy
	// (token requests included).
	Hub, Registry int64
}

// Total is Hub + Registry.
func (c Counts) Total() int64 { return c.Hub + c.Registry }

// Server is a running emulation. Its methods are safe for concurrent use.
type Server struct {
	// URL is the web API's base URL, https://127.0.0.1:<port>.
	URL string
	// RegistryHost is the registry proxy's 127.0.0.1:<port>.
	RegistryHost string
	// CACert is the PEM certificate that signed both listeners'
	// certificates.
	CACert []byte

	backend    Backend
	user, pass string
	namespaces map[string]bool
	tokenTTL   time.Duration
	key        []byte
	reg        *transfer.Client

	mu      sync.Mutex
	updated map[string]time.Time // "<repo>:<tag>"
	images  map[string]imageInfo // by manifest digest
	calls   []string

	hubN, regN atomic.Int64
}

type imageInfo struct {
	size   int64
	images []map[string]any
}

// Option configures a Server.
type Option func(*Server)

// WithAccount sets the Docker Hub account's credentials, when they must
// differ from the backend's.
func WithAccount(username, password string) Option {
	return func(s *Server) { s.user, s.pass = username, password }
}

// WithNamespaces limits the namespaces the account may delete tags in
// (its own organisations); the default is every namespace.
func WithNamespaces(ns ...string) Option {
	return func(s *Server) {
		s.namespaces = map[string]bool{}
		for _, n := range ns {
			s.namespaces[n] = true
		}
	}
}

// WithTokenTTL sets how long a login token is valid (default one hour), to
// test expiry.
func WithTokenTTL(d time.Duration) Option { return func(s *Server) { s.tokenTTL = d } }

// New starts a Server in front of b and stops it when t ends.
func New(t testing.TB, b Backend, opts ...Option) *Server {
	t.Helper()
	s := &Server{backend: b, user: b.Username, pass: b.Password, tokenTTL: time.Hour,
		updated: map[string]time.Time{}, images: map[string]imageInfo{}}
	for _, o := range opts {
		o(s)
	}
	s.key = make([]byte, 32)
	if _, err := rand.Read(s.key); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("hubtest CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := cert.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	s.CACert = ca.CertPEM

	backendTLS := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(b.CA) > 0 {
		pool, err := pki.CertPool(b.CA)
		if err != nil {
			t.Fatalf("hubtest: backend CA: %v", err)
		}
		backendTLS.RootCAs = pool
	}
	backendRT := &http.Transport{TLSClientConfig: backendTLS, MaxIdleConnsPerHost: 32}
	s.reg, err = transfer.New(transfer.WithEndpoint(transfer.Endpoint{Host: b.Host, Username: b.Username, Password: b.Password, CA: b.CA}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.reg.Close)

	hub := s.listen(t, pair, http.HandlerFunc(s.serveHub))
	s.URL = "https://" + hub
	target, _ := url.Parse("https://" + b.Host)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport:      backendRT,
		ModifyResponse: s.recordPush,
	}
	s.RegistryHost = s.listen(t, pair, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.regN.Add(1)
		if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/manifests/") {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"errors": []map[string]any{{
				"code": oci.CodeUnsupported, "message": "The operation is unsupported.",
				"detail": "Docker Hub deletes tags through its web API, not the registry API"}}})
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	return s
}

func (s *Server) listen(t testing.TB, pair tls.Certificate, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second}
	go srv.ServeTLS(l, "", "")
	// Close, not Shutdown: a test is over, and a client's idle keep-alive
	// connection must not hold the cleanup for the grace period.
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// Client returns an HTTP client trusting the Server's CA.
func (s *Server) Client() *http.Client {
	pool, _ := pki.CertPool(s.CACert)
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// SetLastUpdated sets a tag's last_updated time, for example to make it
// older than the stale-tag sweep's limit.
func (s *Server) SetLastUpdated(repo, tag string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updated[repo+":"+tag] = t.UTC()
}

// LastUpdated returns a tag's last_updated time, if the Server knows it.
func (s *Server) LastUpdated(repo, tag string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.updated[repo+":"+tag]
	return t, ok
}

// Requests returns the requests received so far.
func (s *Server) Requests() Counts { return Counts{Hub: s.hubN.Load(), Registry: s.regN.Load()} }

// ResetRequests sets the request counts to zero.
func (s *Server) ResetRequests() { s.hubN.Store(0); s.regN.Store(0) }

// Calls returns the web API calls received, as "METHOD path" with the
// status answered, in order.
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *Server) recordPush(resp *http.Response) error {
	r := resp.Request
	if r.Method != http.MethodPut || resp.StatusCode != http.StatusCreated {
		return nil
	}
	repo, ref, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
	if !ok || strings.Contains(ref, ":") {
		return nil
	}
	s.SetLastUpdated(repo, ref, time.Now())
	return nil
}

// statusWriter remembers the status, for the call log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
