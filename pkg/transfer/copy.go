package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// Copier copies images between registries. It is safe for concurrent use;
// connections are kept between operations until Close.
type Copier struct {
	endpoints map[string]Endpoint
	jobs      int
	imageJobs int
	retry     RetryPolicy
	timeout   time.Duration
	pageSize  int
	log       *slog.Logger

	mu         sync.Mutex
	transports map[string]*endpointTransport
}

// Option configures a Copier.
type Option func(*Copier) error

// WithEndpoint sets the credentials and CA of one registry. Registries
// without an endpoint are reached anonymously, trusting the system roots.
// Giving the same host twice is an error.
func WithEndpoint(ep Endpoint) Option {
	return func(c *Copier) error {
		if ep.Host == "" || strings.Contains(ep.Host, "/") {
			return fmt.Errorf("endpoint host %q: want host[:port], an IPv6 address in brackets", ep.Host)
		}
		if _, err := name.NewRegistry(ep.Host, name.StrictValidation); err != nil {
			return fmt.Errorf("endpoint host %q: %w", ep.Host, err)
		}
		k := canonicalHost(ep.Host)
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
	return func(c *Copier) error {
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
	return func(c *Copier) error {
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
	return func(c *Copier) error {
		if err := p.validate(); err != nil {
			return err
		}
		c.retry = p
		return nil
	}
}

// WithTimeout sets the deadline of each operation (Copy, CopyAll, Plan,
// Resolve, ListTags), retries included (default 30 minutes).
func WithTimeout(d time.Duration) Option {
	return func(c *Copier) error {
		if d <= 0 {
			return fmt.Errorf("timeout must be positive, got %s", d)
		}
		c.timeout = d
		return nil
	}
}

// WithPageSize sets how many tags ListTags asks for per page (default 0:
// the registry's own page size).
func WithPageSize(n int) Option {
	return func(c *Copier) error {
		if n < 0 {
			return fmt.Errorf("page size must not be negative, got %d", n)
		}
		c.pageSize = n
		return nil
	}
}

// WithLogger sets the logger for retries and progress (default: discard).
// It never receives credentials, headers or query strings.
func WithLogger(l *slog.Logger) Option {
	return func(c *Copier) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		c.log = l
		return nil
	}
}

// New returns a Copier configured by opts.
func New(opts ...Option) (*Copier, error) {
	c := &Copier{
		endpoints:  map[string]Endpoint{},
		jobs:       8,
		imageJobs:  16,
		retry:      DefaultRetryPolicy(),
		timeout:    30 * time.Minute,
		log:        discard,
		transports: map[string]*endpointTransport{},
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	for _, ep := range c.endpoints {
		if _, _, err := tlsConfigs(ep); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Close releases idle connections.
func (c *Copier) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		for _, b := range t.bases {
			b.CloseIdleConnections()
		}
	}
}

func (c *Copier) transport(host string) (*endpointTransport, error) {
	k := canonicalHost(host)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[k]; ok {
		return t, nil
	}
	ep, ok := c.endpoints[k]
	if !ok {
		ep = Endpoint{Host: host}
	}
	t, err := newEndpointTransport(ep, c)
	if err != nil {
		return nil, err
	}
	c.transports[k] = t
	return t, nil
}

// maxRequests is the most requests an operation has in flight to one
// registry: blob transfers, mounts (see newSession) and one manifest
// request per image.
func (c *Copier) maxRequests() int { return c.jobs + mountJobs(c.jobs) + c.imageJobs }

// mountJobs is the size of the pool of mounts: see (*session).mountBlob.
func mountJobs(jobs int) int { return 4 * jobs }

func (c *Copier) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("%w (%s)", ErrDeadline, c.timeout))
}

// Job is one copy: Src and Dst are references, registry/repository:tag or
// registry/repository@digest, IPv6 hosts in brackets.
type Job struct {
	Src, Dst string
}

// Result is what one copy did, or would do (Plan).
type Result struct {
	Src, Dst string
	// Digest and MediaType are the manifest's, the same on both sides.
	Digest    string
	MediaType string
	// Changed is true when Dst did not point at Digest before the copy.
	Changed bool
	// Manifests counts the child manifests of an index written to Dst.
	Manifests int
	BlobStats
	// Err is this copy's failure, an *Error; CopyAll also returns it.
	Err error
}

// BlobStats says how the blobs of a copy reached the target; modules
// return it as is, so it carries the result keys.
type BlobStats struct {
	// BlobsCopied were uploaded, BlobsMounted mounted from another
	// repository of the target registry, BlobsExisting already there.
	BlobsCopied   int `json:"blobs_copied"`
	BlobsMounted  int `json:"blobs_mounted"`
	BlobsExisting int `json:"blobs_existing"`
	// BytesCopied is the size of the uploaded blobs.
	BytesCopied int64 `json:"bytes_copied"`
}

// Copy copies one image or index from src to dst.
func (c *Copier) Copy(ctx context.Context, src, dst string) (*Result, error) {
	rs, err := c.CopyAll(ctx, []Job{{Src: src, Dst: dst}})
	if len(rs) == 0 {
		return nil, err
	}
	return &rs[0], err
}

// CopyAll copies every job, several at once (WithImageJobs), sharing one
// pool of blob transfers (WithJobs). A blob needed by several targets on
// one registry is uploaded once; the others mount it from the repository
// that received it. Each target tag is written last, once everything it
// refers to is in place, so a failed copy publishes nothing. Results are
// in the order of jobs; the error joins the failures of every job.
func (c *Copier) CopyAll(ctx context.Context, jobs []Job) ([]Result, error) {
	return c.run(ctx, jobs, false)
}

// Plan resolves every job as CopyAll would, reading both sides, and
// reports which targets would change; it writes nothing (check mode).
func (c *Copier) Plan(ctx context.Context, jobs []Job) ([]Result, error) {
	return c.run(ctx, jobs, true)
}

type parsedJob struct {
	src, dst           name.Reference
	srcHost, dstHost   string // as in URLs
	srcRepo, dstRepo   string
	srcString, dstName string
}

// ParseReference parses an image reference the way a Copier does: a
// registry host is required (no implicit docker.io), a missing tag means
// latest.
//
// Errors are *Error values of step StepParse.
func ParseReference(s string) (name.Reference, error) {
	fail := func(err error) (name.Reference, error) { return nil, &Error{Ref: s, Step: StepParse, Err: err} }
	if strings.Contains(s, "://") {
		return fail(errors.New("give host/repository:tag, without a transport prefix"))
	}
	first, _, ok := strings.Cut(s, "/")
	if !ok || !(strings.ContainsAny(first, ".:[") || first == "localhost") {
		return fail(errors.New("name the registry host: host[:port]/repository[:tag]"))
	}
	r, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return fail(err)
	}
	return r, nil
}

