package hubtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// The emulated web API of hub.docker.com: login, tag listing with Docker
// Hub's pagination and image details, tag deletion.

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
