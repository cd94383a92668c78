// Package quay is a client for the part of quay's web API
// (https://docs.quay.io/api/swagger/, base /api/v1) that the OCI
// distribution API lacks and the container-image roles use: tag listing
// with modification times, tag deletion, and repository creation with a
// visibility. quay.io and Red Hat Quay serve the same API.
//
// Calls, as quay documents them:
//
//	GET    /api/v1/repository/<ns>/<name>/tag/?page=N&limit=M&onlyActiveTags=true
//	         -> 200 {"tags":[{"name","manifest_digest","last_modified","start_ts","is_manifest_list",...}],
//	                 "page":N,"has_additional":bool}
//	DELETE /api/v1/repository/<ns>/<name>/tag/<tag>     -> 204 (scope repo:write)
//	GET    /api/v1/repository/<ns>/<name>                -> 200 {"namespace","name","is_public",...}; 404
//	POST   /api/v1/repository {"namespace","repository","visibility","description","repo_kind"}
//	         -> 201 (scope repo:create); 400 {"error_message":"Repository already exists"}
//	POST   /api/v1/repository/<ns>/<name>/changevisibility {"visibility"} -> 200 (scope repo:admin)
//
// Every call carries "Authorization: Bearer <api_token>", the OAuth token
// of a quay application. A token without the scope a call needs gets 403
// (error_type insufficient_scope); errors are *oci.Error values, so
// errors.Is matches oci.ErrUnauthorized, oci.ErrForbidden and
// oci.ErrNotFound by the status.
//
// Unlike upstream's remove-registry-tag, listings follow every page
// (has_additional) and are authenticated (private repositories work).
//
// The client does no retries of its own: give it the retrying transport of
// package transfer with WithTransport, so every HTTP call of imagegate
// follows one policy.
package quay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

// MaxPageSize is the largest limit quay honours for a tag listing.
const MaxPageSize = 100

// Limits on what the client reads, so a misbehaving server cannot exhaust
// memory or loop forever.
const (
	maxBody  = 16 << 20
	maxPages = 10000
)

// Visibility is a repository's visibility.
type Visibility string

// The visibilities quay knows.
const (
	Public  Visibility = "public"
	Private Visibility = "private"
)

// ErrExists is returned by CreateRepository when the repository exists.
var ErrExists = errors.New("repository already exists")

// Tag is one tag of a repository, as the tag listing describes it.
type Tag struct {
	Name string
	// Digest is the manifest digest the tag points to.
	Digest string
	// LastModified is when the tag last moved (quay's last_modified, or
	// start_ts when that is absent).
	LastModified time.Time
}

// Repository is what quay says of a repository.
type Repository struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Description string `json:"description"`
	IsPublic    bool   `json:"is_public"`
}

// Visibility is the repository's visibility.
func (r *Repository) Visibility() Visibility {
	if r.IsPublic {
		return Public
	}
	return Private
}

// Client talks to one quay's web API with one token. It is safe for
// concurrent use.
type Client struct {
	base     *url.URL
	hc       *http.Client
	token    string
	log      *slog.Logger
	pageSize int
}

// Option configures a Client.
type Option func(*Client) error

// WithTransport sets the HTTP transport. The default is a clone of
// http.DefaultTransport; imagegate's modules pass the retrying transport of
// package transfer, with the CA they trust.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) error {
		if rt == nil {
			return errors.New("quay transport is nil")
		}
		c.hc.Transport = rt
		return nil
	}
}

// WithLogger sets the logger for request tracing at debug level. The
// default discards. Tokens are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l != nil {
			c.log = l
		}
		return nil
	}
}

// WithPageSize sets how many tags each listing request asks for, from 1 to
// MaxPageSize (the default).
func WithPageSize(n int) Option {
	return func(c *Client) error {
		if n < 1 || n > MaxPageSize {
			return fmt.Errorf("quay page size %d: must be between 1 and %d", n, MaxPageSize)
		}
		c.pageSize = n
		return nil
	}
}

