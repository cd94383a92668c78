package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// The promote methods of the container-image family
// (promote_container_image_method).
const (
	// MethodTag stages change tags in the target registry at upload, and
	// promote moves the final tags to them.
	MethodTag = "tag"
	// MethodIntermediateRegistry uploads nothing in the gate; promote
	// copies the gate build's images from the intermediate registry.
	MethodIntermediateRegistry = "intermediate-registry"
)

// ContainerUploadSpec is what container_image_upload does, the upload of
// the container-image family (zuul-jobs' upload-container-image); its
// fields are the module's parameters.
type ContainerUploadSpec struct {
	// Images are container_images: each image's repository includes its
	// registry, and registry names its entry in Credentials.
	Images      []zuul.Image         `ansible:"container_images,required"`
	Credentials ContainerCredentials `ansible:"container_registry_credentials,required"`
	Zuul        zuul.Vars            `ansible:"zuul,raw,required"`
	// Promote stages the images under staging tags (change_<N>_<tag>, or
	// <pipeline>_<tag>) for a later promote; false uploads the final tags
	// (a release).
	Promote bool `ansible:"upload_container_image_promote" default:"true"`
	// Method is promote_container_image_method: with
	// intermediate-registry (and Promote), promote takes the images from
	// the intermediate registry, and the upload skips itself, as
	// upstream's does.
	Method string `ansible:"promote_container_image_method" default:"tag" choices:"tag,intermediate-registry"`
	// InsecureRegistries may be reached over plain HTTP, as
	// docker_image_upload's (Target.InsecureRegistries).
	InsecureRegistries []string `ansible:"insecure_registries"`
	// BuildsetRegistry is where the images were built to; when nil, the
	// job's result data file names it (zuul.ResolveBuildsetRegistry).
	BuildsetRegistry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	// Jobs bounds the images copied at once.
	Jobs int `ansible:"jobs" default:"8"`
}

// ContainerUploadResult is what UploadContainer did: the fields of
// UploadResult (finishUpload fills both).
type ContainerUploadResult UploadResult

// containerTarget is one registry of a container upload: its entry in
// container_registry_credentials, resolved.
type containerTarget struct {
	key   string // the registry as container_registry_credentials names it
	t     *target
	creds RegistryCredentials
	repos map[string]bool
}

