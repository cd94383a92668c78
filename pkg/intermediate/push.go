package intermediate

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// errNoBuild is returned by Push without zuul.build.
var errNoBuild = errors.New("zuul.build is empty: the intermediate registry tag is <zuul.build>_<tag>; pass the job's zuul variable")

// PushSpec is what intermediate_registry_push does; its fields are the
// module's parameters.
type PushSpec struct {
	Zuul zuul.Vars `ansible:"zuul,raw,required"`
	Registries
	// DockerImages are the images to push; ContainerImages when
	// DockerImages is nil (docker_images wins when both are given, as
	// upstream).
	DockerImages    []zuul.Image `ansible:"docker_images"`
	ContainerImages []zuul.Image `ansible:"container_images"`
	// Cache copies each image's BuildKit cache, when its build exported
	// one, and returns a buildkit_cache artifact for it (cache.go). Go
	// callers get false unless they ask.
	Cache bool `ansible:"cache" default:"true"`
	// PushSigning signs every image pushed in the intermediate registry
	// (sign.go); Go callers sign nothing unless they give a key.
	PushSigning
}

// PushResult is what Push did.
type PushResult struct {
	ansible.Outcome
	Images []Image `json:"images"`
	// Artifacts are the zuul.artifacts entries for the images copied (or
	// to be copied, in check mode), in upstream's shape, for zuul_return,
	// then one buildkit_cache artifact per cache copied.
	Artifacts []zuul.Artifact `json:"artifacts"`
	// Caches are the BuildKit caches copied, or why not.
	Caches []Cache `json:"caches"`
	// Signed lists the manifests signed in the intermediate registry
	// (PushSigning); Attested the platform images whose BuildKit
	// provenance was signed. Both empty without a key.
	Signed   []SignedImage `json:"signed"`
	Attested []SignedImage `json:"attested"`
}

// Push copies each tag of each image from the buildset registry
// (<repository without docker.io/>:<tag>) to the intermediate registry
// (<repository>:<build>_<tag>), and returns one artifact per tag.
func Push(ctx context.Context, spec PushSpec, opts ...Option) (*PushResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	signer, err := spec.PushSigning.signer(o.redact)
	if err != nil {
		return nil, err
	}
	br, err := spec.check(&spec.Zuul, o)
	if err != nil {
		return nil, err
	}
	vars := &spec.Zuul
	if vars.Build == "" {
		return nil, errNoBuild
	}
	param, images := "docker_images", spec.DockerImages
	if images == nil {
		param, images = "container_images", spec.ContainerImages
	}
	ir := spec.IntermediateRegistry
	res := &PushResult{Images: []Image{}, Artifacts: []zuul.Artifact{}, Caches: []Cache{}, Signed: []SignedImage{}, Attested: []SignedImage{}}
	var jobs []transfer.Job
	var labels []string
	var arts []zuul.Artifact
	seen := map[string]string{}
	for i, im := range images {
		label := fmt.Sprintf("%s[%d] (%s)", param, i, im.Repository)
		if im.Repository == "" {
			return nil, fmt.Errorf("%s[%d]: repository is empty", param, i)
		}
		if err := im.CheckTags(param, i); err != nil {
			return nil, err
		}
		src := zuul.StripDockerIO(im.Repository)
		for _, tag := range im.Tags {
			buildTag, err := vars.IntermediateTag(tag)
			if err != nil {
				return nil, err
			}
			j := transfer.Job{Src: br.Address() + "/" + src + ":" + tag,
				Dst: ir.Address() + "/" + im.Repository + ":" + buildTag}
			for _, ref := range []string{j.Src, j.Dst} {
				if _, err := transfer.ParseReference(ref); err != nil {
					return nil, fmt.Errorf("%s, tag %s: %w", label, tag, err)
				}
			}
			if prev, dup := seen[j.Dst]; dup {
				return nil, fmt.Errorf("%s, tag %s: %s lists the same repository and tag; list each once", label, tag, prev)
			}
			seen[j.Dst] = label
			jobs = append(jobs, j)
			labels = append(labels, fmt.Sprintf("%s, tag %s", label, tag))
			arts = append(arts, zuul.NewContainerImageArtifact(ir.Host, ir.Port, im.Repository, tag, buildTag))
			res.Images = append(res.Images, Image{Name: im.Repository + ":" + tag, Repository: im.Repository, Tag: tag,
				Source: j.Src, Target: j.Dst})
		}
	}
	what := "image tag(s) to the intermediate registry at " + ir.Address()
	if len(jobs) == 0 {
		outcome(&res.Outcome, res.Images, o, what)
		return res, nil
	}
	var sign func(context.Context, *transfer.Client, []transfer.Result) (bool, error)
	if signer != nil {
		// Signatures first: a <build>_<tag> tag is never visible
		// unsigned.
		sign = func(ctx context.Context, c *transfer.Client, plan []transfer.Result) (bool, error) {
			signed, attested, err := signPushes(ctx, c, signer, jobs, plan, res.Images, labels, spec.Jobs, o.check)
			if err != nil {
				return false, fmt.Errorf("nothing was pushed (no tag was written): %w", err)
			}
			res.Signed, res.Attested = signed, attested
			changed := false
			for _, si := range append(signed, attested...) {
				changed = changed || si.Changed
			}
			return changed, nil
		}
	}
	changed, err := spec.run(ctx, br, o, jobs, res.Images, func(i int) string { return labels[i] },
		"the buildset registry does not have this tag: was the image built and pushed to it under this name?", sign)
	res.Changed = changed
	for i, im := range res.Images {
		if im.Error == "" {
			res.Artifacts = append(res.Artifacts, arts[i])
		}
	}
	if err == nil {
		outcome(&res.Outcome, res.Images, o, what)
		caches := spec.pushCaches(br, images, &res.Outcome)
		res.Changed = spec.copyCaches(ctx, br, o, &res.Outcome, caches) || res.Changed
		for _, c := range caches {
			if c.Kind == cacheBuild && c.Copied {
				tag, _ := vars.CacheTag()
				res.Artifacts = append(res.Artifacts, zuul.NewBuildkitCacheArtifact(ir.Host, ir.Port, c.Repository, tag))
			}
		}
		res.Caches = append(res.Caches, caches...)
		cacheOutcome(&res.Outcome, caches, o)
	}
	return res, err
}
