// Package dockerhub is a client for the part of Docker Hub's web API
// (https://hub.docker.com/v2/) that the OCI distribution API lacks: tag
// listing with push times, and tag deletion. Docker Hub's registry endpoint
// refuses DELETE /v2/<name>/manifests/<tag>, so removing a staging tag
// after promotion, and sweeping stale ones, has to go through this API.
//
// Calls, as documented by Docker (docs.docker.com/reference/api/hub/latest)
// and as zuul-jobs' promote-docker-image uses them:
//
//	POST   /v2/users/login/                               {"username","password"} -> 200 {"token"}; 401 {"detail"}
//	GET    /v2/repositories/<ns>/<repo>/tags/?page_size=N  -> 200 {"count","next","previous","results":[tag...]}
//	DELETE /v2/repositories/<ns>/<repo>/tags/<tag>/        -> 204; 404 when the tag does not exist
//
// The token from the login is a JWT sent as "Authorization: Bearer <token>".
// Unlike upstream, the client authenticates its listings (so private
// repositories work), follows every "next" page (a page holds at most 100
// tags), and sends the login as a POST.
//
// The client does no retries of its own: give it the retrying transport of
// package transfer with WithTransport, so every HTTP call of imagegate
// follows one policy.
package dockerhub

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
	"sync"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

// DefaultURL is Docker Hub's web API.
const DefaultURL = "https://hub.docker.com"

// MaxPageSize is the largest page_size Docker Hub honours.
const MaxPageSize = 100

// Limits on what the client reads, so a misbehaving server cannot exhaust
// memory or loop forever.
const (
	maxBody  = 16 << 20
	maxPages = 10000
)

// Tag is one tag of a repository, as the tag listing describes it.
type Tag struct {
	Name string `json:"name"`
	// Digest is the manifest digest the tag points to (empty on old
	// entries).
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// LastUpdated is when the tag last changed: the time of the push that
	// made it point where it points.
	LastUpdated time.Time `json:"last_updated"`
	// TagLastPushed is when the tag was last pushed, even with an
	// unchanged digest; zero if Docker Hub did not say.
	TagLastPushed time.Time `json:"tag_last_pushed"`
}

// Client talks to Docker Hub's web API as one account. It is safe for
// concurrent use.
type Client struct {
	base     *url.URL
	hc       *http.Client
	username string
	password string
	log      *slog.Logger
	pageSize int

	mu    sync.Mutex
	token string
}

// Option configures a Client.
type Option func(*Client) error

// WithURL sets the API's base URL. The default is DefaultURL; tests point it
// at an emulation. Only https is accepted: the API carries a password and
// a token.
func WithURL(raw string) Option {
	return func(c *Client) error {
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil {
			return fmt.Errorf("docker hub API URL %q: %w", raw, err)
		}
		if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" {
			return fmt.Errorf("docker hub API URL %q: must be https://<host>[:port][/path]", raw)
		}
		c.base = u
		return nil
	}
}

// WithTransport sets the HTTP transport. The default is a clone of
// http.DefaultTransport; imagegate's modules pass the retrying transport of
// package transfer, with the CA they trust.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) error {
		if rt == nil {
			return errors.New("docker hub transport is nil")
		}
		c.hc.Transport = rt
		return nil
	}
}

// WithLogger sets the logger for request tracing at debug level. The default
// discards. Tokens and passwords are never logged.
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
			return fmt.Errorf("docker hub page size %d: must be between 1 and %d", n, MaxPageSize)
		}
		c.pageSize = n
		return nil
	}
}