// UploadContainer copies every image and tag of container_images from the
// buildset registry to the registry its repository names, under its
// staging tag (or its final tag when Promote is false), with the
// credentials of its registry's entry: images for several registries go
// out in one run. Manifests are copied byte for byte (an index keeps its
// digest and every platform), as Upload's are.
//
// Nothing is sent before every input is known good: every image's
// registry has a credentials entry whose repository expression its
// repository matches (ContainerCredentials.For), every repository lies in
// its registry, every image and tag is in the buildset registry, and each
// registry's credentials may push to each of its repositories.
//
// With promote_container_image_method intermediate-registry (and
// Promote), nothing is uploaded: promote copies from the intermediate
// registry. The result is skipped, not changed.
func UploadContainer(ctx context.Context, spec ContainerUploadSpec, opts ...Option) (*ContainerUploadResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	res := &ContainerUploadResult{Uploads: []UploadedTag{}, Signed: []SignedImage{}, Attested: []SignedImage{}}
	switch spec.Method {
	case MethodTag:
	case MethodIntermediateRegistry:
		if spec.Promote {
			res.Skipped = true
			res.Msg = "nothing uploaded: with promote_container_image_method intermediate-registry, promote copies the gate's images from the intermediate registry (set upload_container_image_promote: false to upload final tags)"
			return res, nil
		}
	default:
		return nil, fmt.Errorf("promote_container_image_method %q: want tag or intermediate-registry", spec.Method)
	}
	if len(spec.Images) == 0 {
		return nil, errors.New("container_images is empty: nothing to upload")
	}
	// The key first: a key that cannot sign stops the upload before
	// anything is sent.
	signer, err := o.signing.signer(o.redact)
	if err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", err)
	}
	if err := checkJobs(spec.Jobs); err != nil {
		return nil, err
	}
	if err := transfer.CheckInsecureRegistries(spec.InsecureRegistries); err != nil {
		return nil, fmt.Errorf("insecure_registries: %w", err)
	}

	// Every image, statically: credentials, expression, registry, tags.
	targets := map[string]*containerTarget{}
	var jobs []transfer.Job
	var plan []UploadedTag
	type placed struct {
		t    *target
		repo string
	}
	placedAt := map[string]placed{} // by UploadedTag.Reference
	var errs []error
	warned := map[string]bool{}
	for i, img := range spec.Images {
		ct, repo, err := spec.imageTarget(targets, i, img, warned, res)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ct.repos[repo] = true
		where := fmt.Sprintf("container_images[%d] (%s)", i, img.Repository)
		for _, tag := range img.Tags {
			dst := tag
			if spec.Promote {
				if dst, err = spec.Zuul.StagingTag(tag); err != nil {
					errs = append(errs, fmt.Errorf("%s, tag %s: %w", where, tag, err))
					continue
				}
			}
			jobs = append(jobs, transfer.Job{Dst: ct.t.host + "/" + repo + ":" + dst})
			plan = append(plan, UploadedTag{index: i, param: "container_images", Repository: img.Repository, Tag: tag,
				Reference: ct.t.ref(repo, dst)})
			placedAt[ct.t.ref(repo, dst)] = placed{ct.t, repo}
		}
	}
	errs = append(errs, duplicateUploads(plan)...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was uploaded: %w", errors.Join(errs...))
	}
	br, err := zuul.ResolveBuildsetRegistry(spec.BuildsetRegistry, &spec.Zuul, o.redact)
	if err != nil {
		return nil, err
	}
	for i := range plan {
		src := br.Address() + "/" + zuul.StripDockerIO(spec.Images[plan[i].index].Repository) + ":" + plan[i].Tag
		plan[i].Source, jobs[i].Src = src, src
	}
	for _, ct := range targets {
		if strings.EqualFold(br.Address(), ct.t.host) {
			return nil, fmt.Errorf("nothing was uploaded: the registry %s (container_registry_credentials[%q]) is the buildset registry", ct.t.host, ct.key)
		}
	}

	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	topts := []transfer.Option{
		transfer.WithEndpoint(transfer.Endpoint{Host: br.Address(), Username: br.Username, Password: br.Password, CA: []byte(br.Cert), NoSystemRoots: true}),
		transfer.WithImageJobs(spec.Jobs), transfer.WithLogger(o.log), transfer.WithPageSize(tagsPageSize),
		transfer.WithInsecureRegistries(spec.InsecureRegistries...),
		// Signatures and attestations on the buildset registry travel with the images.
		transfer.WithReferrers()}
	for _, key := range sortedKeys(targets) {
		ct := targets[key]
		topts = append(topts, transfer.WithEndpoint(transfer.Endpoint{Host: ct.t.host, Username: ct.creds.Username,
			Password: ct.creds.Password, CA: ct.t.ca}))
	}
	if o.wrap != nil {
		topts = append(topts, transfer.WithTransportWrapper(o.wrap))
	}
	if o.timed {
		topts = append(topts, transfer.WithTimeout(o.timeout))
	}
	client, err := transfer.New(topts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// Every source and every target, read; nothing written.
	results, err := client.Plan(ctx, jobs)
	if err != nil {
		return nil, fmt.Errorf("nothing was uploaded: %w", describeUploadErrors(&uploadSource{br: br}, plan, results, err))
	}
	for _, key := range sortedKeys(targets) {
		if err := checkContainerPush(ctx, client, targets[key]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was uploaded: %w", errors.Join(errs...))
	}
	targetOf := func(u UploadedTag) (*target, string) { p := placedAt[u.Reference]; return p.t, p.repo }
	if err := finishUpload(ctx, client, o, &uploadSource{br: br}, signer, targetOf, plan, jobs, results, spec.Jobs, (*UploadResult)(res)); err != nil {
		return nil, err
	}
	return res, nil
}

// imageTarget checks container_images[i] before anything is sent: its
// tags, its registry's credentials entry and repository expression
// (ContainerCredentials.For), and that its repository, a full reference,
// lies in that registry. It returns the registry's target (shared by the
// images of one registry) and the repository's name there.
func (spec *ContainerUploadSpec) imageTarget(targets map[string]*containerTarget, i int, img zuul.Image,
	warned map[string]bool, res *ContainerUploadResult) (*containerTarget, string, error) {
	where := fmt.Sprintf("container_images[%d] (%s)", i, img.Repository)
	if err := img.CheckTags("container_images", i); err != nil {
		return nil, "", err
	}
	if !strings.Contains(img.Repository, "/") {
		return nil, "", fmt.Errorf("%s: repository %q has no registry: container_images repositories include it, for example %s/%s",
			where, img.Repository, img.Registry, img.Repository)
	}
	creds, warning, err := spec.Credentials.For("container_images", i, img)
	if warning != "" && !warned[img.Registry] {
		warned[img.Registry] = true
		res.Warn("%s", warning)
	}
	if err != nil {
		return nil, "", err
	}
	if creds.Username == "" || creds.Password == "" {
		return nil, "", fmt.Errorf("%s: container_registry_credentials[%q] needs username and password to upload", where, img.Registry)
	}
	ref, err := name.NewRepository(img.Repository, name.StrictValidation)
	if err != nil {
		return nil, "", fmt.Errorf("%s: repository %q is not a valid repository name: %v", where, img.Repository, err)
	}
	if !sameRegistry(ref.RegistryStr(), img.Registry) {
		return nil, "", fmt.Errorf("%s: repository %s is in registry %s, not in %s (its registry): container_images repositories include their registry",
			where, img.Repository, ref.RegistryStr(), img.Registry)
	}
	ct, ok := targets[img.Registry]
	if !ok {
		t, err := containerImageTarget("container_images", i, img, creds)
		if err != nil {
			return nil, "", err
		}
		ct = &containerTarget{key: img.Registry, t: t, creds: creds, repos: map[string]bool{}}
		targets[img.Registry] = ct
	}
	repo, err := ct.t.repository(ref.RepositoryStr())
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", where, err)
	}
	return ct, repo, nil
}

