package transfer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/ocilayout"
)

// Job is one copy: Src and Dst are references, registry/repository:tag or
// registry/repository@digest, IPv6 hosts in brackets.
type Job struct {
	Src, Dst string
	// SrcLayout, when set, is an OCI image layout directory on this
	// machine (package ocilayout) to copy from instead of a registry: Src
	// is then a name of its index.json (org.opencontainers.image.ref.name)
	// or a digest.
	SrcLayout string
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
	// Referrers counts the manifests WithReferrers wrote beside Dst's
	// (signatures, attestations, their tags); they change the target
	// even when Changed is false.
	Referrers int
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
func (c *Client) Copy(ctx context.Context, src, dst string) (*Result, error) {
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
func (c *Client) CopyAll(ctx context.Context, jobs []Job) ([]Result, error) {
	return c.run(ctx, jobs, false)
}

// Plan resolves every job as CopyAll would, reading both sides, and
// reports which targets would change; it writes nothing (check mode).
func (c *Client) Plan(ctx context.Context, jobs []Job) ([]Result, error) {
	return c.run(ctx, jobs, true)
}

type parsedJob struct {
	src, dst           name.Reference
	srcHost, dstHost   string // as in URLs
	srcRepo, dstRepo   string
	srcString, dstName string
	// layout is the source layout (Job.SrcLayout), srcName the name in it.
	layout  *ocilayout.Layout
	srcName string
}

// ParseReference parses an image reference the way a Client does: a
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
		dst, err := ParseReference(j.Dst)
		if err != nil {
			return nil, err
		}
		var p *parsedJob
		if j.SrcLayout != "" {
			if p, err = parseLayoutJob(j, dst); err != nil {
				return nil, err
			}
		} else {
			src, err := ParseReference(j.Src)
			if err != nil {
				return nil, err
			}
			p = &parsedJob{src: src, dst: dst,
				srcHost: src.Context().RegistryStr(), dstHost: dst.Context().RegistryStr(),
				srcRepo: src.Context().RepositoryStr(), dstRepo: dst.Context().RepositoryStr(),
				srcString: src.String(), dstName: dst.String(), srcName: src.Identifier()}
		}
		k := oci.CanonicalHost(p.dstHost) + "/" + p.dstRepo + "|" + dst.Identifier()
		if prev, dup := seen[k]; dup {
			return nil, &Error{Ref: j.Dst, Step: StepParse,
				Err: fmt.Errorf("jobs %d and %d both write this target; copy to each target once", prev, i)}
		}
		seen[k] = i
		out[i] = p
	}
	return out, nil
}

func (c *Client) run(ctx context.Context, jobs []Job, plan bool) ([]Result, error) {
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

// Resolve returns the manifest a reference points at; an absent tag is an
// error matching ErrNotFound.
func (c *Client) Resolve(ctx context.Context, ref string) (*Descriptor, error) {
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
	m, err := rc.Get(ctx, r.Identifier())
	if err != nil {
		return nil, s.fail(r.String(), StepSourceManifest, "", err)
	}
	return &Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}, nil
}

// ListTags lists the tags of repository (registry/repository), every page.
func (c *Client) ListTags(ctx context.Context, repository string) ([]string, error) {
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
	tags, err := rc.Tags(ctx)
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
	c    *Client
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
	rc   *Repository
	err  error
}

