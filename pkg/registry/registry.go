// Package registry is imagegate's OCI registry: an http.Handler serving the
// OCI distribution spec v1.1 API (/v2/) and a Docker token endpoint
// (/auth/token) over a storage.Driver. The buildset registry and the
// intermediate registry are this handler with different drivers and users.
//
// It implements the whole spec: blob uploads (monolithic POST+PUT, single
// POST with digest, chunked PATCH with Content-Range and 416 on
// out-of-order chunks, streamed PATCH), blob GET/HEAD with Range (GETs
// optionally redirected to the store, WithBlobRedirect), cross-repository
// and anonymous mounts, blob delete; image manifests and indexes (OCI and
// Docker schema 2) by tag and digest, with subject,
// OCI-Subject, tag parameters (OCI-Tag) and the referrers API with
// artifactType filtering; tag lists and the catalog with n/last and Link
// pagination; tag and manifest deletes; sha256 and sha512 digests. Errors
// use the spec's codes and JSON envelope (errors.go holds the one table of
// codes and the one writer). Manifests are limited to DefaultMaxManifestSize
// (4 MiB, the size the spec asks registries to accept) unless
// WithMaxManifestSize says otherwise.
//
// # Authentication
//
// Access follows zuul-registry: named users with read or write access;
// writes always need a write user's credentials; reads are open to anyone
// unless WithAnonymousRead(false), because the docker daemon sends its
// Docker Hub credentials to a registry mirror, and a mirror must serve pulls
// regardless. Clients are steered to the Docker token flow: a request
// lacking access gets 401 with
//
//	WWW-Authenticate: Bearer realm="https://<request host>/auth/token",service="imagegate",scope="repository:<name>:pull,push"
//
// and the token endpoint (GET with basic credentials, or the OAuth2 POST
// form containerd and BuildKit use) returns a short-lived token (see
// DefaultTokenTTL) carrying the granted access, scoped as distribution's
// tokens are: the repositories and actions asked for that the caller may
// have, and nothing else (scope.go), signed with HMAC-SHA256
// under a key that is random per New unless WithTokenKey sets one. Basic
// credentials sent directly on /v2/ requests are accepted too, for simple
// clients. The token flow is what every client (docker, podman/skopeo,
// containerd, BuildKit, go-containerregistry) handles best, and after one
// token request per scope each call costs one HMAC instead of a credential
// check.
//
// Passwords are checked without bcrypt: the configured passwords are hashed
// once with SHA-256 in New, and a presented password is hashed and compared
// in constant time. Bcrypt's cost protects low-entropy passwords in a file
// that may leak; here the hashes live only in process memory and the
// passwords are generated with at least 128 bits of randomness, so a
// deliberately slow hash would only cost about 2 ms of CPU per basic-auth
// request (and per token) for no gain.
//
// The handler holds no global state: every Registry carries its own driver,
// users, key and logger, and every storage failure is answered with a spec
// error the client can retry (503 UNAVAILABLE with Retry-After), except a
// full store (storage.ErrNoSpace), which is final and says so (507
// Insufficient Storage, DENIED, "no space left").
package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// DefaultMaxManifestSize is the largest manifest accepted unless
// WithMaxManifestSize changes it: 4 MiB, the size the OCI distribution spec
// says clients and registries should expect to support.
const DefaultMaxManifestSize = 4 << 20

// DefaultTokenTTL is how long a bearer token is valid unless WithTokenTTL
// changes it. Clients fetch a new one when a request is refused.
const DefaultTokenTTL = 15 * time.Minute

// DefaultService is the service name in the bearer challenge unless
// WithService changes it.
const DefaultService = "imagegate"

// Registry is the OCI registry handler. Create it with New.
type Registry struct {
	driver      storage.Driver
	users       map[string]credential
	anonRead    bool
	log         *slog.Logger
	tokenKey    []byte
	tokenTTL    time.Duration
	maxManifest int64
	service     string
	realm       string
	now         func() time.Time
	blobURLs    storage.BlobURLer // nil unless blob GETs redirect
	proxy       *proxy            // nil unless pulls go through to upstreams
}

// credential is a configured user, with the SHA-256 of the password.
type credential struct {
	sum    [sha256.Size]byte
	access Access
}

type config struct {
	users       []User
	anonRead    bool
	log         *slog.Logger
	tokenKey    []byte
	tokenTTL    time.Duration
	maxManifest int64
	service     string
	realm       string
	now         func() time.Time
	redirect    bool
	upstreams   []UpstreamNamespace
	tagTTL      time.Duration
	fetchTO     time.Duration
}

