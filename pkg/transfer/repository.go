// Package distribution is a small client for the calls of the OCI
// distribution API (distribution-spec v1.1) that promotion needs and image
// copies do not: a manifest fetched and put back byte for byte under
// another tag, a tag deleted, a repository's tags listed page by page, a
// config blob read, and a push permission checked without publishing
// anything.
//
// It always speaks https, whatever the host: go-containerregistry's name
// package guesses plain http for localhost and private addresses, and a
// registry imagegate talks to never serves plain http. Authentication is
// go-containerregistry's (Basic, or Bearer tokens with the scopes of one
// repository), after one ping of /v2/ per registry; retries belong to the
// transport the caller passes (package transfer's retrying transport).
package distribution

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Media types of the manifests promotion carries, in the order of the
// Accept header: indexes first, so a multi-arch tag is never reduced to one
// platform.
const (
	MediaTypeOCIIndex      = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerV2      = "application/vnd.docker.distribution.manifest.v2+json"
	maxManifestSize        = 4 << 20
	maxConfigSize          = 8 << 20
	defaultTagsPageSize    = 1000
	maxTagPages            = 100000
	defaultRequestDeadline = 5 * time.Minute
)

var acceptManifests = strings.Join([]string{MediaTypeOCIIndex, MediaTypeDockerList, MediaTypeOCIManifest, MediaTypeDockerV2}, ", ")

// IsIndex reports whether mediaType is a multi-platform index.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerList
}

// Manifest is a manifest as the registry stores it: its exact bytes, their
// digest, and the media type it was served with.
type Manifest struct {
	MediaType string
	Digest    string
	Body      []byte
}

// Descriptor is what a HEAD tells of a manifest.
type Descriptor struct {
	MediaType string
	Digest    string
	Size      int64
}

// Registry is one registry endpoint. It is safe for concurrent use.
type Registry struct {
	host string
	reg  name.Registry
	base http.RoundTripper
	auth authn.Authenticator
	log  *slog.Logger
	page int

	pingMu    sync.Mutex
	challenge *transport.Challenge
	basicOK   bool

	mu    sync.Mutex
	repos map[string]*Repository
}

// Option configures a Registry.
type Option func(*Registry) error

// WithTransport sets the transport under authentication: TLS trust and
// retries. The default is a clone of http.DefaultTransport.
func WithTransport(rt http.RoundTripper) Option {
	return func(r *Registry) error {
		if rt == nil {
			return errors.New("registry transport is nil")
		}
		r.base = rt
		return nil
	}
}

// WithAuth sets the credentials. The default is anonymous.
func WithAuth(a authn.Authenticator) Option {
	return func(r *Registry) error {
		if a != nil {
			r.auth = a
		}
		return nil
	}
}

// WithLogger sets the logger for request tracing at debug level. The
// default discards.
func WithLogger(l *slog.Logger) Option {
	return func(r *Registry) error {
		if l != nil {
			r.log = l
		}
		return nil
	}
}

// WithTagsPageSize sets how many tags each listing request asks for (the n
// parameter). The default is 1000.
func WithTagsPageSize(n int) Option {
	return func(r *Registry) error {
		if n < 1 {
			return fmt.Errorf("tags page size %d: must be positive", n)
		}
		r.page = n
		return nil
	}
}

// New returns a client for the registry at host ("host", "host:port" or
// "[v6]:port"). It does no I/O.
func New(host string, opts ...Option) (*Registry, error) {
	if host == "" || strings.ContainsAny(host, "/ @?#") {
		return nil, fmt.Errorf("registry host %q: must be <host>[:<port>] with no scheme or path", host)
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return nil, fmt.Errorf("registry host %q: %w", host, err)
	}
	r := &Registry{
		host:  host,
		reg:   reg,
		base:  http.DefaultTransport.(*http.Transport).Clone(),
		auth:  authn.Anonymous,
		log:   slog.New(slog.DiscardHandler),
		page:  defaultTagsPageSize,
		repos: map[string]*Repository{},
	}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Host is the registry's host:port.
func (r *Registry) Host() string { return r.host }

// ping learns how the registry authenticates (GET /v2/), once.
func (r *Registry) ping(ctx context.Context) (*transport.Challenge, error) {
	r.pingMu.Lock()
	defer r.pingMu.Unlock()
	if r.challenge != nil {
		return r.challenge, nil
	}
	op := "pinging https://" + r.host + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.host+"/v2/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: r.base, CheckRedirect: noRedirect}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		r.challenge = &transport.Challenge{}
	case http.StatusUnauthorized:
		scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
		if scheme == "" {
			return nil, fmt.Errorf("%s: 401 without a WWW-Authenticate challenge", op)
		}
		r.challenge = &transport.Challenge{Scheme: scheme, Parameters: params}
	default:
		return nil, responseError(op, resp)
	}
	return r.challenge, nil
}