func newSession(ctx context.Context, c *Client, jobs []*parsedJob, plan bool) *session {
	s := &session{ctx: ctx, c: c, plan: plan, blobSem: make(chan struct{}, c.jobs),
		mountSem:  make(chan struct{}, mountJobs(c.jobs)),
		mountable: map[string][]string{}, clients: map[string]*clientEntry{}, flights: map[string]*flight{}}
	sets := map[string]map[string]bool{}
	add := func(host, repo string) {
		k := oci.CanonicalHost(host)
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][repo] = true
	}
	for _, j := range jobs {
		add(j.dstHost, j.dstRepo)
		if oci.CanonicalHost(j.srcHost) == oci.CanonicalHost(j.dstHost) {
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
func (s *session) client(host, repo string, scopes []string) (*Repository, error) {
	if scopes == nil {
		scopes = []string{"repository:" + repo + ":" + transport.PullScope}
	}
	key := oci.CanonicalHost(host) + "/" + repo + " " + strings.Join(scopes, " ")
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
	for _, r := range s.mountable[oci.CanonicalHost(host)] {
		if r != repo {
			scopes = append(scopes, "repository:"+r+":"+transport.PullScope)
		}
	}
	return scopes
}

func (s *session) newClient(host, repo string, scopes []string) (*Repository, error) {
	et, err := s.c.transport(host)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rt, _, err := et.authorized(s.ctx, scopes)
	if err != nil {
		return nil, err
	}
	s.c.log.Debug("connected", "registry", host, "repository", repo, "scopes", len(scopes), "duration", time.Since(start))
	return s.c.newRepository(host, et.urlScheme(), repo, rt, nil), nil
}

// counters are a job's blob statistics, updated by parallel transfers.
type counters struct {
	copied, mounted, existing, manifests atomic.Int64
	bytes                                atomic.Int64
}

func (s *session) copyJob(ctx context.Context, j *parsedJob, res *Result) {
	var sc source = layoutSource{l: j.layout}
	if j.layout == nil {
		rc, err := s.client(j.srcHost, j.srcRepo, nil)
		if err != nil {
			res.Err = s.fail(j.srcString, StepConnect, "", err)
			return
		}
		sc = rc
	}
	m, err := sc.getManifest(ctx, j.srcName)
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
	cur, err := dc.headDigest(ctx, j.dst.Identifier())
	if err != nil {
		res.Err = s.fail(j.dstName, StepTargetManifest, "", err)
		return
	}
	if cur == m.digest {
		s.c.log.Info("target is up to date", "target", j.dstName, "digest", m.digest)
		s.carry(ctx, sc, dc, m, j, res)
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
	if err := dc.putManifest(ctx, j.dst.Identifier(), m); err != nil {
		res.Err = s.fail(j.dstName, StepPutManifest, m.digest.String(), err)
		return
	}
	s.carry(ctx, sc, dc, m, j, res)
	if res.Err != nil {
		return
	}
	s.c.log.Info("copied image", "source", j.srcString, "target", j.dstName, "digest", m.digest,
		"copied", res.BlobsCopied, "mounted", res.BlobsMounted, "existing", res.BlobsExisting,
		"bytes", res.BytesCopied, "duration", time.Since(start).Round(time.Millisecond))
}

// carry copies what refers to m (WithReferrers), from a registry source,
// outside Plan.
func (s *session) carry(ctx context.Context, sc source, dc *Repository, m *manifest, j *parsedJob, res *Result) {
	src, ok := sc.(*Repository)
	if !s.c.referrers || s.plan || !ok {
		return
	}
	n, err := s.carryReferrers(ctx, src, dc, m)
	res.Referrers = n
	if err != nil {
		res.Err = s.fail(j.dstName, StepReferrers, m.digest.String(), err)
		return
	}
	if n > 0 {
		s.c.log.Info("carried referrers", "source", j.srcString, "target", j.dstName, "digest", m.digest, "manifests", n)
	}
}

// copyContent places everything m refers to in the target repository:
// the child manifests of an index (by digest, each with its blobs), or the
// blobs of an image. The caller writes m itself.
func (s *session) copyContent(ctx context.Context, sc source, dc *Repository, m *manifest, cnt *counters, depth int) error {
	if depth > 4 {
		return s.fail(dc.Ref(m.digest.String()), StepSourceManifest, "", fmt.Errorf("%w: indexes nested too deep", ErrUnsupportedManifest))
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, child := range m.children {
		g.Go(func() error {
			id := child.Digest.String()
			// Once per repository: jobs copying the same index share its
			// children.
			_, _, err := s.once(gctx, "manifest "+oci.CanonicalHost(dc.host)+"/"+dc.name+"@"+id, func() (string, error) {
				return "", s.copyChild(gctx, sc, dc, child, cnt, depth)
			})
			return err
		})
	}
	for _, b := range m.blobs {
		if oci.IsNonDistributable(b.MediaType) {
			continue
		}
		g.Go(func() error { return s.ensureBlob(gctx, sc, dc, b, cnt) })
	}
	return g.Wait()
}

// copyChild writes a child manifest of an index, by digest, with what it
// refers to, unless the target has it.
func (s *session) copyChild(ctx context.Context, sc source, dc *Repository, child descriptor, cnt *counters, depth int) error {
	id := child.Digest.String()
	cur, err := dc.headDigest(ctx, id)
	if err != nil {
		return s.fail(dc.Ref(id), StepTargetManifest, "", err)
	}
	if cur == child.Digest {
		return nil
	}
	cm, err := sc.getManifest(ctx, id)
	if err != nil {
		return s.fail(sc.Ref(id), StepSourceManifest, "", err)
	}
	if err := s.copyContent(ctx, sc, dc, cm, cnt, depth+1); err != nil {
		return err
	}
	if err := dc.putManifest(ctx, id, cm); err != nil {
		return s.fail(dc.Ref(id), StepPutManifest, id, err)
	}
	cnt.manifests.Add(1)
	return nil
}