// Option configures a Registry.
type Option func(*config)

// WithUsers adds named users with read or write access. Calls accumulate.
// Default: no users (nobody can write).
func WithUsers(users ...User) Option {
	return func(c *config) { c.users = append(c.users, users...) }
}

// WithAnonymousRead allows or refuses reads without credentials. Default:
// allowed (a registry mirror must accept pulls whatever credentials the
// docker daemon sends it).
func WithAnonymousRead(allow bool) Option {
	return func(c *config) { c.anonRead = allow }
}

// WithLogger sets the logger for request and error logs. Credentials and
// tokens are never logged. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.log = l }
}

// WithTokenKey sets the HMAC-SHA256 key signing bearer tokens, at least 32
// bytes; registries sharing a key accept each other's tokens (replicas).
// Default: 32 random bytes per New, so tokens die with the process.
func WithTokenKey(key []byte) Option {
	return func(c *config) { c.tokenKey = append([]byte(nil), key...) }
}

// WithTokenTTL sets how long bearer tokens are valid. Default:
// DefaultTokenTTL.
func WithTokenTTL(ttl time.Duration) Option {
	return func(c *config) { c.tokenTTL = ttl }
}

// WithMaxManifestSize sets the largest manifest accepted, in bytes; larger
// ones are refused with 413. Default: DefaultMaxManifestSize (4 MiB).
func WithMaxManifestSize(n int64) Option {
	return func(c *config) { c.maxManifest = n }
}

// WithService sets the service name of the bearer challenge. Default:
// DefaultService.
func WithService(name string) Option {
	return func(c *config) { c.service = name }
}

// WithRealm sets the token endpoint URL announced in the bearer challenge,
// for a registry behind a proxy that rewrites the Host header. Default:
// https://<request Host>/auth/token (http:// for a plain-HTTP request).
func WithRealm(url string) Option {
	return func(c *config) { c.realm = url }
}

// WithBlobRedirect makes blob GETs answer 307 Temporary Redirect to a URL
// of the store (storage.BlobURLer: an S3 presigned URL) instead of sending
// the bytes, after the same access, existence and range checks as a GET
// served directly. Clients then read blobs from the store, which they must
// be able to reach and trust. HEAD requests, manifests, and GETs with
// If-Range or a Range the registry would ignore are served directly. New
// refuses it when the driver does not implement storage.BlobURLer.
// Default: off.
func WithBlobRedirect(enabled bool) Option {
	return func(c *config) { c.redirect = enabled }
}

// WithUpstreams makes the registry a pull-through cache of the namespaces'
// upstream registries (proxy.go): a pull of a manifest or blob it does not
// hold, in a repository of one of those namespaces, is fetched from the
// upstream, verified, stored and served. docker.io content lives without a
// prefix, every other registry's under its name (quay.io/org/app). Pushed
// images always win over the upstream's. Calls accumulate; New refuses a
// namespace configured twice. Default: none (a miss is a 404, as
// zuul-registry answers).
func WithUpstreams(nss ...UpstreamNamespace) Option {
	return func(c *config) { c.upstreams = append(c.upstreams, nss...) }
}

// WithUpstreamTagTTL sets how long a tag fetched from an upstream is served
// without asking the upstream again; 0 revalidates at every pull. Default:
// DefaultUpstreamTagTTL.
func WithUpstreamTagTTL(d time.Duration) Option {
	return func(c *config) { c.tagTTL = d }
}

// WithUpstreamFetchTimeout bounds one upstream fetch, a blob's body
// included. Default: DefaultUpstreamFetchTimeout.
func WithUpstreamFetchTimeout(d time.Duration) Option {
	return func(c *config) { c.fetchTO = d }
}

// withClock sets the time source (tests).
func withClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}

