// Package quaytest emulates quay for tests, in front of a real registry:
// quay.io cannot be reached from imagegate's test machines, and only its
// web API may be emulated.
//
// A Server has two TLS listeners on loopback, with a CA of its own:
//
//   - URL plays https://quay.io's web API (/api/v1), as quay documents it
//     (docs.quay.io/api/swagger): the tag listing GET
//     /repository/<ns>/<name>/tag/ with page, limit (at most 100, default
//     50) and has_additional, newest first, each tag with name,
//     manifest_digest, is_manifest_list, start_ts and last_modified (RFC
//     1123); DELETE /repository/<ns>/<name>/tag/<tag> (204; 404 for an
//     unknown tag); GET /repository/<ns>/<name> (404 when unknown); POST
//     /repository (201; 400 "Repository already exists"); POST
//     /repository/<ns>/<name>/changevisibility. Every call needs
//     "Authorization: Bearer <token>" of a token made with WithToken, whose
//     scopes decide: repo:read to read, repo:write to delete a tag,
//     repo:create to create a repository, repo:admin to change visibility
//     (403 {"error_type":"insufficient_scope"} otherwise; 401 without a
//     valid token).
//   - RegistryHost plays quay.io's registry: a transparent proxy to the
//     backend registry (Host header kept, so a token realm points back at
//     the proxy). A manifest PUT under a tag records the tag's
//     last_modified and creates the repository (private), as a push to
//     quay does.
//
// Tags are the backend's; deletion removes the tag in the backend, which
// must support deleting a single tag (imagegate's registry does). A tag's
// last_modified is the time of its last push through the proxy, the time
// set by SetLastModified, or else the time the Server first saw it.
package quaytest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/quay"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// The scopes of a quay application token.
const (
	ScopeRead   = "repo:read"
	ScopeWrite  = "repo:write"
	ScopeAdmin  = "repo:admin"
	ScopeCreate = "repo:create"
)

// Backend is the real registry behind the emulation.
type Backend struct {
	Host string
	CA   []byte
	// Username and Password may push and delete there.
	Username, Password string
}

// Server is a running emulation. Its methods are safe for concurrent use.
type Server struct {
	// URL is the web API's base URL, https://127.0.0.1:<port> (the API is
	// under /api/v1).
	URL string
	// RegistryHost is the registry proxy's 127.0.0.1:<port>.
	RegistryHost string
	// CACert is the PEM certificate that signed both listeners'
	// certificates.
	CACert []byte

	backend Backend
	reg     *transfer.Client

	mu       sync.Mutex
	tokens   map[string]map[string]bool
	modified map[string]time.Time // "<ns>/<name>:<tag>"
	repos    map[string]*repoInfo
	calls    []string
}

type repoInfo struct {
	public      bool
	description string
}

// New starts a Server in front of b and stops it when t ends.
func New(t testing.TB, b Backend) *Server {
	t.Helper()
	s := &Server{backend: b, tokens: map[string]map[string]bool{}, modified: map[string]time.Time{}, repos: map[string]*repoInfo{}}
	ca, err := pki.NewCA("quaytest CA", 24*time.Hour)
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
			t.Fatalf("quaytest: backend CA: %v", err)
		}
		backendTLS.RootCAs = pool
	}
	s.reg, err = transfer.New(transfer.WithEndpoint(transfer.Endpoint{Host: b.Host, Username: b.Username, Password: b.Password, CA: b.CA}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.reg.Close)
	s.URL = "https://" + s.listen(t, pair, http.HandlerFunc(s.serveAPI))
	target, _ := url.Parse("https://" + b.Host)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport:      &http.Transport{TLSClientConfig: backendTLS, MaxIdleConnsPerHost: 32},
		ModifyResponse: s.recordPush,
	}
	s.RegistryHost = s.listen(t, pair, proxy)
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
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// WithToken registers an application token with scopes (ScopeRead, ...).
func (s *Server) WithToken(token string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bool{}
	for _, sc := range scopes {
		m[sc] = true
	}
	s.tokens[token] = m
}

// SetLastModified sets a tag's last_modified time.
func (s *Server) SetLastModified(repo, tag string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modified[repo+":"+tag] = t.UTC()
}

