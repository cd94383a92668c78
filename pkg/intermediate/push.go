package intermediate

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// errNoBuild is returned by Push without zuul.build.
var errNoBuild = errors.New("zuul.build is empty: the intermediate registry tag is <zuul.build>_<tag>; pass the job's zuul variable")

// PushResult is what Push did.
type PushResult struct {
	Images []Image
	// Artifacts are the zuul.artifacts entries for the images copied (or
	// to be copied, in check mode), in upstream's shape, for zuul_return.
	Artifacts []zuul.Artifact
	Changed   bool
}

// Push copies each tag of each image from the buildset registry
// (<repository without docker.io/>:<tag>) to the intermediate registry
// (<repository>:<build>_<tag>), and returns one artifact per tag. param
// names the image list in errors (docker_images or container_images).
func Push(ctx context.Context, cfg Config, vars *zuul.Vars, param string, images []zuul.Image) (*PushResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if vars == nil || vars.Build == "" {
		return nil, errNoBuild
	}
	ir := cfg.Intermediate
	res := &PushResult{}
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
			j := transfer.Job{Src: cfg.Buildset.Address() + "/" + src + ":" + tag,
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
	if len(jobs) == 0 {
		res.Artifacts = []zuul.Artifact{}
		return res, nil
	}
	changed, err := cfg.run(ctx, jobs, res.Images, func(i int) string { return labels[i] },
		"the buildset registry does not have this tag: was the image built and pushed to it under this name?")
	res.Changed = changed
	res.Artifacts = []zuul.Artifact{}
	for i, im := range res.Images {
		if im.Error == "" {
			res.Artifacts = append(res.Artifacts, arts[i])
		}
	}
	return res, err
}
