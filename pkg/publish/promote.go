package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// ChangeLabel is the image label the build puts on every image built for a
// change (upstream's org.zuul-ci.change). Promote reads it to recognise an
// image it promoted before, once the staging tag is gone.
const ChangeLabel = "org.zuul-ci.change"

// PromoteSpec is what docker_image_promote does; its fields are the
// module's parameters.
type PromoteSpec struct {
	Images      []zuul.Image `ansible:"docker_images,required"`
	Credentials Credentials  `ansible:"docker_credentials,required"`
	Zuul        zuul.Vars    `ansible:"zuul,raw,required"`
	Target
	// HubURL is Docker Hub's web API, for Docker Hub only (empty:
	// https://hub.docker.com).
	HubURL string `ansible:"docker_hub_url"`
	// Sweep deletes staging tags (change_<N>_..., <pipeline>_...) older
	// than StaleAge from every promoted repository; upstream's 24 hours
	// by default.
	Sweep    bool          `ansible:"stale_tag_sweep" default:"true"`
	StaleAge time.Duration `ansible:"stale_tag_age,seconds" default:"86400"`
	// Pipelines are more pipelines whose <pipeline>_ tags the sweep
	// deletes, besides zuul.pipeline's.
	Pipelines []string `ansible:"stale_tag_pipelines"`
	// Jobs bounds how many images are worked on at once.
	Jobs int `ansible:"jobs" default:"8"`
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
	ansible.Outcome
	Promoted []Promotion `json:"promoted"`
	Deleted  []Deletion  `json:"deleted"`
	// Verified lists the images checked (WithVerification).
	Verified []Verified `json:"verified"`
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
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	p, err := newPromoter(spec, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	return p.run(ctx)
}

type promoter struct {
	spec      PromoteSpec
	o         options
	t         *target
	pipelines []string
	images    []*imagePlan
	client    *transfer.Client
	// api is the registry's web API for tags (Docker Hub's, quay's); nil
	// where tags are listed and deleted with the distribution API.
	api tagAPI
	// param and credName name the image list and the credentials in
	// messages: docker_images and docker_credentials, or the container
	// family's.
	param, credName string
	// upload names the module that stages the images.
	upload string
	// newAPI makes api once the client exists (the container family's
	// quay); nil keeps Docker Hub's for Docker Hub.
	newAPI func(*transfer.Client) (tagAPI, error)
	// clientOpts are more options of the registry client (the endpoint
	// of a web API's host).
	clientOpts []transfer.Option
	verifier   *verifier // nil: no checks (WithVerification)

	mu  sync.Mutex
	res PromoteResult
}

type imagePlan struct {
	index int
	img   zuul.Image
	repo  string // in the target registry
	r     *transfer.Repository
	// listing is the web API's tag listing, by name (nil without one).
	listing map[string]apiTag
	tags    []*tagPlan
}

type tagPlan struct {
	tag, staging string
	manifest     *transfer.Manifest // the staged manifest; nil when already promoted
	previous     string             // the final tag's digest before; "" if absent
	already      bool
	stagingGone  bool
	digest       string
	mediaType    string
}

func (p *promoter) warn(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Warn(format, args...)
}

func newPromoter(spec PromoteSpec, o options) (*promoter, error) {
	p := &promoter{spec: spec, o: o, res: PromoteResult{Promoted: []Promotion{}, Deleted: []Deletion{}, Verified: []Verified{}},
		param: "docker_images", credName: "docker_credentials", upload: "docker_image_upload"}
	if len(spec.Images) == 0 {
		return nil, errors.New("docker_images is empty: nothing to promote")
	}
	if err := spec.Credentials.check(); err != nil {
		return nil, err
	}
	if err := p.plan(nil); err != nil {
		return nil, err
	}
	return p, nil
}

// plan checks the spec and plans every image's tags; indices are the
// images' positions in the module's list (nil: their positions in
// spec.Images).
func (p *promoter) plan(indices []int) error {
	spec := p.spec
	if err := checkJobs(spec.Jobs); err != nil {
		return err
	}
	t, err := spec.Target.resolve(spec.HubURL)
	if err != nil {
		return err
	}
	p.t = t
	if spec.Sweep && spec.StaleAge <= 0 {
		return fmt.Errorf("the stale tag age must be positive, got %s", spec.StaleAge)
	}
	p.pipelines = append([]string{spec.Zuul.Pipeline}, spec.Pipelines...)
	pattern, warning, err := spec.Credentials.restriction()
	if err != nil {
		return err
	}
	if warning != "" {
		p.warn("%s", warning)
	}
	var errs []error
	owner := map[string]int{}
	for k, img := range spec.Images {
		i := k
		if indices != nil {
			i = indices[k]
		}
		repo, where, err := t.imageRepository(p.param, pattern, i, img)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ip := &imagePlan{index: i, img: img, repo: repo}
		for _, tag := range img.Tags {
			if j, dup := owner[repo+":"+tag]; dup {
				errs = append(errs, fmt.Errorf("%s: tag %q is also promoted by %s[%d]", where, tag, p.param, j))
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
	if p.verifier, err = newVerifier(p.o.verify, spec.Zuul, spec.Images); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	return nil
}

func (p *promoter) connect() error {
	var err error
	if p.client, err = p.t.client(p.spec.Credentials, p.o, p.clientOpts...); err != nil {
		return err
	}
	if p.newAPI != nil {
		p.api, err = p.newAPI(p.client)
		return err
	}
	if p.t.hub {
		rt, err := p.client.Transport(p.t.hubHost())
		if err != nil {
			return err
		}
		hub, err := dockerhub.New(p.spec.Credentials.Username, p.spec.Credentials.Password,
			dockerhub.WithURL(p.t.hubURL), dockerhub.WithTransport(rt), dockerhub.WithLogger(p.o.log))
		if err != nil {
			return err
		}
		p.api = hubAPI{hub}
	}
	return nil
}

func (p *promoter) run(ctx context.Context) (*PromoteResult, error) {
	return runPromoters(ctx, []*promoter{p}, p.o)
}

// runPromoters runs the phases of Promote over promoters of several
// registries at once: every registry is read before any is written, and
// every final tag of every registry is written before any staging tag is
// deleted.
func runPromoters(ctx context.Context, ps []*promoter, o options) (*PromoteResult, error) {
	for _, p := range ps {
		if err := p.connect(); err != nil {
			return nil, err
		}
		defer p.client.Close()
	}
	var errs []error
	for _, p := range ps {
		if p.api != nil {
			if err := p.api.check(ctx); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := p.resolve(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	for _, p := range ps {
		if p.verifier != nil {
			if err := p.verify(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	for _, p := range ps {
		p.collect()
	}
	if !o.check {
		for _, p := range ps {
			if err := p.put(ctx); err != nil {
				return nil, err
			}
		}
		for _, p := range ps {
			p.deleteStaging(ctx)
		}
	}
	res := &PromoteResult{Promoted: []Promotion{}, Deleted: []Deletion{}, Verified: []Verified{}}
	for _, p := range ps {
		if p.spec.Sweep {
			p.sweep(ctx)
		}
		res.Promoted = append(res.Promoted, p.res.Promoted...)
		res.Deleted = append(res.Deleted, p.res.Deleted...)
		res.Verified = append(res.Verified, p.res.Verified...)
		res.Warnings = append(res.Warnings, p.res.Warnings...)
	}
	finishPromote(res, o)
	return res, nil
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

// finishPromote computes changed and, when asked, the diff.
func finishPromote(res *PromoteResult, o options) {
	var before, after []string
	for _, pr := range res.Promoted {
		if pr.Changed {
			res.Changed = true
		}
		before = append(before, fmt.Sprintf("%s -> %s", pr.Reference, orAbsent(pr.PreviousDigest)))
		after = append(after, fmt.Sprintf("%s -> %s", pr.Reference, pr.Digest))
	}
	for _, d := range res.Deleted {
		if d.Deleted || o.check {
			res.Changed = true
		}
		before = append(before, fmt.Sprintf("%s -> %s", d.Reference, orAbsent(d.Digest)))
		if d.Deleted || o.check {
			after = append(after, fmt.Sprintf("%s -> (deleted, %s)", d.Reference, d.Reason))
		} else {
			after = append(after, fmt.Sprintf("%s -> %s (not deleted)", d.Reference, orAbsent(d.Digest)))
		}
	}
	if o.diff {
		res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after), BeforeHeader: "tags before", AfterHeader: "tags after"}}
	}
	sort.Slice(res.Promoted, func(i, j int) bool { return res.Promoted[i].Reference < res.Promoted[j].Reference })
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