// Repository returns a client for one repository of the registry, with
// pull access, and push (and delete) access if push is true. Credentials
// are checked here: wrong ones fail with an error matching ErrDenied.
func (r *Registry) Repository(ctx context.Context, repo string, push bool) (*Repository, error) {
	m, err := r.Repositories(ctx, []string{repo}, push)
	if err != nil {
		return nil, err
	}
	return m[repo], nil
}

// Repositories returns clients for several repositories at once. With a
// token service, one token carries the scopes of every repository (the
// token specification allows several scope parameters), so promoting 20
// images costs one token request, not 20; a repository the token does not
// cover gets a token of its own.
func (r *Registry) Repositories(ctx context.Context, repos []string, push bool) (map[string]*Repository, error) {
	out := map[string]*Repository{}
	var todo []string
	r.mu.Lock()
	for _, repo := range repos {
		if repo == "" || strings.ContainsAny(repo, ":@ ") || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") {
			r.mu.Unlock()
			return nil, fmt.Errorf("repository %q: not a valid repository name", repo)
		}
		if p, ok := r.repos[repoKey(repo, push)]; ok {
			out[repo] = p
		} else if _, dup := out[repo]; !dup {
			todo = append(todo, repo)
			out[repo] = nil
		}
	}
	r.mu.Unlock()
	if len(todo) == 0 {
		return out, nil
	}
	ch, err := r.ping(ctx)
	if err != nil {
		return nil, err
	}
	actions := "pull"
	if push {
		actions = "pull,push"
	}
	scopes := func(names []string) []string {
		var s []string
		for _, n := range names {
			s = append(s, "repository:"+n+":"+actions)
		}
		return s
	}
	switch strings.ToLower(ch.Scheme) {
	case "":
		for _, repo := range todo {
			out[repo] = r.newRepository(repo, push, r.base, nil)
		}
	case "bearer":
		tok, err := transport.Exchange(ctx, r.reg, r.auth, r.base, scopes(todo), ch)
		if err != nil {
			return nil, authError(fmt.Sprintf("getting a token for %s", r.host), err)
		}
		grants := tokenGrants(tok)
		for _, repo := range todo {
			t := tok
			if grants != nil && !grants.allows(repo, push) && len(todo) > 1 {
				// Not covered by the shared token: ask for this one alone.
				if t, err = transport.Exchange(ctx, r.reg, r.auth, r.base, scopes([]string{repo}), ch); err != nil {
					return nil, authError(fmt.Sprintf("getting a token for %s/%s", r.host, repo), err)
				}
			}
			rt, err := transport.FromToken(r.reg, r.auth, r.base, ch, t)
			if err != nil {
				return nil, err
			}
			out[repo] = r.newRepository(repo, push, rt, tokenGrants(t))
		}
	default:
		rt, err := transport.FromToken(r.reg, r.auth, r.base, ch, nil)
		if err != nil {
			return nil, err
		}
		if err := r.checkBasic(ctx, rt); err != nil {
			return nil, err
		}
		for _, repo := range todo {
			out[repo] = r.newRepository(repo, push, rt, nil)
		}
	}
	r.mu.Lock()
	for _, repo := range todo {
		key := repoKey(repo, push)
		if q, ok := r.repos[key]; ok {
			out[repo] = q
		} else {
			r.repos[key] = out[repo]
		}
	}
	r.mu.Unlock()
	return out, nil
}

func repoKey(repo string, push bool) string { return repo + "|" + strconv.FormatBool(push) }