// Visibility reports a repository's visibility ("public", "private"), and
// false when quay does not know it.
func (s *Server) Visibility(repo string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[repo]
	if !ok {
		return "", false
	}
	if r.public {
		return "public", true
	}
	return "private", true
}

// Calls returns the web API calls received, as "METHOD path status", in
// order.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modified[repo+":"+ref] = time.Now().UTC()
	if _, ok := s.repos[repo]; !ok {
		s.repos[repo] = &repoInfo{}
	}
	return nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// apiError writes quay's error envelope.
func apiError(w http.ResponseWriter, status int, errorType, msg string) {
	title := map[int]string{400: "invalid_request", 401: "unauthorized", 403: "insufficiently_scoped", 404: "not_found"}[status]
	writeJSON(w, status, map[string]any{"status": status, "error_message": msg, "title": title,
		"error_type": errorType, "detail": msg, "type": "https://quay.io/api/v1/error/" + errorType})
}

func (s *Server) serveAPI(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
	defer func() {
		s.mu.Lock()
		s.calls = append(s.calls, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, w.status))
		s.mu.Unlock()
	}()
	scopes, ok := s.authenticate(r)
	if !ok {
		apiError(w, http.StatusUnauthorized, "invalid_token", "Requires authentication")
		return
	}
	need := func(scope string) bool {
		if scopes[scope] || scopes[ScopeAdmin] && scope != ScopeCreate {
			return true
		}
		apiError(w, http.StatusForbidden, "insufficient_scope", fmt.Sprintf("Unauthorized: the token lacks the %s scope", scope))
		return false
	}
	path := strings.TrimPrefix(r.URL.Path, "/api/v1")
	if path == "/repository" || path == "/repository/" {
		if r.Method != http.MethodPost {
			apiError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed")
			return
		}
		if need(ScopeCreate) {
			s.createRepo(w, r)
		}
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(path, "/repository/"), "/"), "/")
	if !strings.HasPrefix(path, "/repository/") || len(parts) < 2 {
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
		return
	}
	repo := parts[0] + "/" + parts[1]
	switch {
	case len(parts) == 2 && r.Method == http.MethodGet:
		if need(ScopeRead) {
			s.getRepo(w, r, repo)
		}
	case len(parts) == 3 && parts[2] == "tag" && r.Method == http.MethodGet:
		if need(ScopeRead) {
			s.listTags(w, r, repo)
		}
	case len(parts) == 4 && parts[2] == "tag" && r.Method == http.MethodDelete:
		if need(ScopeWrite) {
			s.deleteTag(w, r, repo, parts[3])
		}
	case len(parts) == 3 && parts[2] == "changevisibility" && r.Method == http.MethodPost:
		if need(ScopeAdmin) {
			s.changeVisibility(w, r, repo)
		}
	default:
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
	}
}

func (s *Server) authenticate(r *http.Request) (map[string]bool, bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.tokens[strings.TrimSpace(tok)]
	return sc, ok
}

// known reports whether quay knows repo: created through the API, or
// pushed to (the backend has tags for it).
func (s *Server) known(r *http.Request, repo string) (bool, []string, error) {
	rp, err := s.reg.Repository(r.Context(), s.backend.Host, repo, false)
	if err != nil {
		return false, nil, err
	}
	tags, err := rp.Tags(r.Context())
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		return false, nil, err
	}
	s.mu.Lock()
	_, created := s.repos[repo]
	if !created && len(tags) > 0 {
		s.repos[repo] = &repoInfo{}
		created = true
	}
	s.mu.Unlock()
	return created, tags, nil
}

func (s *Server) getRepo(w http.ResponseWriter, r *http.Request, repo string) {
	ok, _, err := s.known(r, repo)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
		return
	}
	s.mu.Lock()
	info := *s.repos[repo]
	s.mu.Unlock()
	ns, name, _ := strings.Cut(repo, "/")
	writeJSON(w, http.StatusOK, map[string]any{"namespace": ns, "name": name, "kind": "image", "description": info.description,
		"is_public": info.public, "is_organization": true, "is_starred": false, "state": "NORMAL", "can_write": true, "can_admin": true})
}

