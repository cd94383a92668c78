package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/publish/distribution"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// ChangeLabel is the image label the build puts on every image built for a
// change (upstream's org.zuul-ci.change). Promote reads it to recognise an
// image it promoted before, once the staging tag is gone.
const ChangeLabel = "org.zuul-ci.change"

// DefaultStaleAge is how old a staging tag must be for the sweep to delete
// it: upstream's 24 hours.
const DefaultStaleAge = 24 * time.Hour

// PromoteSpec is what docker_image_promote does.
type PromoteSpec struct {
	Images      []zuul.Image
	Target      Target
	Credentials Credentials
	Zuul        zuul.Vars
	// Sweep deletes staging tags (change_<N>_..., <pipeline>_...) older
	// than StaleAge from every promoted repository.
	Sweep    bool
	StaleAge time.Duration
	// Pipelines are more pipelines whose <pipeline>_ tags the sweep
	// deletes, besides zuul.pipeline's.
	Pipelines []string
	// Jobs bounds how many images are worked on at once (default
	// DefaultJobs).
	Jobs int
}

// Promotion is one final tag and what happened to it.
type Promotion struct {
	// Repository is the image's repository as given in docker_images.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// StagingTag is the tag the image was staged under.
	StagingTag string `json:"staging_tag"`
	// Reference is the final reference, docker.io/myorg/app:latest.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// PreviousDigest is what the tag pointed to before; empty if it did
	// not exist.
	PreviousDigest string `json:"previous_digest"`
	// Changed is true when the tag was (or, in check mode, would be) moved.
	Changed bool `json:"changed"`
	// AlreadyPromoted is true when the staging tag was already gone and
	// the final tag held an image built for this change: an earlier,
	// interrupted promote did the work.
	AlreadyPromoted bool `json:"already_promoted"`
}

// Deletion is one tag promote deleted, or would, or could not.
type Deletion struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Reference  string `json:"reference"`
	Digest     string `json:"digest,omitempty"`
	// Reason is "promoted" for the staging tag of a promoted image,
	// "stale" for a staging tag older than the sweep's limit.
	Reason string `json:"reason"`
	// AgeSeconds is the stale tag's age, from Docker Hub's last_updated or
	// the image's creation time.
	AgeSeconds int64 `json:"age_seconds,omitempty"`
	// Deleted is false in check mode, and when the registry cannot delete
	// a single tag (a warning says so).
	Deleted bool `json:"deleted"`
}

// PromoteResult is what Promote did.
type PromoteResult struct {
	Changed  bool
	Promoted []Promotion
	Deleted  []Deletion
	Warnings []string
	// Before and After describe every tag touched: "<reference> -> <digest>".
	Before, After string
}

// Promote moves every image's final tags to the manifest staged under its
// staging tag, then deletes the staging tags, then sweeps stale staging
// tags.
//
// The order of operations makes an interrupted promote safe to run again:
//
//  1. Read everything, write nothing: every staging tag is fetched (its
//     exact manifest bytes), every final tag's current digest is read, the
//     credentials' push access is checked. Any missing staging tag fails
//     the whole promote here, with nothing changed.
//  2. PUT the staging manifest bytes under every final tag (no blob moves;
//     the digest is the staging tag's).
//  3. Only when every PUT succeeded, delete the staging tags.
//  4. Sweep.
//
// A staging tag can thus be gone only if its final tag was put before. A
// re-run that finds a staging tag missing checks the final tag instead: if
// its image carries the label org.zuul-ci.change=<zuul.change>, which the
// build puts on every image built for a change, the earlier run promoted it,
// and the tag is reported as already promoted (changed: false). Otherwise
// the staging tag was never uploaded, and promote fails before changing
// anything. Without a change (a pipeline staging tag) there is no label to
// recognise, so a re-run after the staging tags were deleted fails and says
// why.
func Promote(ctx context.Context, spec PromoteSpec, opts ...Option) (*PromoteResult, error) {
	o := newOptions(opts)
	p, err := newPromoter(spec, o)
	if err != nil {
		return nil, err
	}
	return p.run(ctx)
}

