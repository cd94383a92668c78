package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/imagegate/imagegate/pkg/publish/distribution"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// UploadSpec is what docker_image_upload does.
type UploadSpec struct {
	Images      []zuul.Image
	Target      Target
	Credentials Credentials
	Zuul        zuul.Vars
	// Promote stages the images under staging tags (change_<N>_<tag>,
	// or <pipeline>_<tag>) for a later promote; false uploads the final
	// tags directly (a release).
	Promote bool
	// BuildsetRegistry is where the images were built to.
	BuildsetRegistry *zuul.BuildsetRegistry
	// Jobs bounds the images copied at once (default DefaultJobs).
	Jobs int
}

// UploadedTag is one tag of one image, copied or to be copied.
type UploadedTag struct {
	// Repository and Tag are the image's, as given in docker_images.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Source is the image in the buildset registry.
	Source string `json:"source"`
	// Reference is the uploaded reference: docker.io/myorg/app:change_42_latest.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// Changed is false when Reference already pointed at Digest.
	Changed bool `json:"changed"`
	transfer.BlobStats

	index int // in docker_images
}

func (u UploadedTag) where() string {
	return fmt.Sprintf("docker_images[%d] (%s), tag %s", u.index, u.Repository, u.Tag)
}

// UploadResult is what Upload did.
type UploadResult struct {
	Changed  bool
	Uploads  []UploadedTag
	Warnings []string
	// Before and After describe every target reference: "<reference> -> <digest>".
	Before, After string
}

// Upload copies every image and tag from the buildset registry to the
// target registry, under its staging tag (or final tag when Promote is
// false), manifest bytes unchanged: a multi-platform index is copied whole,
// with the digest the build produced, and nothing is rebuilt.
//
// Nothing is sent to the target before every input is known good: the
// repository restriction is applied to every image, every image and tag is
// found in the buildset registry, and the credentials are shown to be
// allowed to push to every target repository. Then the copies run, each
// writing its tag only once everything it refers to is in place.
func Upload(ctx context.Context, spec UploadSpec, opts ...Option) (*UploadResult, error) {
	o := newOptions(opts)
	res := &UploadResult{}
	if len(spec.Images) == 0 {
		return nil, errors.New("docker_images is empty: nothing to upload")
	}
	if err := spec.Credentials.check(); err != nil {
		return nil, err
	}
	if spec.BuildsetRegistry == nil {
		return nil, errors.New("buildset_registry is not set and zuul.executor.result_data_file holds none: the images are copied from the buildset registry the build pushed them to")
	}
	if err := spec.BuildsetRegistry.Validate(); err != nil {
		return nil, err
	}
	t, err := spec.Target.resolve()
	if err != nil {
		return nil, err
	}
	if spec.Jobs <= 0 {
		spec.Jobs = DefaultJobs
	}
	pattern, warning, err := spec.Credentials.restriction()
	if err != nil {
		return nil, err
	}
	if warning != "" {
		res.Warnings = append(res.Warnings, warning)
	}

	// Every image, statically.
	br := spec.BuildsetRegistry
	var jobs []transfer.Job
	var plan []UploadedTag
	repos := map[string]bool{}
	var errs []error
	for i, img := range spec.Images {
		repo, where, err := t.imageRepository(pattern, i, img)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		repos[repo] = true
		for _, tag := range img.Tags {
			dst := tag
			if spec.Promote {
				if dst, err = spec.Zuul.StagingTag(tag); err != nil {
					errs = append(errs, fmt.Errorf("%s, tag %s: %w", where, tag, err))
					continue
				}
			}
			src := br.Address() + "/" + zuul.StripDockerIO(img.Repository) + ":" + tag
			jobs = append(jobs, transfer.Job{Src: src, Dst: t.host + "/" + repo + ":" + dst})
			plan = append(plan, UploadedTag{index: i, Repository: img.Repository, Tag: tag,
				Source: src, Reference: t.ref(repo, dst)})
		}
	}
	seen := map[string]int{}
	for i, u := range plan {
		if j, dup := seen[u.Reference]; dup {
			errs = append(errs, fmt.Errorf("%s: uploads to %s, as %s does", u.where(), u.Reference, plan[j].where()))
		}
		seen[u.Reference] = i
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was uploaded: %w", errors.Join(errs...))
	}
	if strings.EqualFold(br.Address(), t.host) {
		return nil, fmt.Errorf("nothing was uploaded: the target registry %s is the buildset registry", t.host)
	}

	topts := []transfer.Option{
		transfer.WithEndpoint(transfer.Endpoint{Host: br.Address(), Username: br.Username, Password: br.Password, CA: []byte(br.Cert), NoSystemRoots: true}),
		transfer.WithEndpoint(transfer.Endpoint{Host: t.host, Username: spec.Credentials.Username, Password: spec.Credentials.Password, CA: t.ca}),
		transfer.WithImageJobs(spec.Jobs), transfer.WithLogger(o.log)}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > 0 {
		// The caller's deadline, not transfer's default, bounds the copies.
		topts = append(topts, transfer.WithTimeout(time.Until(dl)))
	}
	copier, err := transfer.New(topts...)
	if err != nil {
		return nil, err
	}
	defer copier.Close()

	// Every source and every target, read; nothing written.
	results, err := copier.Plan(ctx, jobs)
	if err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", describeUploadErrors(plan, results, err))
	}
	if err := checkPush(ctx, t, spec.Credentials, repos, o); err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", err)
	}
	if !o.check {
		results, err = copier.CopyAll(ctx, jobs)
		if err != nil {
			done := 0
			for _, r := range results {
				if r.Err == nil {
					done++
				}
			}
			return nil, fmt.Errorf("uploading (%d of %d tags done; run again to finish, copies already done are skipped): %w",
				done, len(jobs), describeUploadErrors(plan, results, err))
		}
	}
	var before, after []string
	for i, r := range results {
		u := plan[i]
		u.Digest, u.MediaType, u.Changed = r.Digest, r.MediaType, r.Changed
		u.BlobStats = r.BlobStats
		res.Uploads = append(res.Uploads, u)
		res.Changed = res.Changed || u.Changed
		if u.Changed {
			before = append(before, u.Reference+" -> (other or absent)")
		} else {
			before = append(before, u.Reference+" -> "+u.Digest)
		}
		after = append(after, u.Reference+" -> "+u.Digest)
	}
	sort.Strings(before)
	sort.Strings(after)
	res.Before, res.After = joinLines(before), joinLines(after)
	return res, nil
}

