package publish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// ContainerPromoteSpec is what container_image_promote does (upstream's
// promote-container-image role); its fields are the module's parameters.
type ContainerPromoteSpec struct {
	Images      []zuul.Image         `ansible:"container_images,required"`
	Credentials ContainerCredentials `ansible:"container_registry_credentials,required"`
	Zuul        zuul.Vars            `ansible:"zuul,raw,required"`
	// Method is tag (move the final tags to the change tags the upload
	// staged) or intermediate-registry (copy the gate build's images from
	// the intermediate registry).
	Method string `ansible:"promote_container_image_method" default:"tag" choices:"tag,intermediate-registry"`
	// API is Zuul's REST API of the tenant,
	// https://zuul.example.org/api/tenant/<tenant> (intermediate-registry).
	API string `ansible:"promote_container_image_api"`
	// Pipeline and Job name the gate build (intermediate-registry).
	Pipeline string `ansible:"promote_container_image_pipeline"`
	Job      string `ansible:"promote_container_image_job"`
	// Query replaces the builds query (intermediate-registry).
	Query string `ansible:"promote_container_image_query"`
	// APICert holds PEM certificates to trust for API.
	APICert string `ansible:"promote_container_image_api_cert"`
	// Sweep, StaleAge and Pipelines are the stale sweep of the tag method,
	// as docker_image_promote's.
	Sweep     bool          `ansible:"stale_tag_sweep" default:"true"`
	StaleAge  time.Duration `ansible:"stale_tag_age,seconds" default:"86400"`
	Pipelines []string      `ansible:"stale_tag_pipelines"`
	Jobs      int           `ansible:"jobs" default:"8"`
	// InsecureRegistries may be reached over plain HTTP, as
	// docker_image_promote's (Target.InsecureRegistries).
	InsecureRegistries []string `ansible:"insecure_registries"`
}

// ContainerPromotion is one final tag and what happened to it.
type ContainerPromotion struct {
	Promotion
	// Source is where the manifest came from: the staged reference (tag
	// method) or the artifact's intermediate registry reference.
	Source string `json:"source"`
}

// GateBuild is the build the intermediate-registry method promotes from.
type GateBuild struct {
	UUID     string `json:"uuid"`
	Job      string `json:"job_name"`
	Pipeline string `json:"pipeline"`
	Result   string `json:"result"`
	Start    string `json:"start_time"`
	// Found is how many builds the query returned.
	Found int `json:"found"`
}

// ContainerPromoteResult is what ContainerPromote did.
type ContainerPromoteResult struct {
	ansible.Outcome
	Method   string               `json:"method"`
	Build    *GateBuild           `json:"build"`
	Promoted []ContainerPromotion `json:"promoted"`
	Deleted  []Deletion           `json:"deleted"`
	// Verified lists the images checked (WithVerification).
	Verified []Verified `json:"verified"`
}