type promoter struct {
	spec      PromoteSpec
	o         options
	t         *target
	pipelines []string
	images    []*imagePlan
	reg       *distribution.Registry
	hub       *dockerhub.Client

	mu  sync.Mutex
	res PromoteResult
}

type imagePlan struct {
	index int
	img   zuul.Image
	repo  string // in the target registry
	r     *distribution.Repository
	// listing is Docker Hub's tag listing, by name (Docker Hub only).
	listing map[string]dockerhub.Tag
	tags    []*tagPlan
}

type tagPlan struct {
	tag, staging string
	manifest     *distribution.Manifest // the staged manifest; nil when already promoted
	previous     string                 // the final tag's digest before; "" if absent
	already      bool
	stagingGone  bool
	digest       string
	mediaType    string
}

func (p *promoter) warn(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Warnings = append(p.res.Warnings, fmt.Sprintf(format, args...))
}

func newPromoter(spec PromoteSpec, o options) (*promoter, error) {
	p := &promoter{spec: spec, o: o}
	if len(spec.Images) == 0 {
		return nil, errors.New("docker_images is empty: nothing to promote")
	}
	if err := spec.Credentials.check(); err != nil {
		return nil, err
	}
	t, err := spec.Target.resolve()
	if err != nil {
		return nil, err
	}
	p.t = t
	if spec.Jobs <= 0 {
		p.spec.Jobs = DefaultJobs
	}
	if spec.Sweep && spec.StaleAge <= 0 {
		return nil, fmt.Errorf("the stale tag age must be positive, got %s", spec.StaleAge)
	}
	p.pipelines = append([]string{spec.Zuul.Pipeline}, spec.Pipelines...)
	pattern, warning, err := spec.Credentials.restriction()
	if err != nil {
		return nil, err
	}
	if warning != "" {
		p.warn("%s", warning)
	}
	var errs []error
	owner := map[string]int{}
	for i, img := range spec.Images {
		repo, where, err := t.imageRepository(pattern, i, img)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ip := &imagePlan{index: i, img: img, repo: repo}
		for _, tag := range img.Tags {
			if j, dup := owner[repo+":"+tag]; dup {
				errs = append(errs, fmt.Errorf("%s: tag %q is also promoted by docker_images[%d]", where, tag, j))
				continue
			}
			owner[repo+":"+tag] = i
			if zuul.IsStagingTag(tag, p.pipelines...) {
				errs = append(errs, fmt.Errorf("%s: tag %q has the form of a staging tag, which the sweep deletes; choose another tag", where, tag))
				continue
			}
			staging, err := spec.Zuul.StagingTag(tag)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			ip.tags = append(ip.tags, &tagPlan{tag: tag, staging: staging})
		}
		p.images = append(p.images, ip)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	return p, nil
}

func (p *promoter) connect() error {
	rt := p.o.transport
	if rt == nil {
		base, err := baseTransport(p.t.ca)
		if err != nil {
			return err
		}
		if rt, err = retrying(base, p.o); err != nil {
			return err
		}
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: p.spec.Credentials.Username, Password: p.spec.Credentials.Password})
	var err error
	if p.reg, err = distribution.New(p.t.host, distribution.WithTransport(rt), distribution.WithAuth(auth), distribution.WithLogger(p.o.log)); err != nil {
		return err
	}
	if p.t.hub {
		if p.hub, err = dockerhub.New(p.spec.Credentials.Username, p.spec.Credentials.Password,
			dockerhub.WithURL(p.t.hubURL), dockerhub.WithTransport(rt), dockerhub.WithLogger(p.o.log)); err != nil {
			return err
		}
	}
	return nil
}

