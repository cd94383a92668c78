package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Client is imagegate's client of registries: it copies images between
// them (Copy, CopyAll, Plan), reads what a reference points at (Resolve,
// ListTags), and opens repositories for manifest-level work (Repository,
// Repositories). Every request to a registry, and to Docker Hub's web API
// (Transport), goes through the transport of that registry's Endpoint.
//
// A Client is safe for concurrent use; connections, challenges and
// repository tokens are kept between operations until Close.
type Client struct {
	endpoints map[string]Endpoint
	jobs      int
	imageJobs int
	retry     RetryPolicy
	timeout   time.Duration
	pageSize  int
	log       *slog.Logger
	wrap      func(http.RoundTripper) http.RoundTripper
	conv      conventions
	referrers bool

	mu         sync.Mutex
	transports map[string]*endpointTransport
	repos      map[string]*Repository
}

// Option configures a Client.
type Option func(*Client) error

// WithEndpoint sets the credentials and CA of one registry. Registries
// without an endpoint are reached anonymously, trusting the system roots.
// Giving the same host twice is an error.
func WithEndpoint(ep Endpoint) Option {
	return func(c *Client) error {
		if ep.Host == "" || strings.Contains(ep.Host, "/") {
			return fmt.Errorf("endpoint host %q: want host[:port], an IPv6 address in brackets", ep.Host)
		}
		if _, err := name.NewRegistry(ep.Host, name.StrictValidation); err != nil {
			return fmt.Errorf("endpoint host %q: %w", ep.Host, err)
		}
		k := oci.CanonicalHost(ep.Host)
		if _, dup := c.endpoints[k]; dup {
			return fmt.Errorf("endpoint %s is given twice", ep.Host)
		}
		c.endpoints[k] = ep
		return nil
	}
}

// WithJobs bounds the blob transfers in flight at once, across every image
// of an operation (default 8).
func WithJobs(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, got %d", n)
		}
		c.jobs = n
		return nil
	}
}

// WithImageJobs bounds the images of one CopyAll copied at once (default
// 16). An image in flight costs little: its blobs wait for the shared
// pool of WithJobs; starting them all lets small layers travel beside the
// large ones.
func WithImageJobs(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("image jobs must be at least 1, got %d", n)
		}
		c.imageJobs = n
		return nil
	}
}

// WithRetry sets the retry policy of every request (default
// DefaultRetryPolicy).
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) error {
		if err := p.validate(); err != nil {
			return err
		}
		c.retry = p
		return nil
	}
}

// WithTimeout sets the deadline of each operation (Copy, CopyAll, Plan,
// Resolve, ListTags), retries included (default 30 minutes). Repository
// calls are bounded by their context, and each request by five minutes.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("timeout must be positive, got %s", d)
		}
		c.timeout = d
		return nil
	}
}

// WithPageSize sets how many tags a listing asks for per page (ListTags,
// Repository.Tags); the default, 0, takes the registry's own page size.
func WithPageSize(n int) Option {
	return func(c *Client) error {
		if n < 0 {
			return fmt.Errorf("page size must not be negative, got %d", n)
		}
		c.pageSize = n
		return nil
	}
}

// WithLogger sets the logger for retries, progress and (at debug level)
// every request; the default discards. It never receives credentials,
// headers or query strings.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		c.log = l
		return nil
	}
}

// WithTransportWrapper wraps the transport of every registry (TLS, retries
// and all, under authentication) in wrap: to observe requests, or to cut
// an operation off at a chosen request in tests. The default is none.
func WithTransportWrapper(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(c *Client) error {
		if wrap == nil {
			return errors.New("transport wrapper is nil")
		}
		c.wrap = wrap
		return nil
	}
}

// New returns a Client configured by opts. It does no I/O.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		endpoints:  map[string]Endpoint{},
		jobs:       8,
		imageJobs:  16,
		retry:      DefaultRetryPolicy(),
		timeout:    30 * time.Minute,
		log:        discard,
		transports: map[string]*endpointTransport{},
		repos:      map[string]*Repository{},
		conv:       defaultConventions(),
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if err := c.conv.load(); err != nil {
		return nil, err
	}
	for _, ep := range c.endpoints {
		trust, err := c.conv.trust(ep.Host)
		if err != nil {
			return nil, err
		}
		if _, _, err := tlsConfigs(ep, trust, false); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		for _, b := range t.bases {
			b.CloseIdleConnections()
		}
	}
}