// ContainerPromote publishes the images of container_images.
//
// With the tag method it works as Promote, registry by registry of the
// images' registry fields (each with its container_registry_credentials
// entry), all registries read before any is written: staging tags are
// removed and stale ones swept through Docker Hub's web API, quay's tag
// API (api_token), or the distribution API's tag delete elsewhere; a
// registry that cannot delete one tag gets a warning, never a manifest
// delete.
//
// With the intermediate-registry method it asks Zuul's builds API for the
// change's builds of the gate job, takes the newest, and copies each
// image's artifact (metadata.type container_image, repository, tag) from
// the intermediate registry to the final tags, by the digest read first:
// every artifact is resolved and every target checked for push before
// anything is copied. No staging tag exists in the public registry.
func ContainerPromote(ctx context.Context, spec ContainerPromoteSpec, opts ...Option) (*ContainerPromoteResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := ansible.ApplyDefaults(&spec); err != nil {
		return nil, err
	}
	for _, c := range spec.Credentials {
		o.redact(c.Password)
		o.redact(c.APIToken)
	}
	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	if len(spec.Images) == 0 {
		return nil, errors.New("container_images is empty: nothing to promote")
	}
	if err := transfer.CheckInsecureRegistries(spec.InsecureRegistries); err != nil {
		return nil, fmt.Errorf("insecure_registries: %w", err)
	}
	res := &ContainerPromoteResult{Method: spec.Method, Promoted: []ContainerPromotion{}, Deleted: []Deletion{}, Verified: []Verified{}}
	var errs []error
	for i, im := range spec.Images {
		_, warning, err := spec.Credentials.For("container_images", i, im)
		if warning != "" && !contains(res.Warnings, warning) {
			res.Warn("%s", warning)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if vs := o.verify; vs.Key != "" {
		for _, r := range vs.Images {
			if !slices.ContainsFunc(spec.Images, func(i zuul.Image) bool { return i.Repository == r }) {
				errs = append(errs, fmt.Errorf("%s names %q, which is not a repository of container_images", vs.ImagesParam, r))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	switch spec.Method {
	case MethodTag:
		return promoteByTag(ctx, spec, o, res)
	case MethodIntermediateRegistry:
		return promoteFromIntermediate(ctx, spec, o, res)
	}
	return nil, fmt.Errorf("promote_container_image_method %q: must be tag or intermediate-registry", spec.Method)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// promoteByTag is the tag method: one promoter per registry.
func promoteByTag(ctx context.Context, spec ContainerPromoteSpec, o options, res *ContainerPromoteResult) (*ContainerPromoteResult, error) {
	var registries []string
	group := map[string][]int{}
	for i, im := range spec.Images {
		if _, ok := group[im.Registry]; !ok {
			registries = append(registries, im.Registry)
		}
		group[im.Registry] = append(group[im.Registry], i)
	}
	var ps []*promoter
	var errs []error
	for _, reg := range registries {
		c := spec.Credentials[reg]
		cred := fmt.Sprintf("container_registry_credentials[%q]", reg)
		var images []zuul.Image
		for _, i := range group[reg] {
			if _, err := containerImageTarget("container_images", i, spec.Images[i], c); err != nil {
				errs = append(errs, err)
			}
			images = append(images, spec.Images[i])
		}
		if c.Username == "" || c.Password == "" {
			errs = append(errs, fmt.Errorf("%s: username and password are required to promote (the account that may push to %s)", cred, reg))
			continue
		}
		typ := c.TypeOf(reg)
		ps1 := PromoteSpec{Images: images, Credentials: Credentials{Username: c.Username, Password: c.Password}, Zuul: spec.Zuul,
			Target: Target{Registry: reg, URL: c.RegistryURL, Cert: c.Cert, InsecureRegistries: spec.InsecureRegistries}, Sweep: spec.Sweep, StaleAge: spec.StaleAge,
			Pipelines: spec.Pipelines, Jobs: spec.Jobs}
		p := &promoter{spec: ps1, o: o, res: PromoteResult{Promoted: []Promotion{}, Deleted: []Deletion{}},
			param: "container_images", credName: cred, upload: "upload-container-image"}
		if len(o.verify.Images) > 0 {
			// The images checked that are in this registry; none, no checks.
			var mine []string
			for _, r := range o.verify.Images {
				if slices.ContainsFunc(images, func(i zuul.Image) bool { return i.Repository == r }) {
					mine = append(mine, r)
				}
			}
			if p.o.verify.Images = mine; len(mine) == 0 {
				p.o.verify = Verification{}
			}
		}
		switch typ {
		case RegistryDocker:
			if u, err := apiURL(reg, c, typ); err != nil {
				errs = append(errs, err)
				continue
			} else if c.APIURL != "" {
				p.spec.HubURL = u
			}
		case RegistryQuay:
			u, err := apiURL(reg, c, typ)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if c.APIToken == "" {
				errs = append(errs, fmt.Errorf("%s.api_token is not set: quay removes tags through its API, with the token of an application with the repo:write scope", cred))
				continue
			}
			if len(c.Cert) > 0 && hostOf(u) != "" {
				p.clientOpts = append(p.clientOpts, transfer.WithEndpoint(transfer.Endpoint{Host: hostOf(u), CA: []byte(c.Cert)}))
			}
			reg, c := reg, c
			p.newAPI = func(client *transfer.Client) (tagAPI, error) { return newQuayAPI(client, reg, c, o) }
		}
		if err := p.plan(group[reg]); err != nil {
			errs = append(errs, errors.Unwrap(err))
			continue
		}
		if typ == RegistryDocker && !p.t.hub {
			errs = append(errs, fmt.Errorf("%s.type is docker, but %s is not Docker Hub: use type generic (the distribution API's tag delete) or quay", cred, reg))
			continue
		}
		if typ == RegistryGeneric && p.t.hub {
			// Docker Hub refuses the distribution API's delete: its web
			// API it is, as upstream infers from the name.
			p.o.log.Debug("Docker Hub: tags are removed through its web API", "registry", reg)
		}
		ps = append(ps, p)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	pr, err := runPromoters(ctx, ps, o)
	if err != nil {
		return nil, err
	}
	res.Outcome = pr.Outcome
	for _, p := range pr.Promoted {
		src := ""
		if p.StagingTag != "" && !p.AlreadyPromoted {
			src = strings.TrimSuffix(p.Reference, ":"+p.Tag) + ":" + p.StagingTag
		}
		res.Promoted = append(res.Promoted, ContainerPromotion{Promotion: p, Source: src})
	}
	res.Deleted = pr.Deleted
	res.Verified = pr.Verified
	return res, nil
}

// irPlan is one final tag of the intermediate-registry method.
type irPlan struct {
	index    int
	img      zuul.Image
	tag      string
	t        *target
	repo     string // in the target registry
	src      string // the artifact's reference
	srcHost  string
	srcRepo  string
	digest   string
	media    string
	previous string
}

// promoteFromIntermediate is the intermediate-registry method.
func promoteFromIntermediate(ctx context.Context, spec ContainerPromoteSpec, o options, res *ContainerPromoteResult) (*ContainerPromoteResult, error) {
	query := spec.Query
	if spec.API == "" {
		return nil, errors.New("promote_container_image_api is required with the intermediate-registry method: give Zuul's API of the tenant, https://zuul.example.org/api/tenant/<tenant>")
	}
	if query == "" {
		var missing []string
		if spec.Zuul.Change == "" {
			missing = append(missing, "zuul.change")
		}
		if spec.Pipeline == "" {
			missing = append(missing, "promote_container_image_pipeline")
		}
		if spec.Job == "" {
			missing = append(missing, "promote_container_image_job")
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("the intermediate-registry method needs %s to find the gate build (or promote_container_image_query)", strings.Join(missing, ", "))
		}
		q := url.Values{}
		q.Set("change", spec.Zuul.Change)
		q.Set("patchset", spec.Zuul.Patchset)
		q.Set("pipeline", spec.Pipeline)
		q.Set("job_name", spec.Job)
		query = "change=" + q.Get("change") + "&patchset=" + q.Get("patchset") + "&pipeline=" + q.Get("pipeline") + "&job_name=" + q.Get("job_name")
	}
	apiU, err := url.Parse(strings.TrimRight(spec.API, "/"))
	if err != nil || apiU.Scheme != "https" || apiU.Host == "" || apiU.User != nil {
		return nil, fmt.Errorf("promote_container_image_api %q: must be https://<host>[:port]/api/tenant/<tenant> (TLS only, no credentials)", spec.API)
	}
	if spec.APICert != "" {
		if _, err := pki.CertPool([]byte(spec.APICert)); err != nil {
			return nil, fmt.Errorf("promote_container_image_api_cert: %w", err)
		}
	}
	if err := checkJobs(spec.Jobs); err != nil {
		return nil, err
	}
	// Every target checked before anything is read.
	var plans []*irPlan
	var errs []error
	for i, im := range spec.Images {
		c := spec.Credentials[im.Registry]
		if err := im.CheckTags("container_images", i); err != nil {
			errs = append(errs, err)
			continue
		}
		t, err := containerImageTarget("container_images", i, im, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		repo, err := t.repository(im.Repository)
		if err != nil {
			errs = append(errs, fmt.Errorf("container_images[%d] (%s): %w", i, im.Repository, err))
			continue
		}
		for _, tag := range im.Tags {
			plans = append(plans, &irPlan{index: i, img: im, tag: tag, t: t, repo: repo})
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}
	var eps endpoints
	if err := registryEndpoints(spec.Credentials, &eps); err != nil {
		return nil, err
	}
	if spec.APICert != "" {
		eps.add(transfer.Endpoint{Host: apiU.Host, CA: []byte(spec.APICert)})
	}
	// A promote from the intermediate registry carries the image's
	// signatures and attestations (a promote within a repository keeps
	// them: they are keyed by the digest the tag keeps).
	topts := append(eps.options(), transfer.WithLogger(o.log), transfer.WithJobs(spec.Jobs),
		transfer.WithInsecureRegistries(spec.InsecureRegistries...), transfer.WithReferrers())
	if o.wrap != nil {
		topts = append(topts, transfer.WithTransportWrapper(o.wrap))
	}
	client, err := transfer.New(topts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// The gate build.
	rt, err := client.Transport(apiU.Host)
	if err != nil {
		return nil, err
	}
	queryURL := spec.API + "/builds?" + query
	builds, err := zuul.QueryBuilds(ctx, &http.Client{Transport: rt, Timeout: 2 * time.Minute}, spec.API, query)
	if err != nil {
		return nil, fmt.Errorf("nothing was promoted: %w", err)
	}
	if len(builds) == 0 {
		return nil, fmt.Errorf("nothing was promoted: Zuul's builds API found no build for %s: did the gate job (promote_container_image_job) run for this change in promote_container_image_pipeline?", queryURL)
	}
	newest := 0
	for i := range builds {
		if builds[i].Start().After(builds[newest].Start()) {
			newest = i
		}
	}
	b := builds[newest]
	res.Build = &GateBuild{UUID: b.UUID, Job: b.JobName, Pipeline: b.Pipeline, Result: b.Result, Start: b.StartTime, Found: len(builds)}
	if len(builds) > 1 {
		o.log.Info("several builds found; promoting from the newest", "query", queryURL, "builds", len(builds), "uuid", b.UUID)
	}
	if b.Result != "SUCCESS" {
		return nil, fmt.Errorf("nothing was promoted: the newest build for %s, %s (%s of %s), has result %s, not SUCCESS: its images were not tested",
			queryURL, b.UUID, b.JobName, b.StartTime, orAbsent(b.Result))
	}
	artifacts := map[string]zuul.ContainerImage{}
	for _, a := range b.Artifacts {
		art := a.Artifact()
		ci, ok, err := art.ContainerImage()
		if err != nil {
			errs = append(errs, fmt.Errorf("build %s: %w", b.UUID, err))
			continue
		}
		if ok {
			artifacts[ci.Repository+":"+ci.Tag] = ci
		}
	}
	for _, pl := range plans {
		ci, ok := artifacts[pl.img.Repository+":"+pl.tag]
		if !ok {
			errs = append(errs, fmt.Errorf("container_images[%d] (%s), tag %s: build %s (%s) has no container_image artifact %s:%s: did it push this image to the intermediate registry?",
				pl.index, pl.img.Repository, pl.tag, b.UUID, b.JobName, pl.img.Repository, pl.tag))
			continue
		}
		ref, err := transfer.ParseReference(ci.Ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("container_images[%d] (%s), tag %s: artifact url docker://%s: %w", pl.index, pl.img.Repository, pl.tag, ci.Ref, err))
			continue
		}
		pl.src, pl.srcHost, pl.srcRepo = ci.Ref, ref.Context().RegistryStr(), ref.Context().RepositoryStr()
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was promoted: %w", errors.Join(errs...))
	}

	// Everything read: each artifact's digest, each target's push access
	// and current digest.
	if err := resolveIntermediate(ctx, client, spec, plans); err != nil {
		return nil, fmt.Errorf("nothing was promoted: %w", err)
	}
	if res.Verified, err = verifyIntermediate(ctx, client, spec, o, plans); err != nil {
		return nil, fmt.Errorf("nothing was promoted: %w", err)
	}
	var jobs []transfer.Job
	var todo []*irPlan
	for _, pl := range plans {
		if pl.previous == pl.digest {
			continue
		}
		todo = append(todo, pl)
		jobs = append(jobs, transfer.Job{Src: pl.srcHost + "/" + pl.srcRepo + "@" + pl.digest, Dst: pl.t.host + "/" + pl.repo + ":" + pl.tag})
	}
	if !o.check && len(jobs) > 0 {
		results, err := client.CopyAll(ctx, jobs)
		if err != nil {
			return nil, fmt.Errorf("copying from the intermediate registry (every tag copied points at the gate build's image; run the promote again to finish): %w", err)
		}
		for i, r := range results {
			if r.Digest != todo[i].digest {
				return nil, fmt.Errorf("%s: copied digest %s, expected %s", r.Dst, r.Digest, todo[i].digest)
			}
			o.log.Info("promoted", "reference", todo[i].t.ref(todo[i].repo, todo[i].tag), "digest", r.Digest)
		}
	}
	var before, after []string
	for _, pl := range plans {
		p := ContainerPromotion{Promotion: Promotion{Repository: pl.img.Repository, Tag: pl.tag, Reference: pl.t.ref(pl.repo, pl.tag),
			Digest: pl.digest, MediaType: pl.media, PreviousDigest: pl.previous, Changed: pl.previous != pl.digest}, Source: pl.src}
		if p.Changed {
			res.Changed = true
		}
		before = append(before, fmt.Sprintf("%s -> %s", p.Reference, orAbsent(pl.previous)))
		after = append(after, fmt.Sprintf("%s -> %s", p.Reference, pl.digest))
		res.Promoted = append(res.Promoted, p)
	}
	sort.Slice(res.Promoted, func(i, j int) bool { return res.Promoted[i].Reference < res.Promoted[j].Reference })
	if o.diff {
		res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after), BeforeHeader: "tags before", AfterHeader: "tags after"}}
	}
	return res, nil
}

// resolveIntermediate reads every artifact's manifest digest and every
// target's push access and current digest, all before anything is
// written; errors name each image and tag.
func resolveIntermediate(ctx context.Context, client *transfer.Client, spec ContainerPromoteSpec, plans []*irPlan) error {
	var errs []error
	for _, pl := range plans {
		where := fmt.Sprintf("container_images[%d] (%s), tag %s", pl.index, pl.img.Repository, pl.tag)
		d, err := client.Resolve(ctx, pl.src)
		if errors.Is(err, oci.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: the artifact's image %s is gone from the intermediate registry (pruned?); nothing can be promoted from that build", where, pl.src))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: reading the artifact's image %s: %w", where, pl.src, err))
			continue
		}
		pl.digest, pl.media = d.Digest, d.MediaType
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	checked := map[string]error{}
	for _, pl := range plans {
		where := fmt.Sprintf("container_images[%d] (%s), tag %s", pl.index, pl.img.Repository, pl.tag)
		cred := fmt.Sprintf("container_registry_credentials[%q]", pl.img.Registry)
		r, err := client.Repository(ctx, pl.t.host, pl.repo, true)
		if errors.Is(err, oci.ErrDenied) {
			errs = append(errs, fmt.Errorf("%s: %s were refused by %s: %w", where, cred, pl.t.host, err))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: reaching the registry %s at %s: %w", where, pl.t.name, pl.t.host, err))
			continue
		}
		key := pl.t.host + "/" + pl.repo
		if _, done := checked[key]; !done {
			if granted, known := r.PushGranted(); known && !granted {
				checked[key] = fmt.Errorf("%s may not push to %s", cred, pl.t.name+"/"+pl.repo)
			} else if !known {
				if err := r.CheckPush(ctx); err != nil {
					checked[key] = fmt.Errorf("%s may not push: %w", cred, err)
				} else {
					checked[key] = nil
				}
			} else {
				checked[key] = nil
			}
		}
		if err := checked[key]; err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		cur, err := r.Head(ctx, pl.tag)
		switch {
		case err == nil:
			pl.previous = cur.Digest
		case errors.Is(err, oci.ErrNotFound):
		default:
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errors.Join(errs...)
}

// verifyIntermediate checks every artifact (WithVerification) where it
// lies, in the intermediate registry, before anything is copied: the
// signatures and attestations travelled there with the image
// (intermediate_registry_push carries them) and are copied with it.
func verifyIntermediate(ctx context.Context, client *transfer.Client, spec ContainerPromoteSpec, o options, plans []*irPlan) ([]Verified, error) {
	vf, err := newVerifier(o.verify, spec.Zuul, spec.Images)
	if vf == nil || err != nil {
		return []Verified{}, err
	}
	out := []Verified{}
	var errs []error
	done := map[string]bool{}
	for _, pl := range plans {
		key := pl.srcHost + "/" + pl.srcRepo + "@" + pl.digest
		if done[key] || (vf.images != nil && !vf.images[pl.img.Repository]) {
			continue
		}
		done[key] = true
		where := fmt.Sprintf("container_images[%d] (%s), %s (%s)", pl.index, pl.img.Repository, pl.src, pl.digest)
		r, err := client.Repository(ctx, pl.srcHost, pl.srcRepo, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		v, err := vf.check(ctx, verify.NewStore(r, pl.srcHost+"/"+pl.srcRepo), &tagPlan{digest: pl.digest, mediaType: pl.media})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		v.Repository = pl.img.Repository
		out = append(out, v)
	}
	return out, errors.Join(errs...)
}