func (p *promoter) run(ctx context.Context) (*PromoteResult, error) {
	if err := p.connect(); err != nil {
		return nil, err
	}
	if p.hub != nil {
		if err := p.hub.Login(ctx); err != nil {
			return nil, fmt.Errorf("nothing was promoted: %w", err)
		}
	}
	if err := p.resolve(ctx); err != nil {
		return nil, fmt.Errorf("nothing was promoted: %w", err)
	}
	p.collect()
	if !p.o.check {
		if err := p.put(ctx); err != nil {
			return nil, err
		}
		p.deleteStaging(ctx)
	}
	if p.spec.Sweep {
		p.sweep(ctx)
	}
	p.finish()
	return &p.res, nil
}

// each runs f for every image, at most Jobs at once, and joins the errors.
func (p *promoter) each(ctx context.Context, f func(ctx context.Context, ip *imagePlan) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(p.spec.Jobs)
	var mu sync.Mutex
	var errs []error
	for _, ip := range p.images {
		g.Go(func() error {
			if err := f(ctx, ip); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// resolve is phase 1: read everything, write nothing.
func (p *promoter) resolve(ctx context.Context) error {
	var names []string
	for _, ip := range p.images {
		names = append(names, ip.repo)
	}
	repos, err := p.reg.Repositories(ctx, names, true)
	if errors.Is(err, distribution.ErrDenied) {
		return fmt.Errorf("docker_credentials (%s) were refused by %s: %w", p.spec.Credentials.Username, p.t.host, err)
	}
	if err != nil {
		return fmt.Errorf("reaching the registry %s at %s: %w", p.t.name, p.t.host, err)
	}
	for _, ip := range p.images {
		ip.r = repos[ip.repo]
	}
	return p.each(ctx, p.resolveImage)
}

func (p *promoter) resolveImage(ctx context.Context, ip *imagePlan) error {
	where := fmt.Sprintf("docker_images[%d] (%s)", ip.index, ip.img.Repository)
	if granted, known := ip.r.PushGranted(); known && !granted {
		return fmt.Errorf("%s: docker_credentials (%s) may not push to %s", where, p.spec.Credentials.Username, p.t.name+"/"+ip.repo)
	} else if !known {
		if err := ip.r.CheckPush(ctx); err != nil {
			return fmt.Errorf("%s: docker_credentials (%s) may not push: %w", where, p.spec.Credentials.Username, err)
		}
	}
	if p.hub != nil {
		tags, err := p.hub.Tags(ctx, ip.repo)
		if err != nil && !errors.Is(err, dockerhub.ErrNotFound) {
			return fmt.Errorf("%s: %w", where, err)
		}
		ip.listing = map[string]dockerhub.Tag{}
		for _, t := range tags {
			ip.listing[t.Name] = t
		}
	}
	fetched := map[string]*distribution.Manifest{} // by digest
	var errs []error
	for _, tp := range ip.tags {
		if err := p.resolveTag(ctx, ip, tp, fetched); err != nil {
			errs = append(errs, fmt.Errorf("%s, tag %s: %w", where, tp.tag, err))
		}
	}
	return errors.Join(errs...)
}

func (p *promoter) resolveTag(ctx context.Context, ip *imagePlan, tp *tagPlan, fetched map[string]*distribution.Manifest) error {
	// The staged manifest: reuse the bytes when Docker Hub's listing says
	// the staging tag points to a digest already fetched (the tags of one
	// image are staged from one build).
	if lt, ok := ip.listing[tp.staging]; ok && fetched[lt.Digest] != nil {
		tp.manifest = fetched[lt.Digest]
	} else {
		m, err := ip.r.Get(ctx, tp.staging)
		switch {
		case err == nil:
			tp.manifest = m
			fetched[m.Digest] = m
		case errors.Is(err, distribution.ErrNotFound):
			return p.recover(ctx, ip, tp)
		default:
			return err
		}
	}
	tp.digest, tp.mediaType = tp.manifest.Digest, tp.manifest.MediaType
	if ip.listing != nil {
		tp.previous = ip.listing[tp.tag].Digest
		return nil
	}
	d, err := ip.r.Head(ctx, tp.tag)
	switch {
	case err == nil:
		tp.previous = d.Digest
	case errors.Is(err, distribution.ErrNotFound):
	default:
		return err
	}
	return nil
}

// recover handles a missing staging tag: fine if the final tag already
// holds an image built for this change (an interrupted promote), an error
// otherwise.
func (p *promoter) recover(ctx context.Context, ip *imagePlan, tp *tagPlan) error {
	staging := p.t.ref(ip.repo, tp.staging)
	final := p.t.ref(ip.repo, tp.tag)
	missing := fmt.Sprintf("staging tag %s does not exist (docker_image_upload stages it in the gate: did the upload job run for this change?)", staging)
	if p.spec.Zuul.Change == "" {
		return fmt.Errorf("%s; without zuul.change an earlier promote cannot be recognised from %s", missing, final)
	}
	m, err := ip.r.Get(ctx, tp.tag)
	if errors.Is(err, distribution.ErrNotFound) {
		return fmt.Errorf("%s, and %s does not exist either", missing, final)
	}
	if err != nil {
		return err
	}
	cfg, err := imageConfig(ctx, ip.r, m)
	if err != nil {
		return fmt.Errorf("%s; reading %s to recognise an earlier promote: %w", missing, final, err)
	}
	if got := cfg.Config.Labels[ChangeLabel]; got != p.spec.Zuul.Change {
		label := "no " + ChangeLabel + " label"
		if got != "" {
			label = fmt.Sprintf("%s=%s", ChangeLabel, got)
		}
		return fmt.Errorf("%s, and %s (%s) carries %s, not change %s: it was not promoted from this change", missing, final, m.Digest, label, p.spec.Zuul.Change)
	}
	tp.already, tp.stagingGone = true, true
	tp.digest, tp.mediaType, tp.previous = m.Digest, m.MediaType, m.Digest
	return nil
}

// config is the part of an image configuration promote reads.
type config struct {
	Created time.Time `json:"created"`
	Config  struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
}

// imageConfig reads the configuration of the image m, or of the first
// platform image of the index m (attestation manifests, platform
// unknown/unknown, are skipped).
func imageConfig(ctx context.Context, r *distribution.Repository, m *distribution.Manifest) (*config, error) {
	for depth := 0; depth < 2; depth++ {
		var doc struct {
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
			Manifests []struct {
				Digest   string `json:"digest"`
				Platform *struct {
					Architecture string `json:"architecture"`
					OS           string `json:"os"`
				} `json:"platform"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(m.Body, &doc); err != nil {
			return nil, fmt.Errorf("decoding manifest %s: %w", m.Digest, err)
		}
		if !distribution.IsIndex(m.MediaType) {
			if doc.Config.Digest == "" {
				return nil, fmt.Errorf("manifest %s has no config", m.Digest)
			}
			b, err := r.Blob(ctx, doc.Config.Digest)
			if err != nil {
				return nil, err
			}
			var c config
			if err := json.Unmarshal(b, &c); err != nil {
				return nil, fmt.Errorf("decoding config %s: %w", doc.Config.Digest, err)
			}
			return &c, nil
		}
		child := ""
		for _, d := range doc.Manifests {
			if d.Platform == nil || d.Platform.OS != "unknown" {
				child = d.Digest
				break
			}
		}
		if child == "" {
			return nil, fmt.Errorf("index %s has no platform image", m.Digest)
		}
		next, err := r.Get(ctx, child)
		if err != nil {
			return nil, err
		}
		m = next
	}
	return nil, fmt.Errorf("index %s nests indexes", m.Digest)
}

// collect records the plan in the result, before anything is written.
func (p *promoter) collect() {
	for _, ip := range p.images {
		for _, tp := range ip.tags {
			p.res.Promoted = append(p.res.Promoted, Promotion{
				Repository: ip.img.Repository, Tag: tp.tag, StagingTag: tp.staging,
				Reference: p.t.ref(ip.repo, tp.tag), Digest: tp.digest, MediaType: tp.mediaType,
				PreviousDigest: tp.previous, Changed: tp.previous != tp.digest, AlreadyPromoted: tp.already,
			})
			if !tp.stagingGone {
				p.res.Deleted = append(p.res.Deleted, Deletion{
					Repository: ip.img.Repository, Tag: tp.staging, Reference: p.t.ref(ip.repo, tp.staging),
					Digest: tp.digest, Reason: "promoted",
				})
			}
		}
	}
}

// put is phase 2: every final tag gets the staged manifest's bytes.
func (p *promoter) put(ctx context.Context) error {
	err := p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		for _, tp := range ip.tags {
			if tp.manifest == nil || tp.previous == tp.digest {
				continue
			}
			if err := ip.r.Put(ctx, tp.tag, tp.manifest); err != nil {
				return fmt.Errorf("docker_images[%d] (%s), tag %s: %w", ip.index, ip.img.Repository, tp.tag, err)
			}
			p.o.log.Info("promoted", "reference", p.t.ref(ip.repo, tp.tag), "digest", tp.digest)
		}
		return nil
	})
	if err != nil {
		// Staging tags are all still there: running promote again
		// finishes the job.
		return fmt.Errorf("promoting (no staging tag was deleted; run the promote again to finish): %w", err)
	}
	return nil
}

// deleteStaging is phase 3. Failures are warnings: the images are
// promoted, and the sweep removes what is left within a day.
func (p *promoter) deleteStaging(ctx context.Context) {
	type key struct{ repo, tag string }
	done := map[key]bool{}
	var mu sync.Mutex
	_ = p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		for _, tp := range ip.tags {
			if tp.stagingGone {
				continue
			}
			if p.deleteTag(ctx, ip, tp.staging, "promoted") {
				mu.Lock()
				done[key{ip.img.Repository, tp.staging}] = true
				mu.Unlock()
			}
		}
		return nil
	})
	for i := range p.res.Deleted {
		d := &p.res.Deleted[i]
		d.Deleted = done[key{d.Repository, d.Tag}]
	}
}

// deleteTag deletes one tag through Docker Hub's web API or the registry's
// DELETE, and says whether it is gone. A tag already gone counts as
// deleted. A registry that cannot delete a single tag gets a warning:
// deleting the manifest by digest instead would take every other tag of it
// along, the promoted one included.
func (p *promoter) deleteTag(ctx context.Context, ip *imagePlan, tag, why string) bool {
	ref := p.t.ref(ip.repo, tag)
	var err error
	if p.hub != nil {
		err = p.hub.DeleteTag(ctx, ip.repo, tag)
		if errors.Is(err, dockerhub.ErrNotFound) {
			err = nil
		}
	} else {
		err = ip.r.Delete(ctx, tag)
		if errors.Is(err, distribution.ErrNotFound) {
			err = nil
		}
	}
	switch {
	case err == nil:
		p.o.log.Info("deleted tag", "reference", ref, "reason", why)
		return true
	case errors.Is(err, distribution.ErrUnsupported):
		p.warn("%s was left in place: the registry %s cannot delete a single tag (%v); delete it by hand "+
			"(deleting its manifest by digest would also delete every other tag of that manifest)", ref, p.t.host, err)
	default:
		p.warn("%s (%s) could not be deleted: %v", ref, why, err)
	}
	return false
}

// sweep is phase 4: staging tags older than the limit go.
func (p *promoter) sweep(ctx context.Context) {
	now := p.o.now()
	own := map[string]bool{} // tags this run promotes or deletes, per repository
	for _, ip := range p.images {
		for _, tp := range ip.tags {
			own[ip.repo+":"+tp.tag] = true
			own[ip.repo+":"+tp.staging] = true
		}
	}
	var mu sync.Mutex
	var found []Deletion
	_ = p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		type cand struct {
			tag, digest string
			age         time.Duration
		}
		var cands []cand
		if p.hub != nil {
			for _, t := range ip.listing {
				if own[ip.repo+":"+t.Name] || !zuul.IsStagingTag(t.Name, p.pipelines...) {
					continue
				}
				if t.LastUpdated.IsZero() {
					p.warn("%s: Docker Hub gives no last_updated time; the sweep leaves it", p.t.ref(ip.repo, t.Name))
					continue
				}
				cands = append(cands, cand{t.Name, t.Digest, now.Sub(t.LastUpdated)})
			}
		} else {
			tags, err := ip.r.Tags(ctx)
			if err != nil {
				p.warn("sweeping stale staging tags of %s: %v", p.t.name+"/"+ip.repo, err)
				return nil
			}
			for _, t := range tags {
				if own[ip.repo+":"+t] || !zuul.IsStagingTag(t, p.pipelines...) {
					continue
				}
				created, digest, err := p.created(ctx, ip.r, t)
				if err != nil {
					p.warn("%s: the sweep cannot tell its age: %v", p.t.ref(ip.repo, t), err)
					continue
				}
				cands = append(cands, cand{t, digest, now.Sub(created)})
			}
		}
		for _, c := range cands {
			if c.age <= p.spec.StaleAge {
				continue
			}
			d := Deletion{Repository: ip.img.Repository, Tag: c.tag, Reference: p.t.ref(ip.repo, c.tag),
				Digest: c.digest, Reason: "stale", AgeSeconds: int64(c.age / time.Second)}
			if !p.o.check {
				d.Deleted = p.deleteTag(ctx, ip, c.tag, "stale")
			}
			mu.Lock()
			found = append(found, d)
			mu.Unlock()
		}
		return nil
	})
	sort.Slice(found, func(i, j int) bool { return found[i].Reference < found[j].Reference })
	p.res.Deleted = append(p.res.Deleted, found...)
}

// minCreated is the earliest creation time the sweep believes: images
// built reproducibly carry the epoch (or SOURCE_DATE_EPOCH), which says
// nothing of when the tag was pushed.
var minCreated = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// created is a tag's age reference on a registry without tag timestamps:
// the creation time in its image's configuration.
func (p *promoter) created(ctx context.Context, r *distribution.Repository, tag string) (time.Time, string, error) {
	m, err := r.Get(ctx, tag)
	if err != nil {
		return time.Time{}, "", err
	}
	cfg, err := imageConfig(ctx, r, m)
	if err != nil {
		return time.Time{}, m.Digest, err
	}
	if cfg.Created.Before(minCreated) {
		return time.Time{}, m.Digest, fmt.Errorf("the image's creation time %s is not a real time (a reproducible build?)", cfg.Created.Format(time.RFC3339))
	}
	return cfg.Created, m.Digest, nil
}

// finish computes changed and the diff.
func (p *promoter) finish() {
	var before, after []string
	for _, pr := range p.res.Promoted {
		if pr.Changed {
			p.res.Changed = true
		}
		before = append(before, fmt.Sprintf("%s -> %s", pr.Reference, orAbsent(pr.PreviousDigest)))
		after = append(after, fmt.Sprintf("%s -> %s", pr.Reference, pr.Digest))
	}
	for _, d := range p.res.Deleted {
		if d.Deleted || p.o.check {
			p.res.Changed = true
		}
		before = append(before, fmt.Sprintf("%s -> %s", d.Reference, orAbsent(d.Digest)))
		if d.Deleted || p.o.check {
			after = append(after, fmt.Sprintf("%s -> (deleted, %s)", d.Reference, d.Reason))
		} else {
			after = append(after, fmt.Sprintf("%s -> %s (not deleted)", d.Reference, orAbsent(d.Digest)))
		}
	}
	p.res.Before, p.res.After = joinLines(before), joinLines(after)
	sort.Slice(p.res.Promoted, func(i, j int) bool { return p.res.Promoted[i].Reference < p.res.Promoted[j].Reference })
}

// joinLines joins lines for a diff, each ending in a newline.
func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func orAbsent(d string) string {
	if d == "" {
		return "(absent)"
	}
	return d
}

// retrying wraps base in imagegate's one retry policy, package transfer's:
// network errors and 408/429/5xx retried with backoff, Retry-After honoured
// up to a cap, streamed bodies never buffered.
func retrying(base *http.Transport, o options) (http.RoundTripper, error) {
	return transfer.NewTransport(base, transfer.DefaultRetryPolicy(), o.log)
}