func parseJobs(jobs []Job) ([]*parsedJob, error) {
	out := make([]*parsedJob, len(jobs))
	seen := map[string]int{}
	for i, j := range jobs {
		src, err := ParseReference(j.Src)
		if err != nil {
			return nil, err
		}
		dst, err := ParseReference(j.Dst)
		if err != nil {
			return nil, err
		}
		p := &parsedJob{src: src, dst: dst,
			srcHost: src.Context().RegistryStr(), dstHost: dst.Context().RegistryStr(),
			srcRepo: src.Context().RepositoryStr(), dstRepo: dst.Context().RepositoryStr(),
			srcString: src.String(), dstName: dst.String()}
		k := canonicalHost(p.dstHost) + "/" + p.dstRepo + "|" + dst.Identifier()
		if prev, dup := seen[k]; dup {
			return nil, &Error{Ref: j.Dst, Step: StepParse,
				Err: fmt.Errorf("jobs %d and %d both write this target; copy to each target once", prev, i)}
		}
		seen[k] = i
		out[i] = p
	}
	return out, nil
}

func (c *Copier) run(ctx context.Context, jobs []Job, plan bool) ([]Result, error) {
	parsed, err := parseJobs(jobs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	s := newSession(ctx, c, parsed, plan)
	results := make([]Result, len(parsed))
	sem := make(chan struct{}, c.imageJobs)
	var wg sync.WaitGroup
	for i, j := range parsed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = Result{Src: j.srcString, Dst: j.dstName}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i].Err = s.fail(j.dstName, StepConnect, "", ctx.Err())
				return
			}
			defer func() { <-sem }()
			s.copyJob(ctx, j, &results[i])
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// Descriptor is what a reference points at.
type Descriptor struct {
	Digest    string
	MediaType string
	Size      int64
}

// Resolve returns the manifest a reference points at; an absent tag is an
// error matching ErrNotFound.
func (c *Copier) Resolve(ctx context.Context, ref string) (*Descriptor, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	s := newSession(ctx, c, nil, true)
	rc, err := s.client(r.Context().RegistryStr(), r.Context().RepositoryStr(), nil)
	if err != nil {
		return nil, s.fail(r.String(), StepConnect, "", err)
	}
	m, err := rc.getManifest(ctx, r.Identifier())
	if err != nil {
		return nil, s.fail(r.String(), StepSourceManifest, "", err)
	}
	return &Descriptor{Digest: m.digest.String(), MediaType: m.mediaType, Size: int64(len(m.raw))}, nil
}

