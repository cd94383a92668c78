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
//
// It is one file of some 600 lines because the web API and the registry
// proxy are two views of one Server's state (accounts, tokens, tag times);
// split, each half would only be read with the other.
package hubtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
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

func (s *Server) serveHub(rw http.ResponseWriter, r *http.Request) {
	s.hubN.Add(1)
	w := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
	defer func() {
		s.mu.Lock()
		s.calls = append(s.calls, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, w.status))
		s.mu.Unlock()
	}()
	path := r.URL.Path
	if path == "/v2/users/login" || path == "/v2/users/login/" {
		s.login(w, r)
		return
	}
	ns, repo, tag, ok := parseTagsPath(path)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	_, detail := s.authenticate(r)
	if detail != "" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": detail})
		return
	}
	switch {
	case tag == "" && r.Method == http.MethodGet:
		s.listTags(w, r, ns, repo)
	case tag != "" && r.Method == http.MethodDelete:
		if s.namespaces != nil && !s.namespaces[ns] {
			writeJSON(w, http.StatusForbidden, map[string]any{"detail": "You do not have permission to perform this action."})
			return
		}
		s.deleteTag(w, r, ns, repo, tag)
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": fmt.Sprintf("Method %q not allowed.", r.Method)})
	}
}

// parseTagsPath accepts /v2/repositories/<ns>/<repo>/tags[/<tag>][/] and
// /v2/namespaces/<ns>/repositories/<repo>/tags[/<tag>].
func parseTagsPath(p string) (ns, repo, tag string, ok bool) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(parts) >= 5 && parts[0] == "v2" && parts[1] == "repositories" && parts[4] == "tags":
		ns, repo, parts = parts[2], parts[3], parts[5:]
	case len(parts) >= 6 && parts[0] == "v2" && parts[1] == "namespaces" && parts[3] == "repositories" && parts[5] == "tags":
		ns, repo, parts = parts[2], parts[4], parts[6:]
	default:
		return "", "", "", false
	}
	switch len(parts) {
	case 0:
		return ns, repo, "", true
	case 1:
		return ns, repo, parts[0], true
	}
	return "", "", "", false
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": fmt.Sprintf("Method %q not allowed.", r.Method)})
		return
	}
	var body struct {
		Username *string `json:"username"`
		Password *string `json:"password"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "JSON parse error - " + err.Error()})
		return
	}
	missing := map[string]any{}
	if body.Username == nil || *body.Username == "" {
		missing["username"] = []string{"This field is required."}
	}
	if body.Password == nil || *body.Password == "" {
		missing["password"] = []string{"This field is required."}
	}
	if len(missing) > 0 {
		writeJSON(w, http.StatusBadRequest, missing)
		return
	}
	if !hmac.Equal([]byte(*body.Username), []byte(s.user)) || !hmac.Equal([]byte(*body.Password), []byte(s.pass)) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Incorrect authentication credentials"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": s.sign(*body.Username)})
}

func (s *Server) sign(user string) string {
	enc := base64.RawURLEncoding
	hdr := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	jti := make([]byte, 8)
	rand.Read(jti)
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"sub": user, "username": user, "iat": now.Unix(),
		"exp": now.Add(s.tokenTTL).Unix(), "jti": hex.EncodeToString(jti)})
	payload := hdr + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(payload))
	return payload + "." + enc.EncodeToString(mac.Sum(nil))
}

// authenticate checks the token of a request and returns its user, or
// the detail Docker Hub's authentication layer answers with.
func (s *Server) authenticate(r *http.Request) (user, detail string) {
	const (
		noCreds = "Authentication credentials were not provided."
		invalid = "Given token not valid for any token type"
	)
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	if h == "" || (!strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "JWT")) {
		return "", noCreds
	}
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		return "", invalid
	}
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", invalid
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || time.Now().Unix() >= c.Exp {
		return "", "Token is invalid or expired"
	}
	return c.Sub, ""
}

type tagEntry struct {
	name    string
	updated time.Time
}

func (s *Server) listTags(w http.ResponseWriter, r *http.Request, ns, repoName string) {
	ctx := r.Context()
	name := ns + "/" + repoName
	repo, err := s.reg.Repository(ctx, s.backend.Host, name, false)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"message": "hubtest backend: " + err.Error()})
		return
	}
	names, err := repo.Tags(ctx)
	if errors.Is(err, oci.ErrNotFound) || (err == nil && len(names) == 0) {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "object not found", "errinfo": map[string]any{"namespace": ns, "repository": repoName}})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"message": "hubtest backend: " + err.Error()})
		return
	}
	q := r.URL.Query()
	size := 10
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"page_size": []string{"A valid integer is required."}})
			return
		}
		size = min(max(n, 1), 100)
	}
	page := 1
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return
		}
		page = n
	}
	now := time.Now().UTC()
	entries := make([]tagEntry, 0, len(names))
	s.mu.Lock()
	for _, n := range names {
		key := name + ":" + n
		t, ok := s.updated[key]
		if !ok {
			t = now
			s.updated[key] = t
		}
		entries = append(entries, tagEntry{name: n, updated: t})
	}
	s.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].updated.Equal(entries[j].updated) {
			return entries[i].updated.After(entries[j].updated)
		}
		return entries[i].name < entries[j].name
	})
	start := (page - 1) * size
	if start >= len(entries) {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
		return
	}
	end := min(start+size, len(entries))
	results := make([]map[string]any, 0, end-start)
	for _, e := range entries[start:end] {
		d, err := repo.Head(ctx, e.name)
		if err != nil {
			continue // deleted since the listing
		}
		info := s.imageInfo(ctx, repo, d)
		results = append(results, map[string]any{
			"creator": 1, "id": tagID(name, e.name), "images": info.images,
			"last_updated": hubTime(e.updated), "last_updater": 1, "last_updater_username": s.user,
			"name": e.name, "repository": tagID(name, ""), "full_size": info.size, "v2": true,
			"tag_status": "active", "tag_last_pulled": nil, "tag_last_pushed": hubTime(e.updated),
			"media_type": d.MediaType, "content_type": "image", "digest": d.Digest,
		})
	}
	link := func(p int) any {
		u := url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path}
		v := url.Values{}
		v.Set("page", strconv.Itoa(p))
		v.Set("page_size", strconv.Itoa(size))
		u.RawQuery = v.Encode()
		return u.String()
	}
	var next, prev any
	if end < len(entries) {
		next = link(page + 1)
	}
	if page > 1 {
		prev = link(page - 1)
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(entries), "next": next, "previous": prev, "results": results})
}

// imageInfo describes a manifest's platforms as Docker Hub's images[]
// does, cached by digest (a digest's content never changes).
func (s *Server) imageInfo(ctx context.Context, repo *transfer.Repository, d transfer.Descriptor) imageInfo {
	s.mu.Lock()
	info, ok := s.images[d.Digest]
	s.mu.Unlock()
	if ok {
		return info
	}
	info = imageInfo{images: []map[string]any{}}
	m, err := repo.Get(ctx, d.Digest)
	if err != nil {
		return info
	}
	var doc struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			Size int64 `json:"size"`
		} `json:"layers"`
		Manifests []struct {
			Digest   string `json:"digest"`
			Platform struct {
				Architecture string `json:"architecture"`
				OS           string `json:"os"`
				Variant      string `json:"variant"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if json.Unmarshal(m.Body, &doc) != nil {
		return info
	}
	if oci.IsIndex(m.MediaType) {
		for _, c := range doc.Manifests {
			sub := s.imageInfo(ctx, repo, transfer.Descriptor{Digest: c.Digest})
			info.size += sub.size
			info.images = append(info.images, platform(c.Platform.Architecture, c.Platform.OS, c.Platform.Variant, c.Digest, sub.size))
		}
	} else {
		for _, l := range doc.Layers {
			info.size += l.Size
		}
		var cfg struct {
			Architecture string `json:"architecture"`
			OS           string `json:"os"`
			Variant      string `json:"variant"`
		}
		if b, err := repo.Blob(ctx, doc.Config.Digest); err == nil {
			json.Unmarshal(b, &cfg)
		}
		info.images = append(info.images, platform(cfg.Architecture, cfg.OS, cfg.Variant, m.Digest, info.size))
	}
	s.mu.Lock()
	s.images[d.Digest] = info
	s.mu.Unlock()
	return info
}