// New returns a client for the account username. The password may be a
// personal access token, which Docker Hub requires for accounts with SSO or
// two-factor authentication. New does no I/O; Login, or the first call,
// authenticates.
func New(username, password string, opts ...Option) (*Client, error) {
	if username == "" || password == "" {
		return nil, errors.New("docker hub: username and password are required")
	}
	base, _ := url.Parse(DefaultURL)
	c := &Client{
		base:     base,
		hc:       &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 2 * time.Minute},
		username: username,
		password: password,
		log:      slog.New(slog.DiscardHandler),
		pageSize: MaxPageSize,
	}
	// Never follow a redirect: it could carry the Authorization header to
	// another host, and Docker Hub's API does not redirect these calls.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Login exchanges the credentials for a token (POST /v2/users/login/). A
// 401 is an *oci.Error matching oci.ErrUnauthorized.
func (c *Client) Login(ctx context.Context) error {
	_, err := c.login(ctx)
	return err
}

func (c *Client) login(ctx context.Context) (string, error) {
	body, err := json.Marshal(map[string]string{"username": c.username, "password": c.password})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("/v2/users/login/"), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	op := "logging in to Docker Hub as " + c.username
	resp, err := c.do(req, op)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := apiError(op, resp)
		if resp.StatusCode == http.StatusUnauthorized && e.Message == "" {
			e.Message = "wrong username or password"
		}
		return "", e
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&out); err != nil {
		return "", fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	if out.Token == "" {
		return "", fmt.Errorf("%s: the answer holds no token", op)
	}
	c.mu.Lock()
	c.token = out.Token
	c.mu.Unlock()
	return out.Token, nil
}

// currentToken returns the token, logging in first if there is none.
func (c *Client) currentToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	if tok != "" {
		return tok, nil
	}
	return c.login(ctx)
}

// authorized sends a request built by mk with the token, and once more with
// a fresh token if Docker Hub answers 401 (tokens expire).
func (c *Client) authorized(ctx context.Context, op string, mk func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.currentToken(ctx)
		if err != nil {
			return nil, err
		}
		req, err := mk()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req, op)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		drain(resp)
		c.mu.Lock()
		if c.token == tok {
			c.token = ""
		}
		c.mu.Unlock()
	}
}

