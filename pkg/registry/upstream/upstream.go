// Package upstream is the pull-through registry's client for the registry
// a namespace mirrors (registry.WithUpstreams): it reads manifests, tag
// digests and blobs of one upstream, anonymously or with the credentials
// of that upstream, through the Docker token flow (distribution's "Token
// Authentication Specification") or basic authentication.
//
// It is deliberately narrow. imagegate's registry client layer,
// pkg/transfer, copies images and pushes; it stands on
// go-containerregistry's transport, which the buildset_registry binary
// must not link (binary size), and the registry layer may not import the
// client layer. What a pull-through cache needs is three reads, so they
// live here, in the registry layer, speaking through package oci's
// vocabulary (challenges, media types, *oci.Error) as every other client
// does.
//
// An upstream is a URL: scheme and host of a registry, and optionally a
// repository prefix as its path. https://quay.io reads quay.io's
// repositories; https://ir.example.org:5000/quay.io reads the repositories
// under quay.io/ of an intermediate registry, which stores quay.io content
// there (the buildset registry's namespace mapping rule), so a buildset
// registry can use the intermediate registry's cache as its upstream.
//
// Only https is spoken. Nothing is retried here: a registry answering 429
// or failing is reported at once (as *oci.Error, with Retry-After in its
// Header), and the pull-through registry decides to serve its cache or
// fail the request; the client in front of it retries or falls back to its
// next mirror. Content is not verified here either: the registry verifies
// every byte against its digest before it stores or serves it.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

// DefaultTimeout bounds the wait for an upstream's response headers (and
// a whole token request) unless WithTimeout changes it. A blob body then
// streams for as long as it takes.
const DefaultTimeout = 30 * time.Second

// maxManifest is the largest manifest read: 4 MiB, the size the OCI
// distribution spec asks registries to accept.
const maxManifest = 4 << 20

// manifestAccept lists the manifest media types asked for, most
// preferred first: indexes before single manifests, so a multi-platform
// tag is cached whole.
var manifestAccept = strings.Join([]string{
	oci.MediaTypeOCIIndex, oci.MediaTypeDockerList, oci.MediaTypeOCIManifest, oci.MediaTypeDockerManifest,
}, ", ")

// Client reads one upstream registry. Create it with New; it is safe for
// concurrent use.
type Client struct {
	base      *url.URL // scheme and host
	prefix    string   // repository prefix, "" or "quay.io"
	username  string
	password  string
	userAgent string
	timeout   time.Duration
	http      *http.Client

	mu     sync.Mutex
	tokens map[string]token // by scope
}

type token struct {
	value   string
	expires time.Time
}

type config struct {
	username, password string
	caPEM              []byte
	timeout            time.Duration
	userAgent          string
	transport          http.RoundTripper
}

// Option configures a Client.
type Option func(*config)

// WithCredentials sets the username and password sent to the upstream's
// token endpoint (or as basic credentials): an account that lifts a rate
// limit. Default: anonymous.
func WithCredentials(username, password string) Option {
	return func(c *config) { c.username, c.password = username, password }
}

// WithCA adds a CA (PEM) to the system roots for the upstream's
// certificate. Default: the system roots only.
func WithCA(pem []byte) Option {
	return func(c *config) { c.caPEM = append([]byte(nil), pem...) }
}

// WithTimeout bounds the wait for response headers and token requests.
// Default: DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithUserAgent sets the User-Agent header. Default: "imagegate-registry".
func WithUserAgent(ua string) Option { return func(c *config) { c.userAgent = ua } }

// WithTransport sets the HTTP transport (tests, proxies); WithCA and
// WithTimeout's header timeout then do not apply to it. Default: a
// transport of its own.
func WithTransport(rt http.RoundTripper) Option { return func(c *config) { c.transport = rt } }