// describeUploadErrors names the image and tag of each failed job.
func describeUploadErrors(plan []UploadedTag, results []Result, err error) error {
	if len(results) != len(plan) {
		return err
	}
	var errs []error
	for i, r := range results {
		if r.Err == nil {
			continue
		}
		u := plan[i]
		msg := r.Err.Error()
		var te *transfer.Error
		switch {
		case errors.As(r.Err, &te) && te.Step == transfer.StepSourceManifest && errors.Is(r.Err, transfer.ErrNotFound):
			msg = fmt.Sprintf("%s is not in the buildset registry (did the build job push it?): %v", u.Source, r.Err)
		case te != nil && te.Ref == u.Source:
			msg = "reading the buildset registry: " + msg
		case te != nil:
			msg = "writing the target registry: " + msg
		}
		errs = append(errs, fmt.Errorf("%s: %s", u.where(), msg))
	}
	if len(errs) == 0 {
		return err
	}
	return errors.Join(errs...)
}

// Result is transfer's result of one copy.
type Result = transfer.Result

// checkPush proves the credentials may push to every target repository,
// with the token's access claims or an upload session opened and
// cancelled.
func checkPush(ctx context.Context, t *target, c Credentials, repos map[string]bool, o options) error {
	rt := o.transport
	if rt == nil {
		base, err := baseTransport(t.ca)
		if err != nil {
			return err
		}
		if rt, err = retrying(base, o); err != nil {
			return err
		}
	}
	reg, err := distribution.New(t.host, distribution.WithTransport(rt),
		distribution.WithAuth(authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password})), distribution.WithLogger(o.log))
	if err != nil {
		return err
	}
	var names []string
	for r := range repos {
		names = append(names, r)
	}
	sort.Strings(names)
	clients, err := reg.Repositories(ctx, names, true)
	if errors.Is(err, distribution.ErrDenied) {
		return fmt.Errorf("docker_credentials (%s) were refused by %s: %w", c.Username, t.host, err)
	}
	if err != nil {
		return fmt.Errorf("reaching the registry %s at %s: %w", t.name, t.host, err)
	}
	var errs []error
	for _, n := range names {
		r := clients[n]
		if granted, known := r.PushGranted(); known {
			if !granted {
				errs = append(errs, fmt.Errorf("docker_credentials (%s) may not push to %s", c.Username, t.name+"/"+n))
			}
			continue
		}
		if err := r.CheckPush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("docker_credentials (%s) may not push to %s: %w", c.Username, t.name+"/"+n, err))
		}
	}
	return errors.Join(errs...)
}