func platform(arch, os, variant, digest string, size int64) map[string]any {
	var v any
	if variant != "" {
		v = variant
	}
	return map[string]any{"architecture": arch, "os": os, "variant": v, "digest": digest, "size": size,
		"features": nil, "os_features": nil, "os_version": nil, "status": "active", "last_pulled": nil, "last_pushed": nil}
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request, ns, repoName, tag string) {
	ctx := r.Context()
	name := ns + "/" + repoName
	repo, err := s.reg.Repository(ctx, s.backend.Host, name, true)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"message": "hubtest backend: " + err.Error()})
		return
	}
	notFound := map[string]any{"message": fmt.Sprintf("httperror 404: tag '%s' not found", tag),
		"errinfo": map[string]any{"namespace": ns, "repository": repoName, "tag": tag}}
	if _, err := repo.Head(ctx, tag); errors.Is(err, oci.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, notFound)
		return
	} else if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"message": "hubtest backend: " + err.Error()})
		return
	}
	if err := repo.Delete(ctx, tag); err != nil {
		if errors.Is(err, oci.ErrNotFound) {
			writeJSON(w, http.StatusNotFound, notFound)
			return
		}
		writeJSON(w, http.StatusInternalServerError, map[string]any{"message": "hubtest: the backend registry cannot delete the tag (it must support deleting a single tag): " + err.Error()})
		return
	}
	s.mu.Lock()
	delete(s.updated, name+":"+tag)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func tagID(repo, tag string) int64 {
	h := fnv.New64a()
	h.Write([]byte(repo + ":" + tag))
	return int64(h.Sum64() >> 34)
}

// hubTime formats like Docker Hub: microseconds, UTC, Z.
func hubTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