// sameRegistry compares registry names as a client resolves them
// (docker.io and index.docker.io are one registry).
func sameRegistry(a, b string) bool {
	ra, err1 := name.NewRegistry(a)
	rb, err2 := name.NewRegistry(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return oci.CanonicalHost(ra.Name()) == oci.CanonicalHost(rb.Name())
}

func sortedKeys(m map[string]*containerTarget) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkContainerPush proves a registry's credentials may push to each of
// its repositories, with the token's access claims or an upload session
// opened and cancelled.
func checkContainerPush(ctx context.Context, client *transfer.Client, ct *containerTarget) error {
	names := make([]string, 0, len(ct.repos))
	for r := range ct.repos {
		names = append(names, r)
	}
	sort.Strings(names)
	who := fmt.Sprintf("container_registry_credentials[%q] (%s)", ct.key, ct.creds.Username)
	opened, err := client.Repositories(ctx, ct.t.host, names, true)
	if errors.Is(err, oci.ErrDenied) {
		return fmt.Errorf("%s were refused by %s: %w", who, ct.t.host, err)
	}
	if err != nil {
		return fmt.Errorf("reaching the registry %s at %s: %w", ct.t.name, ct.t.host, err)
	}
	var errs []error
	for _, n := range names {
		r := opened[n]
		if granted, known := r.PushGranted(); known {
			if !granted {
				errs = append(errs, fmt.Errorf("%s may not push to %s", who, ct.t.name+"/"+n))
			}
			continue
		}
		if err := r.CheckPush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s may not push to %s: %w", who, ct.t.name+"/"+n, err))
		}
	}
	return errors.Join(errs...)
}