// ListTags lists the tags of repository (registry/repository), every page.
func (c *Copier) ListTags(ctx context.Context, repository string) ([]string, error) {
	r, err := ParseReference(repository)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(strings.TrimPrefix(repository, r.Context().RegistryStr()), ":@") {
		return nil, &Error{Ref: repository, Step: StepParse, Err: errors.New("give a repository, without tag or digest")}
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	s := newSession(ctx, c, nil, true)
	repo := r.Context()
	rc, err := s.client(repo.RegistryStr(), repo.RepositoryStr(), nil)
	if err != nil {
		return nil, s.fail(repo.String(), StepConnect, "", err)
	}
	tags, err := rc.listTags(ctx, c.pageSize)
	if err != nil {
		return nil, s.fail(repo.String(), StepListTags, "", err)
	}
	return tags, nil
}

// session is one operation: its clients (one token per repository and
// scope set), the blobs it has placed on each target registry, and the
// shared pool of blob transfers.
type session struct {
	ctx  context.Context
	c    *Copier
	plan bool
	// mountable lists, per target registry, the repositories a target
	// may mount from: every target of the operation on that registry, and
	// every source on it. Target tokens carry pull scope for them.
	mountable map[string][]string
	blobSem   chan struct{}
	mountSem  chan struct{}

	mu      sync.Mutex
	clients map[string]*clientEntry
	flights map[string]*flight
}

type clientEntry struct {
	once sync.Once
	rc   *repoClient
	err  error
}

func newSession(ctx context.Context, c *Copier, jobs []*parsedJob, plan bool) *session {
	s := &session{ctx: ctx, c: c, plan: plan, blobSem: make(chan struct{}, c.jobs),
		mountSem:  make(chan struct{}, mountJobs(c.jobs)),
		mountable: map[string][]string{}, clients: map[string]*clientEntry{}, flights: map[string]*flight{}}
	sets := map[string]map[string]bool{}
	add := func(host, repo string) {
		k := canonicalHost(host)
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][repo] = true
	}
	for _, j := range jobs {
		add(j.dstHost, j.dstRepo)
		if canonicalHost(j.srcHost) == canonicalHost(j.dstHost) {
			add(j.srcHost, j.srcRepo)
		}
	}
	for k, set := range sets {
		for r := range set {
			s.mountable[k] = append(s.mountable[k], r)
		}
		sort.Strings(s.mountable[k])
	}
	return s
}

// fail wraps err as an *Error, saying so when the operation's deadline
// is what ended it.
func (s *session) fail(ref string, step Step, dgst string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if s.ctx.Err() != nil {
		if cause := context.Cause(s.ctx); cause != nil && errors.Is(cause, ErrDeadline) && !errors.Is(err, ErrDeadline) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
	}
	return &Error{Ref: ref, Step: step, Digest: dgst, Err: err}
}

// client returns the client of a repository. push asks for push access
// and pull access to the repositories this one may mount from.
func (s *session) client(host, repo string, scopes []string) (*repoClient, error) {
	if scopes == nil {
		scopes = []string{"repository:" + repo + ":" + transport.PullScope}
	}
	key := canonicalHost(host) + "/" + repo + " " + strings.Join(scopes, " ")
	s.mu.Lock()
	e, ok := s.clients[key]
	if !ok {
		e = &clientEntry{}
		s.clients[key] = e
	}
	s.mu.Unlock()
	e.once.Do(func() {
		e.rc, e.err = s.newClient(host, repo, scopes)
	})
	return e.rc, e.err
}

func (s *session) pushScopes(host, repo string) []string {
	scopes := []string{"repository:" + repo + ":" + transport.PushScope}
	for _, r := range s.mountable[canonicalHost(host)] {
		if r != repo {
			scopes = append(scopes, "repository:"+r+":"+transport.PullScope)
		}
	}
	return scopes
}

func (s *session) newClient(host, repo string, scopes []string) (*repoClient, error) {
	et, err := s.c.transport(host)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rt, err := authTransport(s.ctx, host, et, scopes)
	if err != nil {
		return nil, err
	}
	s.c.log.Debug("connected", "registry", host, "repository", repo, "scopes", len(scopes), "duration", time.Since(start))
	hc := &http.Client{Transport: rt, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s://%s%s: %w", req.URL.Scheme, req.URL.Host, req.URL.Path, ErrPlainHTTP)
		}
		return nil
	}}
	return &repoClient{host: host, repo: repo, hc: hc}, nil
}