func (r *Registry) newRepository(repo string, push bool, rt http.RoundTripper, g grants) *Repository {
	p := &Repository{reg: r, name: repo, hc: &http.Client{Transport: rt, CheckRedirect: noRedirect, Timeout: defaultRequestDeadline}}
	if g != nil {
		p.grantsKnown = true
		p.pushGranted = g.allows(repo, true)
		p.pullGranted = g.allows(repo, false)
	}
	return p
}

// grants are the access claims of a registry token: repository name (or
// "*" for every repository) to actions.
type grants map[string]map[string]bool

func (g grants) allows(repo string, push bool) bool {
	for _, name := range []string{repo, "*"} {
		a := g[name]
		if a["*"] || (a["pull"] && (!push || a["push"])) {
			return true
		}
	}
	return false
}

// tokenGrants reads the access claim of a registry token, when the token
// is a JWT: the Docker token specification's "access": [{"type":
// "repository", "name", "actions"}], or imagegate's registry's
// registry-wide "access": "read" | "write". It returns nil when the token
// says nothing (an opaque token): then only a request can tell. The
// signature is not checked; the registry does that, and the claim only
// spares a request.
func tokenGrants(tok *transport.Token) grants {
	if tok == nil {
		return nil
	}
	raw := tok.Token
	if raw == "" {
		raw = tok.AccessToken
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims struct {
		Access json.RawMessage `json:"access"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Access) == 0 {
		return nil
	}
	var level string
	if json.Unmarshal(claims.Access, &level) == nil {
		switch level {
		case "write":
			return grants{"*": {"pull": true, "push": true}}
		case "read":
			return grants{"*": {"pull": true}}
		}
		return nil
	}
	var list []struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	if json.Unmarshal(claims.Access, &list) != nil {
		return nil
	}
	g := grants{}
	for _, a := range list {
		if a.Type != "repository" {
			continue
		}
		if g[a.Name] == nil {
			g[a.Name] = map[string]bool{}
		}
		for _, act := range a.Actions {
			g[a.Name][act] = true
		}
	}
	return g
}

// checkBasic verifies Basic credentials once per registry: unlike a token
// exchange, nothing else would reject wrong ones before the first real
// request.
func (r *Registry) checkBasic(ctx context.Context, rt http.RoundTripper) error {
	r.pingMu.Lock()
	defer r.pingMu.Unlock()
	if r.basicOK {
		return nil
	}
	op := "logging in to " + r.host
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt, CheckRedirect: noRedirect}).Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return responseError(op, resp)
	}
	r.basicOK = true
	return nil
}

// authError turns a token exchange failure into an *Error when it carries
// an HTTP status, so callers can test it with errors.Is.
func authError(op string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode != 0 {
		e := &Error{Op: op, StatusCode: te.StatusCode}
		for _, d := range te.Errors {
			e.Codes = append(e.Codes, string(d.Code))
			if e.Message == "" {
				e.Message = d.Message
			}
		}
		return e
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Repository is one repository, with its authorization.
type Repository struct {
	reg  *Registry
	name string
	hc   *http.Client

	grantsKnown, pushGranted, pullGranted bool
}

// PushGranted reports what the registry's token says of push access: known
// is false when the token does not say (an opaque token, Basic
// authentication); then only CheckPush can tell.
func (p *Repository) PushGranted() (granted, known bool) { return p.pushGranted, p.grantsKnown }

// Name is the repository's name.
func (p *Repository) Name() string { return p.name }

// Ref is host/name:ref (or @ref for a digest), for messages.
func (p *Repository) Ref(ref string) string {
	if strings.Contains(ref, ":") {
		return p.reg.host + "/" + p.name + "@" + ref
	}
	return p.reg.host + "/" + p.name + ":" + ref
}

func (p *Repository) url(parts ...string) string {
	return "https://" + p.reg.host + "/v2/" + p.name + "/" + strings.Join(parts, "/")
}

func (p *Repository) do(ctx context.Context, op, method, u string, body []byte, hdr map[string]string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", "imagegate")
	start := time.Now()
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	// The path only: an upload location's query carries session state.
	p.reg.log.Debug("registry", "method", method, "host", req.URL.Host, "path", req.URL.Path, "status", resp.StatusCode, "duration", time.Since(start))
	return resp, nil
}

// Head returns the descriptor of the manifest ref (a tag or digest). A
// registry whose HEAD omits Docker-Content-Digest (zuul-registry does) is
// asked with a GET instead.
func (p *Repository) Head(ctx context.Context, ref string) (Descriptor, error) {
	op := "HEAD manifest " + p.Ref(ref)
	resp, err := p.do(ctx, op, http.MethodHead, p.url("manifests", ref), nil, map[string]string{"Accept": acceptManifests})
	if err != nil {
		return Descriptor{}, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, &Error{Op: op, StatusCode: resp.StatusCode}
	}
	d := Descriptor{MediaType: mediaType(resp.Header.Get("Content-Type")), Digest: resp.Header.Get("Docker-Content-Digest"), Size: resp.ContentLength}
	if d.Digest == "" || d.MediaType == "" {
		m, err := p.Get(ctx, ref)
		if err != nil {
			return Descriptor{}, err
		}
		return Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}, nil
	}
	return d, nil
}

// Get fetches the manifest ref and checks its bytes against the digest
// asked for, or the one the registry claims.
func (p *Repository) Get(ctx context.Context, ref string) (*Manifest, error) {
	op := "GET manifest " + p.Ref(ref)
	resp, err := p.do(ctx, op, http.MethodGet, p.url("manifests", ref), nil, map[string]string{"Accept": acceptManifests})
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, responseError(op, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading: %w", op, err)
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("%s: manifest larger than %d bytes", op, maxManifestSize)
	}
	want := resp.Header.Get("Docker-Content-Digest")
	if strings.Contains(ref, ":") {
		want = ref
	}
	algo := "sha256"
	if a, _, ok := strings.Cut(want, ":"); ok {
		algo = a
	}
	got, err := Digest(algo, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if want != "" && got != want {
		return nil, fmt.Errorf("%s: content has digest %s, the registry said %s", op, got, want)
	}
	mt := mediaType(resp.Header.Get("Content-Type"))
	if mt == "" || mt == "application/json" || mt == "application/octet-stream" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
	}
	return &Manifest{MediaType: mt, Digest: got, Body: body}, nil
}

// Put stores m under tag, byte for byte, and checks that the registry
// computed the same digest. No blob moves: the registry already holds
// everything m references, in this repository.
func (p *Repository) Put(ctx context.Context, tag string, m *Manifest) error {
	op := fmt.Sprintf("PUT manifest %s (%s)", p.Ref(tag), m.Digest)
	resp, err := p.do(ctx, op, http.MethodPut, p.url("manifests", tag), m.Body, map[string]string{"Content-Type": m.MediaType})
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return responseError(op, resp)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != m.Digest {
		return fmt.Errorf("%s: the registry stored digest %s", op, got)
	}
	return nil
}

// Delete deletes the manifest reference ref (DELETE
// /v2/<name>/manifests/<ref>). For a tag, spec-conforming registries remove
// only the tag; a registry that cannot answers an error matching
// ErrUnsupported. Callers must never fall back to deleting by digest,
// which would remove every tag of the manifest.
func (p *Repository) Delete(ctx context.Context, ref string) error {
	op := "DELETE manifest " + p.Ref(ref)
	resp, err := p.do(ctx, op, http.MethodDelete, p.url("manifests", ref), nil, nil)
	if err != nil {
		return err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		return nil
	}
	e := responseError(op, resp)
	if !strings.Contains(ref, ":") && e.StatusCode == http.StatusBadRequest && e.hasCode("DIGEST_INVALID") {
		// distribution 2.x parses the reference as a digest and rejects a
		// tag: it can delete manifests only by digest.
		e.unsupported = true
		e.Message = "the registry deletes manifests only by digest, not single tags"
	}
	return e
}

// Tags lists every tag of the repository, following the Link header page
// by page (distribution-spec, "Listing Tags"). A next link to another host
// is refused.
func (p *Repository) Tags(ctx context.Context) ([]string, error) {
	op := "listing tags of " + p.reg.host + "/" + p.name
	next := p.url("tags", "list") + "?n=" + strconv.Itoa(p.reg.page)
	seen := map[string]bool{}
	var tags []string
	for page := 0; next != ""; page++ {
		if page >= maxTagPages || seen[next] {
			return nil, fmt.Errorf("%s: pagination does not end at page %d", op, page+1)
		}
		seen[next] = true
		resp, err := p.do(ctx, op, http.MethodGet, next, nil, map[string]string{"Accept": "application/json"})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			e := responseError(op, resp)
			drain(resp)
			return nil, e
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body)
		link := resp.Header.Get("Link")
		drain(resp)
		if err != nil {
			return nil, fmt.Errorf("%s: decoding page %d: %w", op, page+1, err)
		}
		tags = append(tags, body.Tags...)
		if next, err = nextLink(next, link); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return tags, nil
}

// Blob reads a blob of at most maxConfigSize bytes (an image config) and
// checks its digest. It follows redirects to blob storage; the
// authorization header is only ever sent to the registry itself.
func (p *Repository) Blob(ctx context.Context, digest string) ([]byte, error) {
	op := "GET blob " + p.Ref(digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url("blobs", digest), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "imagegate")
	hc := &http.Client{Transport: p.hc.Transport, Timeout: defaultRequestDeadline,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 || req.URL.Scheme != "https" {
				return fmt.Errorf("refusing redirect to %s://%s: registries are only spoken to over TLS", req.URL.Scheme, req.URL.Host)
			}
			return nil
		}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, responseError(op, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", op, maxConfigSize)
	}
	algo, _, _ := strings.Cut(digest, ":")
	if got, err := Digest(algo, b); err != nil || got != digest {
		return nil, fmt.Errorf("%s: content has digest %s", op, got)
	}
	return b, nil
}

// CheckPush proves the credentials may push to the repository without
// publishing anything: it opens a blob upload session and cancels it
// (distribution-spec, "Pushing blobs" and "Canceling an upload").
func (p *Repository) CheckPush(ctx context.Context) error {
	op := "checking push access to " + p.reg.host + "/" + p.name
	resp, err := p.do(ctx, op, http.MethodPost, p.url("blobs", "uploads")+"/", []byte{}, nil)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return responseError(op, resp)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse("https://" + p.reg.host + "/")
	if err != nil {
		return nil
	}
	lu, err := u.Parse(loc)
	if err != nil || lu.Host != p.reg.host {
		return nil // an upload elsewhere expires by itself; never send credentials away
	}
	lu.Scheme = "https"
	if cresp, err := p.do(ctx, op, http.MethodDelete, lu.String(), nil, nil); err == nil {
		drain(cresp)
	}
	return nil
}

// Digest returns "<algo>:<hex>" of b for sha256 or sha512.
func Digest(algo string, b []byte) (string, error) {
	var h hash.Hash
	switch algo {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return "", fmt.Errorf("unsupported digest algorithm %q", algo)
	}
	h.Write(b)
	return algo + ":" + hex.EncodeToString(h.Sum(nil)), nil
}

// nextLink returns the URL of the rel="next" Link, resolved against the
// current page, or "" when there is none.
func nextLink(current, header string) (string, error) {
	if header == "" {
		return "", nil
	}
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, `rel="next"`) && !strings.Contains(part, "rel=next") {
			continue
		}
		start, end := strings.Index(part, "<"), strings.Index(part, ">")
		if start < 0 || end < start {
			return "", fmt.Errorf("malformed Link header %q", header)
		}
		cu, err := url.Parse(current)
		if err != nil {
			return "", err
		}
		nu, err := cu.Parse(part[start+1 : end])
		if err != nil {
			return "", fmt.Errorf("link header %q: %w", header, err)
		}
		if nu.Host != cu.Host {
			return "", fmt.Errorf("link header %q leaves %s; refusing to follow", header, cu.Host)
		}
		nu.Scheme = "https"
		return nu.String(), nil
	}
	return "", nil
}

// parseChallenge parses a WWW-Authenticate header (RFC 7235) into its
// scheme and parameters; it takes the first challenge.
func parseChallenge(h string) (string, map[string]string) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		var val string
		if strings.HasPrefix(v, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(v); i++ {
				if v[i] == '\\' && i+1 < len(v) {
					i++
					b.WriteByte(v[i])
					continue
				}
				if v[i] == '"' {
					break
				}
				b.WriteByte(v[i])
			}
			val = b.String()
			rest = strings.TrimSpace(strings.TrimPrefix(v[min(i+1, len(v)):], ","))
		} else {
			val, rest, _ = strings.Cut(v, ",")
			val = strings.TrimSpace(val)
			rest = strings.TrimSpace(rest)
		}
		params[k] = val
	}
	return scheme, params
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(mt)
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}