// Tags lists every tag of repository ("<namespace>/<name>", or "<name>" for
// an official image under library/), following the "next" link of each
// page. A next link to another host than the API's is refused, so the token
// never leaves Docker Hub.
func (c *Client) Tags(ctx context.Context, repository string) ([]Tag, error) {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return nil, err
	}
	op := fmt.Sprintf("listing tags of %s/%s on Docker Hub", ns, name)
	next := c.endpoint(fmt.Sprintf("/v2/repositories/%s/%s/tags/", url.PathEscape(ns), url.PathEscape(name))) +
		"?page_size=" + strconv.Itoa(c.pageSize)
	seen := map[string]bool{}
	var tags []Tag
	for page := 0; next != ""; page++ {
		if page >= maxPages || seen[next] {
			return nil, fmt.Errorf("%s: pagination does not end (page %d, %s)", op, page+1, next)
		}
		seen[next] = true
		u := next
		resp, err := c.authorized(ctx, op, func() (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			e := apiError(op, resp)
			resp.Body.Close()
			return nil, e
		}
		var p struct {
			Count   int     `json:"count"`
			Next    *string `json:"next"`
			Results []struct {
				Name          string `json:"name"`
				Digest        string `json:"digest"`
				MediaType     string `json:"media_type"`
				LastUpdated   string `json:"last_updated"`
				TagLastPushed string `json:"tag_last_pushed"`
			} `json:"results"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&p)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: decoding page %d: %w", op, page+1, err)
		}
		for _, r := range p.Results {
			t := Tag{Name: r.Name, Digest: r.Digest, MediaType: r.MediaType}
			if t.LastUpdated, err = parseTime(r.LastUpdated); err != nil {
				return nil, fmt.Errorf("%s: tag %s: last_updated: %w", op, r.Name, err)
			}
			if t.TagLastPushed, err = parseTime(r.TagLastPushed); err != nil {
				return nil, fmt.Errorf("%s: tag %s: tag_last_pushed: %w", op, r.Name, err)
			}
			tags = append(tags, t)
		}
		next = ""
		if p.Next != nil && *p.Next != "" {
			if next, err = c.sameOrigin(u, *p.Next); err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
		}
	}
	return tags, nil
}

// DeleteTag deletes one tag of repository (DELETE
// /v2/repositories/<ns>/<name>/tags/<tag>/). The manifest and its other tags
// stay. A tag that does not exist is an error matching oci.ErrNotFound, so
// a caller can tell "already gone" apart.
func (c *Client) DeleteTag(ctx context.Context, repository, tag string) error {
	ns, name, err := SplitRepository(repository)
	if err != nil {
		return err
	}
	if tag == "" || strings.ContainsAny(tag, "/:@ ") {
		return fmt.Errorf("deleting tag %q of %s/%s: not a valid tag", tag, ns, name)
	}
	op := fmt.Sprintf("deleting tag %s/%s:%s on Docker Hub", ns, name, tag)
	u := c.endpoint(fmt.Sprintf("/v2/repositories/%s/%s/tags/%s/", url.PathEscape(ns), url.PathEscape(name), url.PathEscape(tag)))
	resp, err := c.authorized(ctx, op, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusAccepted:
		drain(resp)
		return nil
	}
	return apiError(op, resp)
}

// SplitRepository splits a Docker Hub repository name into namespace and
// name. A leading docker.io/ (or index.docker.io/) is removed, and a
// one-component name is an official image under library/. Docker Hub has
// exactly two levels; anything deeper is an error.
func SplitRepository(repository string) (namespace, name string, err error) {
	r := repository
	for _, p := range []string{"docker.io/", "index.docker.io/", "registry-1.docker.io/"} {
		r = strings.TrimPrefix(r, p)
	}
	parts := strings.Split(r, "/")
	switch len(parts) {
	case 1:
		namespace, name = "library", parts[0]
	case 2:
		namespace, name = parts[0], parts[1]
	default:
		return "", "", fmt.Errorf("repository %q: Docker Hub repositories are <namespace>/<name>, with no further levels", repository)
	}
	if namespace == "" || name == "" {
		return "", "", fmt.Errorf("repository %q: namespace and name must not be empty", repository)
	}
	for _, p := range []string{namespace, name} {
		if strings.ContainsAny(p, ":@ ?#%") || p != strings.ToLower(p) {
			return "", "", fmt.Errorf("repository %q: %q is not a valid Docker Hub name (lower-case letters, digits, '.', '_', '-')", repository, p)
		}
	}
	return namespace, name, nil
}

func (c *Client) endpoint(path string) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	return u.String()
}

// sameOrigin resolves a next link against the current page and refuses one
// that leaves the API's scheme and host.
func (c *Client) sameOrigin(current, next string) (string, error) {
	cu, err := url.Parse(current)
	if err != nil {
		return "", err
	}
	nu, err := cu.Parse(next)
	if err != nil {
		return "", fmt.Errorf("next link %q: %w", next, err)
	}
	if nu.Scheme != c.base.Scheme || nu.Host != c.base.Host {
		return "", fmt.Errorf("next link %q leaves %s; refusing to send the token there", next, c.base.Host)
	}
	return nu.String(), nil
}

func (c *Client) do(req *http.Request, op string) (*http.Response, error) {
	req.Header.Set("User-Agent", "imagegate")
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error quotes the URL, which never holds a secret here.
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	c.log.Debug("docker hub", "method", req.Method, "url", req.URL.Redacted(), "status", resp.StatusCode, "duration", time.Since(start))
	return resp, nil
}

// apiError reads Docker Hub's error answer as an *oci.Error: its
// {"detail": ...} (the authentication layer) or {"message": ..., "errinfo":
// ...} (the rest) becomes the Message; errors.Is matches oci.ErrUnauthorized,
// oci.ErrForbidden and oci.ErrNotFound by the status.
func apiError(op string, resp *http.Response) *oci.Error {
	return oci.ResponseError(op, resp)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
