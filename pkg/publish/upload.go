package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// UploadSpec is what docker_image_upload does; its fields are the
// module's parameters.
type UploadSpec struct {
	Images      []zuul.Image `ansible:"docker_images,required"`
	Credentials Credentials  `ansible:"docker_credentials,required"`
	Zuul        zuul.Vars    `ansible:"zuul,raw,required"`
	Target
	// Promote stages the images under staging tags (change_<N>_<tag>,
	// or <pipeline>_<tag>) for a later promote; false uploads the final
	// tags directly (a release).
	Promote bool `ansible:"upload_docker_image_promote" default:"true"`
	// BuildsetRegistry is where the images were built to; when nil, the
	// job's result data file names it (zuul.ResolveBuildsetRegistry).
	BuildsetRegistry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	// LayoutDir is the OCI image layout docker_image_build writes on its
	// host when the job has no buildset registry; the images are taken
	// from it then (see source.go).
	LayoutDir string `ansible:"oci_layout_dir,path" default:"~/.imagegate/oci-layout"`
	// Jobs bounds the images copied at once.
	Jobs int `ansible:"jobs" default:"8"`
}

// UploadedTag is one tag of one image, copied or to be copied.
type UploadedTag struct {
	// Repository and Tag are the image's, as given in docker_images.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Source is the image in the buildset registry, or in the image
	// layout (oci:<dir>:<repository>:<tag>).
	Source string `json:"source"`
	// Reference is the uploaded reference: docker.io/myorg/app:change_42_latest.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// Changed is false when Reference already pointed at Digest.
	Changed bool `json:"changed"`
	transfer.BlobStats

	index int    // in docker_images
	param string // the image list, when not docker_images
}

func (u UploadedTag) where() string {
	param := u.param
	if param == "" {
		param = "docker_images"
	}
	return fmt.Sprintf("%s[%d] (%s), tag %s", param, u.index, u.Repository, u.Tag)
}

// UploadResult is what Upload did.
type UploadResult struct {
	ansible.Outcome
	Uploads []UploadedTag `json:"uploads"`
	// Signed lists the manifests signed (WithSigning); empty otherwise.
	Signed []SignedImage `json:"signed"`
	// Attested lists the platform images whose BuildKit provenance was
	// signed and attached as an attestation (WithSigning, images built
	// with provenance); empty otherwise.
	Attested []SignedImage `json:"attested"`
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
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	res := &UploadResult{Uploads: []UploadedTag{}, Signed: []SignedImage{}, Attested: []SignedImage{}}
	if len(spec.Images) == 0 {
		return nil, errors.New("docker_images is empty: nothing to upload")
	}
	if err := spec.Credentials.check(); err != nil {
		return nil, err
	}
	if err := checkJobs(spec.Jobs); err != nil {
		return nil, err
	}
	t, err := spec.Target.resolve("")
	if err != nil {
		return nil, err
	}
	source, err := resolveSource(spec, o.redact)
	if err != nil {
		return nil, err
	}
	pattern, warning, err := spec.Credentials.restriction()
	if err != nil {
		return nil, err
	}
	if warning != "" {
		res.Warn("%s", warning)
	}
	signer, err := o.signing.signer(o.redact)
	if err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", err)
	}

	// Every image, statically.
	var jobs []transfer.Job
	var plan []UploadedTag
	repos := map[string]bool{}
	var errs []error
	for i, img := range spec.Images {
		repo, where, err := t.imageRepository("docker_images", pattern, i, img)
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
			job, src := source.job(img.Repository, tag, t.host+"/"+repo+":"+dst)
			jobs = append(jobs, job)
			plan = append(plan, UploadedTag{index: i, Repository: img.Repository, Tag: tag,
				Source: src, Reference: t.ref(repo, dst)})
		}
	}
	errs = append(errs, duplicateUploads(plan)...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was uploaded: %w", errors.Join(errs...))
	}
	if err := source.check(t); err != nil {
		return nil, err
	}

	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	// Signatures and attestations already on the source (made at build,
	// or carried from the intermediate registry) travel with the images.
	topts := append(source.options(), transfer.WithImageJobs(spec.Jobs), transfer.WithReferrers())
	if o.timed {
		// The call's timeout, not transfer's default, bounds the copies.
		topts = append(topts, transfer.WithTimeout(o.timeout))
	}
	client, err := t.client(spec.Credentials, o, topts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// Every source and every target, read; nothing written.
	results, err := client.Plan(ctx, jobs)
	if err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", describeUploadErrors(source, plan, results, err))
	}
	if err := checkPush(ctx, client, t, spec.Credentials, repos); err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", err)
	}
	targetOf := func(u UploadedTag) (*target, string) {
		repo, _ := t.repository(u.Repository)
		return t, repo
	}
	if err := finishUpload(ctx, client, o, source, signer, targetOf, plan, jobs, results, spec.Jobs, res); err != nil {
		return nil, err
	}
	return res, nil
}