// New returns a registry serving driver's content. It refuses users without
// a name or password, with an unknown access level or a duplicate name, a
// token key under 32 bytes, a non-positive manifest limit or token TTL, a
// configuration nobody could use (no users and no anonymous reads), and
// blob redirects on a driver that cannot give blob URLs.
func New(driver storage.Driver, opts ...Option) (*Registry, error) {
	if driver == nil {
		return nil, errors.New("registry: storage driver is nil")
	}
	c := config{
		anonRead:    true,
		tokenTTL:    DefaultTokenTTL,
		maxManifest: DefaultMaxManifestSize,
		service:     DefaultService,
		now:         time.Now,
		tagTTL:      DefaultUpstreamTagTTL,
		fetchTO:     DefaultUpstreamFetchTimeout,
	}
	for _, o := range opts {
		o(&c)
	}
	rg := &Registry{
		driver:      driver,
		users:       map[string]credential{},
		anonRead:    c.anonRead,
		log:         c.log,
		tokenKey:    c.tokenKey,
		tokenTTL:    c.tokenTTL,
		maxManifest: c.maxManifest,
		service:     c.service,
		realm:       c.realm,
		now:         c.now,
	}
	if rg.log == nil {
		rg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := newProxy(c.upstreams, c.tagTTL, c.fetchTO)
	if err != nil {
		return nil, err
	}
	rg.proxy = p
	if c.redirect {
		u, ok := driver.(storage.BlobURLer)
		if !ok {
			return nil, fmt.Errorf("registry: blob redirects need a storage driver that gives blob URLs (storage.BlobURLer); %T does not", driver)
		}
		rg.blobURLs = u
	}
	for i, u := range c.users {
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("registry: user %d has no name", i+1)
		case strings.ContainsAny(u.Name, ":\x00"):
			return nil, fmt.Errorf("registry: user name %q contains ':' or NUL", u.Name)
		case u.Password == "":
			return nil, fmt.Errorf("registry: user %q has no password", u.Name)
		case u.Access != AccessRead && u.Access != AccessWrite:
			return nil, fmt.Errorf("registry: user %q: access %q is not %q or %q", u.Name, u.Access, AccessRead, AccessWrite)
		}
		if _, dup := rg.users[u.Name]; dup {
			return nil, fmt.Errorf("registry: user %q is configured twice", u.Name)
		}
		rg.users[u.Name] = credential{sum: sha256.Sum256([]byte(u.Password)), access: u.Access}
	}
	if len(rg.users) == 0 && !rg.anonRead {
		return nil, errors.New("registry: no users and anonymous reads disabled: nobody could use the registry")
	}
	if rg.tokenKey == nil {
		rg.tokenKey = make([]byte, 32)
		if _, err := rand.Read(rg.tokenKey); err != nil {
			return nil, fmt.Errorf("registry: generating token key: %w", err)
		}
	} else if len(rg.tokenKey) < 32 {
		return nil, fmt.Errorf("registry: token key is %d bytes, needs at least 32", len(rg.tokenKey))
	}
	if rg.tokenTTL <= 0 {
		return nil, fmt.Errorf("registry: token TTL %s is not positive", rg.tokenTTL)
	}
	if rg.maxManifest <= 0 {
		return nil, fmt.Errorf("registry: manifest size limit %d is not positive", rg.maxManifest)
	}
	if rg.service == "" || strings.ContainsAny(rg.service, "\"\\") {
		return nil, fmt.Errorf("registry: service name %q is empty or contains quotes", rg.service)
	}
	if rg.realm != "" && !strings.HasPrefix(rg.realm, "https://") && !strings.HasPrefix(rg.realm, "http://") {
		return nil, fmt.Errorf("registry: realm %q is not an http(s) URL", rg.realm)
	}
	return rg, nil
}

// handlerFunc is a route handler: it writes a success response, or returns
// the error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rt route) error

// ServeHTTP implements http.Handler.
func (rg *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := rg.now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rt, user, err := rg.dispatch(rec, r)
	if err != nil {
		writeError(rec, r, rg.log, err)
	}
	rg.log.InfoContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "route", rt.kind,
		"status", rec.status, "bytes", rec.bytes, "user", user, "duration", rg.now().Sub(start))
}

// dispatch routes the request, checks access and runs the handler.
func (rg *Registry) dispatch(w http.ResponseWriter, r *http.Request) (route, string, error) {
	rt, err := parseRoute(r.URL.Path)
	if err != nil {
		return rt, "", err
	}
	if rt.kind == routeToken {
		return rt, "", rg.serveToken(w, r)
	}
	h, need, ok := rt.handler(rg, r.Method)
	if !ok {
		return rt, "", newError(oci.CodeUnsupported, "method %s is not allowed on %s", r.Method, r.URL.Path).
			WithHeader("Allow", strings.Join(rt.methods(), ", "))
	}
	p, err := rg.authorize(r, rt, need)
	if err != nil {
		return rt, p.name, err
	}
	return rt, p.name, h(w, r, rt)
}

// recorder remembers the status and size of a response, for the log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's copy path (and its buffer) for
// blob bodies.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wrote = true
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.ResponseWriter, src)
	}
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