// New returns a client of the quay whose web API is at rawURL
// (https://quay.io: the API is under /api/v1 of it), with the application
// token token. Only https is accepted: the calls carry the token. New does
// no I/O.
func New(rawURL, token string, opts ...Option) (*Client, error) {
	if token == "" {
		return nil, errors.New("quay: an api_token is required")
	}
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("quay API URL %q: %w", rawURL, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil, fmt.Errorf("quay API URL %q: must be https://<host>[:port][/path]", rawURL)
	}
	c := &Client{
		base:     u,
		hc:       &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 2 * time.Minute},
		token:    token,
		log:      slog.New(slog.DiscardHandler),
		pageSize: MaxPageSize,
	}
	// Never follow a redirect: it could carry the token to another host.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// URL is the base URL the client talks to.
func (c *Client) URL() string { return c.base.String() }

// SplitRepository splits a quay repository, <namespace>/<name>, with or
// without a leading registry host (quay.io/<namespace>/<name>).
func SplitRepository(repository string) (namespace, name string, err error) {
	parts := strings.Split(repository, "/")
	if len(parts) == 3 && strings.ContainsAny(parts[0], ".:") {
		parts = parts[1:]
	}
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return "", "", fmt.Errorf("repository %q: quay repositories are [<registry>/]<namespace>/<name>", repository)
	}
	for _, p := range parts {
		if strings.ContainsAny(p, ":@ ?#%") || p != strings.ToLower(p) {
			return "", "", fmt.Errorf("repository %q: %q is not a valid quay name (lower-case letters, digits, '.', '_', '-')", repository, p)
		}
	}
	return parts[0], parts[1], nil
}