// duplicateUploads names each planned tag that uploads to a reference an
// earlier one uploads to.
func duplicateUploads(plan []UploadedTag) []error {
	var errs []error
	seen := map[string]int{}
	for i, u := range plan {
		if j, dup := seen[u.Reference]; dup {
			errs = append(errs, fmt.Errorf("%s: uploads to %s, as %s does", u.where(), u.Reference, plan[j].where()))
		}
		seen[u.Reference] = i
	}
	return errs
}

// finishUpload is what Upload and UploadContainer do once their plan was
// read (results, one per job): sign every planned manifest with signer
// when it is set (signatures first: a tag is never visible unsigned),
// copy the jobs unless in check mode, and record each tag, the
// signatures and the diff in res. targetOf names each planned tag's
// target registry and repository there; imageJobs bounds the images
// handled at once.
func finishUpload(ctx context.Context, client *transfer.Client, o options, source *uploadSource, signer *sign.Signer,
	targetOf func(UploadedTag) (*target, string), plan []UploadedTag, jobs []transfer.Job, results []Result, imageJobs int,
	res *UploadResult) error {
	var err error
	if signer != nil {
		if res.Signed, res.Attested, err = signUploads(ctx, client, targetOf, source, signer, plan, results, imageJobs, o.check); err != nil {
			return fmt.Errorf("nothing was uploaded (no tag was written): %w", err)
		}
		for _, si := range append(res.Signed, res.Attested...) {
			res.Changed = res.Changed || si.Changed
		}
	}
	if !o.check {
		results, err = client.CopyAll(ctx, jobs)
		if err != nil {
			done := 0
			for _, r := range results {
				if r.Err == nil {
					done++
				}
			}
			return fmt.Errorf("uploading (%d of %d tags done; run again to finish, copies already done are skipped): %w",
				done, len(jobs), describeUploadErrors(source, plan, results, err))
		}
	}
	var before, after []string
	for i, r := range results {
		u := plan[i]
		u.Digest, u.MediaType, u.Changed = r.Digest, r.MediaType, r.Changed
		u.BlobStats = r.BlobStats
		res.Uploads = append(res.Uploads, u)
		res.Changed = res.Changed || u.Changed || r.Referrers > 0
		if u.Changed {
			before = append(before, u.Reference+" -> (other or absent)")
		} else {
			before = append(before, u.Reference+" -> "+u.Digest)
		}
		after = append(after, u.Reference+" -> "+u.Digest)
	}
	if o.diff {
		sort.Strings(before)
		sort.Strings(after)
		res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after),
			BeforeHeader: "target tags before", AfterHeader: "target tags after"}}
	}
	return nil
}

// describeUploadErrors names the image and tag of each failed job.
func describeUploadErrors(source *uploadSource, plan []UploadedTag, results []Result, err error) error {
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
		case errors.As(r.Err, &te) && te.Step == transfer.StepSourceManifest && errors.Is(r.Err, oci.ErrNotFound):
			msg = fmt.Sprintf("%s: %v", source.notFound(u.Source), r.Err)
		case te != nil && te.Ref == u.Source:
			msg = "reading " + source.name() + ": " + msg
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
func checkPush(ctx context.Context, client *transfer.Client, t *target, c Credentials, repos map[string]bool) error {
	var names []string
	for r := range repos {
		names = append(names, r)
	}
	sort.Strings(names)
	opened, err := client.Repositories(ctx, t.host, names, true)
	if errors.Is(err, oci.ErrDenied) {
		return fmt.Errorf("docker_credentials (%s) were refused by %s: %w", c.Username, t.host, err)
	}
	if err != nil {
		return fmt.Errorf("reaching the registry %s at %s: %w", t.name, t.host, err)
	}
	var errs []error
	for _, n := range names {
		r := opened[n]
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