func (s *Server) createRepo(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Namespace   string `json:"namespace"`
		Repository  string `json:"repository"`
		Visibility  string `json:"visibility"`
		Description string `json:"description"`
		RepoKind    string `json:"repo_kind"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request", "Invalid JSON: "+err.Error())
		return
	}
	if body.Repository == "" || body.Visibility != "public" && body.Visibility != "private" {
		apiError(w, http.StatusBadRequest, "invalid_request", "repository and visibility (public or private) are required")
		return
	}
	if body.RepoKind != "" && body.RepoKind != "image" {
		apiError(w, http.StatusBadRequest, "invalid_request", "Unknown repo_kind")
		return
	}
	repo := body.Namespace + "/" + body.Repository
	ok, _, err := s.known(r, repo)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if ok {
		apiError(w, http.StatusBadRequest, "invalid_request", "Repository already exists")
		return
	}
	s.mu.Lock()
	s.repos[repo] = &repoInfo{public: body.Visibility == "public", description: body.Description}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"namespace": body.Namespace, "name": body.Repository, "kind": "image"})
}

func (s *Server) changeVisibility(w http.ResponseWriter, r *http.Request, repo string) {
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil || body.Visibility != "public" && body.Visibility != "private" {
		apiError(w, http.StatusBadRequest, "invalid_request", "visibility must be public or private")
		return
	}
	ok, _, err := s.known(r, repo)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
		return
	}
	s.mu.Lock()
	s.repos[repo].public = body.Visibility == "public"
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"success": true})
}

func (s *Server) listTags(w http.ResponseWriter, r *http.Request, repo string) {
	ok, names, err := s.known(r, repo)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
		return
	}
	q := r.URL.Query()
	limit, page := 50, 1
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusBadRequest, "invalid_request", "limit must be a positive integer")
			return
		}
		limit = min(n, 100)
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusBadRequest, "invalid_request", "page must be a positive integer")
			return
		}
		page = n
	}
	type entry struct {
		name string
		mod  time.Time
	}
	now := time.Now().UTC()
	var entries []entry
	s.mu.Lock()
	for _, n := range names {
		t, ok := s.modified[repo+":"+n]
		if !ok {
			t = now
			s.modified[repo+":"+n] = t
		}
		entries = append(entries, entry{n, t})
	}
	s.mu.Unlock()
	if sp := q.Get("specificTag"); sp != "" {
		var only []entry
		for _, e := range entries {
			if e.name == sp {
				only = append(only, e)
			}
		}
		entries = only
	}
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].mod.Equal(entries[j].mod) {
			return entries[i].mod.After(entries[j].mod)
		}
		return entries[i].name < entries[j].name
	})
	start := min((page-1)*limit, len(entries))
	end := min(start+limit, len(entries))
	rp, err := s.reg.Repository(r.Context(), s.backend.Host, repo, false)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	tags := []map[string]any{}
	for _, e := range entries[start:end] {
		d, err := rp.Head(r.Context(), e.name)
		if err != nil {
			continue // deleted since the listing
		}
		tags = append(tags, map[string]any{"name": e.name, "reference": e.name, "manifest_digest": d.Digest,
			"is_manifest_list": oci.IsIndex(d.MediaType), "size": d.Size, "start_ts": e.mod.Unix(),
			"last_modified": quay.FormatTime(e.mod)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tags": tags, "page": page, "has_additional": end < len(entries)})
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request, repo, tag string) {
	rp, err := s.reg.Repository(r.Context(), s.backend.Host, repo, true)
	if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if _, err := rp.Head(r.Context(), tag); errors.Is(err, oci.ErrNotFound) {
		apiError(w, http.StatusNotFound, "not_found", "Not Found")
		return
	} else if err != nil {
		apiError(w, http.StatusBadGateway, "backend", "quaytest backend: "+err.Error())
		return
	}
	if err := rp.Delete(r.Context(), tag); err != nil {
		apiError(w, http.StatusInternalServerError, "backend", "quaytest: the backend cannot delete the tag: "+err.Error())
		return
	}
	s.mu.Lock()
	delete(s.modified, repo+":"+tag)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