// New returns a client of the upstream at rawURL: https://host[:port]
// with an optional repository prefix as its path. It refuses other
// schemes, credentials, queries or fragments in the URL, a username without
// a password and a CA that holds no certificate.
func New(rawURL string, opts ...Option) (*Client, error) {
	c := config{timeout: DefaultTimeout, userAgent: "imagegate-registry"}
	for _, o := range opts {
		o(&c)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", rawURL, err)
	}
	switch {
	case u.Scheme != "https":
		return nil, fmt.Errorf("upstream %q: only https upstreams are supported", rawURL)
	case u.Host == "":
		return nil, fmt.Errorf("upstream %q has no host", rawURL)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("upstream %q must not carry credentials, a query or a fragment", rawURL)
	case (c.username == "") != (c.password == ""):
		return nil, fmt.Errorf("upstream %s: a username needs a password and a password a username", u.Host)
	case c.timeout <= 0:
		return nil, fmt.Errorf("upstream %s: timeout %s is not positive", u.Host, c.timeout)
	}
	prefix := strings.Trim(u.Path, "/")
	if strings.HasSuffix(prefix, "/v2") || prefix == "v2" {
		return nil, fmt.Errorf("upstream %q: give the registry's URL without /v2 (and a repository prefix as its path, if any)", rawURL)
	}
	rt := c.transport
	if rt == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(c.caPEM) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(c.caPEM) {
				return nil, fmt.Errorf("upstream %s: the CA holds no PEM certificate", u.Host)
			}
			tc.RootCAs = pool
		}
		rt = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tc,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: c.timeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	return &Client{
		base:      &url.URL{Scheme: u.Scheme, Host: u.Host},
		prefix:    prefix,
		username:  c.username,
		password:  c.password,
		userAgent: c.userAgent,
		timeout:   c.timeout,
		// Redirects (blobs served from a CDN or object store) are
		// followed; net/http drops the Authorization header when one leaves
		// the upstream's host.
		http:   &http.Client{Transport: rt},
		tokens: map[string]token{},
	}, nil
}

// String names the upstream for messages and logs: its host and prefix,
// never its credentials.
func (c *Client) String() string {
	if c.prefix == "" {
		return c.base.Host
	}
	return c.base.Host + "/" + c.prefix
}

// repository returns the upstream's name of repo.
func (c *Client) repository(repo string) string {
	if c.prefix == "" {
		return repo
	}
	return c.prefix + "/" + repo
}

func (c *Client) url(repo, kind, ref string) string {
	u := *c.base
	u.Path = "/v2/" + c.repository(repo) + "/" + kind + "/" + ref
	return u.String()
}

// Manifest reads manifest ref (a tag or a digest) of repo and returns its
// bytes and media type. A manifest over 4 MiB is refused.
func (c *Client) Manifest(ctx context.Context, repo, ref string) ([]byte, string, error) {
	op := "GET manifest " + c.String() + "/" + repo + refSep(ref) + ref
	resp, err := c.do(ctx, http.MethodGet, repo, c.url(repo, "manifests", ref), map[string]string{"Accept": manifestAccept})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if err := check(resp, op); err != nil {
		return nil, "", err
	}
	if resp.ContentLength > maxManifest {
		return nil, "", fmt.Errorf("%s: the manifest is %d bytes, over the limit of %d", op, resp.ContentLength, maxManifest)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("%s: reading the body: %w", op, err)
	}
	if len(body) > maxManifest {
		return nil, "", fmt.Errorf("%s: the manifest is over the limit of %d bytes", op, maxManifest)
	}
	return body, oci.MediaType(resp.Header.Get("Content-Type")), nil
}

// Digest asks the upstream (HEAD) for the digest tag of repo names now. It
// returns "" and no error when the upstream answers without a
// Docker-Content-Digest header; the caller then reads the manifest.
// Docker Hub does not count HEAD requests against its pull rate limit.
func (c *Client) Digest(ctx context.Context, repo, tag string) (digest.Digest, error) {
	op := "HEAD manifest " + c.String() + "/" + repo + ":" + tag
	resp, err := c.do(ctx, http.MethodHead, repo, c.url(repo, "manifests", tag), map[string]string{"Accept": manifestAccept})
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if err := check(resp, op); err != nil {
		return "", err
	}
	v := resp.Header.Get("Docker-Content-Digest")
	if v == "" {
		return "", nil
	}
	d, err := oci.ParseDigest(v)
	if err != nil {
		return "", fmt.Errorf("%s: Docker-Content-Digest %q: %w", op, v, err)
	}
	return d, nil
}