// counters are a job's blob statistics, updated by parallel transfers.
type counters struct {
	copied, mounted, existing, manifests atomic.Int64
	bytes                                atomic.Int64
}

func (s *session) copyJob(ctx context.Context, j *parsedJob, res *Result) {
	sc, err := s.client(j.srcHost, j.srcRepo, nil)
	if err != nil {
		res.Err = s.fail(j.srcString, StepConnect, "", err)
		return
	}
	m, err := sc.getManifest(ctx, j.src.Identifier())
	if err != nil {
		res.Err = s.fail(j.srcString, StepSourceManifest, "", err)
		return
	}
	res.Digest, res.MediaType = m.digest.String(), m.mediaType
	scopes := s.pushScopes(j.dstHost, j.dstRepo)
	if s.plan {
		scopes = nil
	}
	dc, err := s.client(j.dstHost, j.dstRepo, scopes)
	if err != nil {
		res.Err = s.fail(j.dstName, StepConnect, "", err)
		return
	}
	cur, err := dc.headManifest(ctx, j.dst.Identifier())
	if err != nil {
		res.Err = s.fail(j.dstName, StepTargetManifest, "", err)
		return
	}
	if cur == m.digest {
		s.c.log.Info("target is up to date", "target", j.dstName, "digest", m.digest)
		return
	}
	res.Changed = true
	if s.plan {
		return
	}
	var cnt counters
	start := time.Now()
	err = s.copyContent(ctx, sc, dc, m, &cnt, 0)
	res.BlobsCopied, res.BlobsMounted, res.BlobsExisting = int(cnt.copied.Load()), int(cnt.mounted.Load()), int(cnt.existing.Load())
	res.BytesCopied, res.Manifests = cnt.bytes.Load(), int(cnt.manifests.Load())
	if err != nil {
		res.Err = err
		return
	}
	if err := dc.putManifest(ctx, j.dst.Identifier(), m.raw, m.mediaType, m.digest); err != nil {
		res.Err = s.fail(j.dstName, StepPutManifest, m.digest.String(), err)
		return
	}
	s.c.log.Info("copied image", "source", j.srcString, "target", j.dstName, "digest", m.digest,
		"copied", res.BlobsCopied, "mounted", res.BlobsMounted, "existing", res.BlobsExisting,
		"bytes", res.BytesCopied, "duration", time.Since(start).Round(time.Millisecond))
}

// copyContent places everything m refers to in the target repository:
// the child manifests of an index (by digest, each with its blobs), or the
// blobs of an image. The caller writes m itself.
func (s *session) copyContent(ctx context.Context, sc, dc *repoClient, m *manifest, cnt *counters, depth int) error {
	if depth > 4 {
		return s.fail(dc.ref(m.digest.String()), StepSourceManifest, "", fmt.Errorf("%w: indexes nested too deep", ErrUnsupportedManifest))
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, child := range m.children {
		g.Go(func() error {
			id := child.Digest.String()
			// Once per repository: jobs copying the same index share its
			// children.
			_, _, err := s.once(gctx, "manifest "+canonicalHost(dc.host)+"/"+dc.repo+"@"+id, func() (string, error) {
				return "", s.copyChild(gctx, sc, dc, child, cnt, depth)
			})
			return err
		})
	}
	for _, b := range m.blobs {
		if b.foreign() {
			continue
		}
		g.Go(func() error { return s.ensureBlob(gctx, sc, dc, b, cnt) })
	}
	return g.Wait()
}

// copyChild writes a child manifest of an index, by digest, with what it
// refers to, unless the target has it.
func (s *session) copyChild(ctx context.Context, sc, dc *repoClient, child descriptor, cnt *counters, depth int) error {
	id := child.Digest.String()
	cur, err := dc.headManifest(ctx, id)
	if err != nil {
		return s.fail(dc.ref(id), StepTargetManifest, "", err)
	}
	if cur == child.Digest {
		return nil
	}
	cm, err := sc.getManifest(ctx, id)
	if err != nil {
		return s.fail(sc.ref(id), StepSourceManifest, "", err)
	}
	if err := s.copyContent(ctx, sc, dc, cm, cnt, depth+1); err != nil {
		return err
	}
	if err := dc.putManifest(ctx, id, cm.raw, cm.mediaType, cm.digest); err != nil {
		return s.fail(dc.ref(id), StepPutManifest, id, err)
	}
	cnt.manifests.Add(1)
	return nil
}