func (c *Client) transport(host string) (*endpointTransport, error) {
	k := oci.CanonicalHost(host)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[k]; ok {
		return t, nil
	}
	ep, ok := c.endpoints[k]
	if !ok {
		ep = Endpoint{Host: host}
	}
	t, err := newEndpointTransport(ep, transportConfig{retry: c.retry, log: c.log, conns: c.maxRequests(), wrap: c.wrap, conv: &c.conv})
	if err != nil {
		return nil, err
	}
	c.transports[k] = t
	return t, nil
}

// Transport returns the transport of host (host[:port]) without
// authentication: its endpoint's TLS trust, plain HTTP refused, the retry
// policy, the user agent. It is for the APIs beside a registry's, such as
// Docker Hub's web API, so that they follow the same conventions.
func (c *Client) Transport(host string) (http.RoundTripper, error) {
	et, err := c.transport(host)
	if err != nil {
		return nil, err
	}
	return et.rt, nil
}

// maxRequests is the most requests an operation has in flight to one
// registry: blob transfers, mounts (see newSession) and one manifest
// request per image.
func (c *Client) maxRequests() int { return c.jobs + mountJobs(c.jobs) + c.imageJobs }

// mountJobs is the size of the pool of mounts: see (*session).mountBlob.
func mountJobs(jobs int) int { return 4 * jobs }

func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("%w (%s)", ErrDeadline, c.timeout))
}

// Repository opens the repository repo of the registry host, with pull
// access, and push (and delete) access if push is true. Credentials are
// checked here: wrong ones fail with an error matching oci.ErrDenied.
func (c *Client) Repository(ctx context.Context, host, repo string, push bool) (*Repository, error) {
	m, err := c.Repositories(ctx, host, []string{repo}, push)
	if err != nil {
		return nil, err
	}
	return m[repo], nil
}

// Repositories opens several repositories of the registry host at once.
// With a token service, one token carries the scopes of every repository
// (the token specification allows several scope parameters), so promoting
// 20 images costs one token request, not 20; a repository the token does
// not cover gets a token of its own. Opened repositories are kept for
// later calls.
func (c *Client) Repositories(ctx context.Context, host string, repos []string, push bool) (map[string]*Repository, error) {
	if host == "" || strings.ContainsAny(host, "/ @?#") {
		return nil, fmt.Errorf("registry host %q: must be <host>[:<port>] with no scheme or path", host)
	}
	key := func(repo string) string {
		return oci.CanonicalHost(host) + "/" + repo + "|" + strconv.FormatBool(push)
	}
	out := map[string]*Repository{}
	var todo []string
	c.mu.Lock()
	for _, repo := range repos {
		if repo == "" || strings.ContainsAny(repo, ":@ ") || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") {
			c.mu.Unlock()
			return nil, fmt.Errorf("repository %q: not a valid repository name", repo)
		}
		if r, ok := c.repos[key(repo)]; ok {
			out[repo] = r
		} else if _, dup := out[repo]; !dup {
			todo = append(todo, repo)
			out[repo] = nil
		}
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return out, nil
	}
	et, err := c.transport(host)
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
	rt, tok, err := et.authorized(ctx, scopes(todo))
	if err != nil {
		return nil, err
	}
	if err := et.checkBasic(ctx, rt); err != nil {
		return nil, err
	}
	shared := tokenGrants(tok)
	for _, repo := range todo {
		rrt, g := rt, shared
		if tok != nil && shared != nil && !shared.allows(repo, push) && len(todo) > 1 {
			// Not covered by the shared token: ask for this one alone.
			var own *transport.Token
			if rrt, own, err = et.authorized(ctx, scopes([]string{repo})); err != nil {
				return nil, err
			}
			g = tokenGrants(own)
		}
		out[repo] = c.newRepository(host, et.urlScheme(), repo, rrt, g)
	}
	c.mu.Lock()
	for _, repo := range todo {
		if r, ok := c.repos[key(repo)]; ok {
			out[repo] = r
		} else {
			c.repos[key(repo)] = out[repo]
		}
	}
	c.mu.Unlock()
	return out, nil
}