// Tags lists the active tags of repository, every page.
func (c *Client) Tags(ctx context.Context, repository string) ([]Tag, error) {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return nil, err
	}
	op := fmt.Sprintf("listing tags of %s/%s on %s", ns, name, c.base.Host)
	var tags []Tag
	for page := 1; ; page++ {
		if page > maxPages {
			return nil, fmt.Errorf("%s: pagination does not end (page %d)", op, page)
		}
		q := url.Values{}
		q.Set("page", strconv.Itoa(page))
		q.Set("limit", strconv.Itoa(c.pageSize))
		q.Set("onlyActiveTags", "true")
		resp, err := c.call(ctx, op, http.MethodGet, c.repoPath(ns, name, "tag", "")+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			e := apiError(op, resp)
			resp.Body.Close()
			return nil, e
		}
		var p struct {
			Tags []struct {
				Name           string `json:"name"`
				ManifestDigest string `json:"manifest_digest"`
				LastModified   string `json:"last_modified"`
				StartTS        int64  `json:"start_ts"`
			} `json:"tags"`
			Page          int  `json:"page"`
			HasAdditional bool `json:"has_additional"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&p)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: decoding page %d: %w", op, page, err)
		}
		for _, r := range p.Tags {
			t := Tag{Name: r.Name, Digest: r.ManifestDigest}
			switch {
			case r.LastModified != "":
				if t.LastModified, err = parseTime(r.LastModified); err != nil {
					return nil, fmt.Errorf("%s: tag %s: last_modified: %w", op, r.Name, err)
				}
			case r.StartTS > 0:
				t.LastModified = time.Unix(r.StartTS, 0).UTC()
			}
			tags = append(tags, t)
		}
		if !p.HasAdditional {
			return tags, nil
		}
		if len(p.Tags) == 0 {
			return nil, fmt.Errorf("%s: page %d is empty but has_additional is true", op, page)
		}
	}
}

// DeleteTag deletes one tag of repository; the manifest and its other tags
// stay. A tag that does not exist is an error matching oci.ErrNotFound;
// a token without the repo:write scope one matching oci.ErrForbidden.
func (c *Client) DeleteTag(ctx context.Context, repository, tag string) error {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return err
	}
	if tag == "" || strings.ContainsAny(tag, "/:@ ") {
		return fmt.Errorf("deleting tag %q of %s/%s: not a valid tag", tag, ns, name)
	}
	op := fmt.Sprintf("deleting tag %s/%s:%s on %s", ns, name, tag, c.base.Host)
	resp, err := c.call(ctx, op, http.MethodDelete, c.repoPath(ns, name, "tag", tag), nil)
	if err != nil {
		return err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusAccepted:
		return nil
	}
	return apiError(op, resp)
}

// GetRepository reads a repository; one that does not exist is an error
// matching oci.ErrNotFound.
func (c *Client) GetRepository(ctx context.Context, repository string) (*Repository, error) {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return nil, err
	}
	op := fmt.Sprintf("reading repository %s/%s on %s", ns, name, c.base.Host)
	resp, err := c.call(ctx, op, http.MethodGet, c.repoPath(ns, name, "", ""), nil)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(op, resp)
	}
	var r Repository
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	return &r, nil
}

// CreateRepository creates an image repository with a visibility and a
// description. An existing repository is an error matching ErrExists.
func (c *Client) CreateRepository(ctx context.Context, repository string, v Visibility, description string) error {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return err
	}
	if v != Public && v != Private {
		return fmt.Errorf("visibility %q: must be public or private", v)
	}
	op := fmt.Sprintf("creating repository %s/%s on %s", ns, name, c.base.Host)
	body, _ := json.Marshal(map[string]string{"namespace": ns, "repository": name, "visibility": string(v),
		"description": description, "repo_kind": "image"})
	resp, err := c.call(ctx, op, http.MethodPost, c.endpoint("/api/v1/repository"), body)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		return nil
	}
	e := apiError(op, resp)
	if resp.StatusCode == http.StatusBadRequest && strings.Contains(strings.ToLower(e.Message), "already exists") {
		return fmt.Errorf("%s: %w", op, ErrExists)
	}
	return e
}

// SetVisibility changes an existing repository's visibility.
func (c *Client) SetVisibility(ctx context.Context, repository string, v Visibility) error {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return err
	}
	if v != Public && v != Private {
		return fmt.Errorf("visibility %q: must be public or private", v)
	}
	op := fmt.Sprintf("making repository %s/%s %s on %s", ns, name, v, c.base.Host)
	body, _ := json.Marshal(map[string]string{"visibility": string(v)})
	resp, err := c.call(ctx, op, http.MethodPost, c.repoPath(ns, name, "changevisibility", ""), body)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return apiError(op, resp)
}

// repoPath is /api/v1/repository/<ns>/<name>[/<sub>[/<item>]], escaped.
func (c *Client) repoPath(ns, name, sub, item string) string {
	p := "/api/v1/repository/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
	if sub != "" {
		p += "/" + sub + "/"
		if item != "" {
			p += url.PathEscape(item)
		}
	}
	return c.endpoint(p)
}

func (c *Client) endpoint(path string) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	return u.String()
}

func (c *Client) call(ctx context.Context, op, method, u string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", "imagegate")
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error quotes the URL, which never holds the token.
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	c.log.Debug("quay", "method", method, "url", req.URL.Redacted(), "status", resp.StatusCode, "duration", time.Since(start))
	return resp, nil
}

// apiError reads quay's error answer, {"status", "error_message", "title",
// "error_type", "detail"}, as an *oci.Error: errors.Is matches
// oci.ErrUnauthorized, oci.ErrForbidden and oci.ErrNotFound by the status.
func apiError(op string, resp *http.Response) *oci.Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &oci.Error{Op: op, StatusCode: resp.StatusCode}
	var body struct {
		ErrorMessage string `json:"error_message"`
		Detail       string `json:"detail"`
		ErrorType    string `json:"error_type"`
		Error        string `json:"error"`
		Message      string `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		for _, m := range []string{body.ErrorMessage, body.Detail, body.Error, body.Message} {
			if m != "" {
				e.Message = m
				break
			}
		}
		if body.ErrorType != "" && !strings.Contains(e.Message, body.ErrorType) {
			e.Message = strings.TrimSpace(e.Message + " (" + body.ErrorType + ")")
		}
	} else if s := strings.TrimSpace(string(b)); s != "" && len(s) < 300 && !strings.Contains(s, "<") {
		e.Message = s
	}
	if resp.StatusCode == http.StatusForbidden && body.ErrorType == "insufficient_scope" {
		e.Message += ": the api_token's application lacks the scope this call needs"
	}
	return e
}

// parseTime reads quay's times: RFC 1123 with a numeric zone ("Mon, 02 Jan
// 2006 15:04:05 -0000"), as its API writes them, or RFC 3339.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC1123Z, time.RFC1123, time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 1123 or RFC 3339 time", s)
}

// FormatTime writes t as quay's API does, for emulations.
func FormatTime(t time.Time) string { return t.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0000") }

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