// Blob opens blob d of repo and returns its body and size (-1 when the
// upstream does not say). The caller closes it and verifies the content.
func (c *Client) Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	op := "GET blob " + c.String() + "/" + repo + "@" + d.String()
	resp, err := c.do(ctx, http.MethodGet, repo, c.url(repo, "blobs", d.String()), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := check(resp, op); err != nil {
		resp.Body.Close()
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

func refSep(ref string) string {
	if oci.IsDigest(ref) {
		return "@"
	}
	return ":"
}

// check returns nil for a 200 and the answer as *oci.Error otherwise, with
// the Retry-After header kept.
func check(resp *http.Response, op string) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := oci.ResponseError(op, resp)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		e.Header = http.Header{"Retry-After": {ra}}
	}
	return e
}

// do sends a request for repo with the token held for its scope, and on a
// 401 authenticates as the challenge asks and sends it once more.
func (c *Client) do(ctx context.Context, method, repo, u string, hdr map[string]string) (*http.Response, error) {
	scope := "repository:" + c.repository(repo) + ":pull"
	send := func(auth string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.Header.Set("User-Agent", c.userAgent)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return c.http.Do(req)
	}
	resp, err := send(c.cachedAuth(scope))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	challenges := resp.Header.Values("WWW-Authenticate")
	drain(resp)
	ch, ok := oci.FindChallenge(challenges, "bearer", "basic")
	if !ok {
		return nil, fmt.Errorf("401 Unauthorized without a Bearer or Basic challenge")
	}
	var auth string
	if strings.EqualFold(ch.Scheme, "basic") {
		if c.username == "" {
			return send("") // the 401 again, for the caller to report
		}
		auth = basicAuth(c.username, c.password)
	} else {
		tok, err := c.fetchToken(ctx, ch, scope)
		if err != nil {
			return nil, err
		}
		auth = "Bearer " + tok
	}
	return send(auth)
}

func (c *Client) cachedAuth(scope string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[scope]; ok && time.Now().Before(t.expires) {
		return t.value
	}
	return ""
}

// fetchToken gets a bearer token for scope from the challenge's realm
// (GET, with basic credentials when configured) and keeps it until shortly
// before it expires.
func (c *Client) fetchToken(ctx context.Context, ch oci.Challenge, scope string) (string, error) {
	realm := ch.Params["realm"]
	ru, err := url.Parse(realm)
	if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") || ru.Host == "" {
		return "", fmt.Errorf("the upstream's bearer challenge has no usable realm (%q)", realm)
	}
	if ru.Scheme != "https" {
		return "", fmt.Errorf("the upstream's token realm %s is not https: refusing to send credentials or trust its tokens", realm)
	}
	q := ru.Query()
	if s := ch.Params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", scope)
	ru.RawQuery = q.Encode()
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, http.MethodGet, ru.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", c.userAgent)
	if c.username != "" {
		req.Header.Set("Authorization", basicAuth(c.username, c.password))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("getting a token from %s: %w", ru.Host, err)
	}
	defer resp.Body.Close()
	if err := check(resp, "GET token "+ru.Host+" "+scope); err != nil {
		return "", err
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", fmt.Errorf("reading the token from %s: %w", ru.Host, err)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return "", fmt.Errorf("the token endpoint %s returned no token", ru.Host)
	}
	// The token spec's default lifetime is 60 s; keep a margin.
	ttl := time.Duration(max(body.ExpiresIn, 60))*time.Second - 10*time.Second
	c.mu.Lock()
	c.tokens[scope] = token{value: "Bearer " + tok, expires: time.Now().Add(ttl)}
	c.mu.Unlock()
	return tok, nil
}

func basicAuth(user, pass string) string {
	req := http.Request{Header: http.Header{}}
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// drain reads a little of an unwanted body and closes it, so the
// connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}
