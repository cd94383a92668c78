package intermediate

import (
	"context"
	"fmt"
	"strings"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Ignored is an artifact Pull did not copy, and why.
type Ignored struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// PullSpec is what intermediate_registry_pull does; its fields are the
// module's parameters.
type PullSpec struct {
	Zuul zuul.Vars `ansible:"zuul,raw"`
	Registries
	// Artifacts are the artifacts of the changes ahead; zuul.artifacts
	// when nil.
	Artifacts []zuul.Artifact `ansible:"zuul_artifacts,raw"`
	// DockerImages (else ContainerImages) are the job's images, whose
	// cache of merged code is copied (cache.go); none is copied without
	// them.
	DockerImages    []zuul.Image `ansible:"docker_images"`
	ContainerImages []zuul.Image `ansible:"container_images"`
	// Cache copies BuildKit caches: those of changes ahead and of merged
	// code (cache.go). Go callers get false unless they ask.
	Cache bool `ansible:"cache" default:"true"`
	// PullVerification checks the images before they are copied
	// (verify.go); off unless Key is given.
	PullVerification
}

// PullResult is what Pull did.
type PullResult struct {
	ansible.Outcome
	Images  []Image   `json:"images"`
	Ignored []Ignored `json:"ignored"`
	// Verified are the images checked with verify_key before they were
	// copied; empty without it.
	Verified []Verified `json:"verified"`
	// Caches are the BuildKit caches copied, or why not.
	Caches []Cache `json:"caches"`
}

// Pull copies every container_image artifact into the buildset registry
// as <repository>:<tag>, the repository with a leading docker.io/ removed
// and any other registry prefix kept (use-buildset-registry's namespace
// mapping). Artifacts without metadata or of another type are ignored.
// When two artifacts name the same repository and tag, the later one
// wins, as in upstream's sequential loop; the earlier is reported as
// ignored. Every parameter and artifact is checked before anything is
// copied, even when there is nothing to copy.
func Pull(ctx context.Context, spec PullSpec, opts ...Option) (*PullResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	br, err := spec.check(&spec.Zuul, o)
	if err != nil {
		return nil, err
	}
	key, err := spec.PullVerification.key()
	if err != nil {
		return nil, err
	}
	artifacts := spec.Artifacts
	if artifacts == nil {
		artifacts = spec.Zuul.Artifacts
	}
	res := &PullResult{Images: []Image{}, Ignored: []Ignored{}, Verified: []Verified{}, Caches: []Cache{}}
	var entries []entry
	byTarget := map[string]int{}
	for i, a := range artifacts {
		label := artifactLabel(i, a)
		ci, ok, err := a.ContainerImage()
		if err != nil {
			if a.Name == "" {
				return nil, fmt.Errorf("zuul artifact %d: %w", i, err)
			}
			return nil, err // it names the artifact
		}
		if !ok {
			if _, cache, _ := a.BuildkitCache(); !cache {
				res.Ignored = append(res.Ignored, Ignored{Name: a.Name, Reason: "not a container_image artifact"})
			}
			continue
		}
		src, err := transfer.ParseReference(ci.Ref)
		if err != nil {
			return nil, fmt.Errorf("%s: url %q: %w", label, a.URL, err)
		}
		repo := zuul.StripDockerIO(ci.Repository)
		dst := br.Address() + "/" + repo + ":" + ci.Tag
		if _, err := transfer.ParseReference(dst); err != nil || strings.ContainsAny(ci.Tag, ":/@") {
			return nil, fmt.Errorf("%s: metadata.repository %q and metadata.tag %q do not make an image name", label, ci.Repository, ci.Tag)
		}
		e := entry{idx: i, art: a, img: ci, dst: dst}
		e.img.Ref = src.String()
		if prev, dup := byTarget[dst]; dup {
			res.Ignored = append(res.Ignored, Ignored{Name: entries[prev].art.Name,
				Reason: fmt.Sprintf("superseded by artifact %q, a later artifact for %s:%s", a.Name, repo, ci.Tag)})
			entries[prev] = e
			continue
		}
		byTarget[dst] = len(entries)
		entries = append(entries, e)
	}
	caches := spec.pullCaches(br, artifacts, &res.Outcome)
	if len(entries) == 0 {
		res.Changed = spec.copyCaches(ctx, br, o, &res.Outcome, caches)
		res.Caches = append(res.Caches, caches...)
		outcome(&res.Outcome, res.Images, o, "image(s) into the buildset registry at "+br.Address())
		cacheOutcome(&res.Outcome, caches, o)
		return res, nil
	}
	if key != nil {
		// Before anything is copied, caches included; each entry then
		// copies the digest checked.
		if res.Verified, err = spec.verify(ctx, br, o, key, entries); err != nil {
			return nil, err
		}
	}
	jobs := make([]transfer.Job, len(entries))
	res.Images = make([]Image, len(entries))
	for i, e := range entries {
		jobs[i] = transfer.Job{Src: e.img.Ref, Dst: e.dst}
		res.Images[i] = Image{Name: e.art.Name, Repository: zuul.StripDockerIO(e.img.Repository), Tag: e.img.Tag,
			Source: e.img.Ref, Target: e.dst}
	}
	changed, err := spec.run(ctx, br, o, jobs, res.Images, func(i int) string { return artifactLabel(entries[i].idx, entries[i].art) },
		"the intermediate registry does not have it: pruned, or the artifact's url is wrong", nil)
	res.Changed = changed
	if err == nil {
		res.Changed = spec.copyCaches(ctx, br, o, &res.Outcome, caches) || res.Changed
		res.Caches = append(res.Caches, caches...)
		outcome(&res.Outcome, res.Images, o, "image(s) into the buildset registry at "+br.Address())
		cacheOutcome(&res.Outcome, caches, o)
	}
	return res, err
}

func artifactLabel(i int, a zuul.Artifact) string {
	if a.Name == "" {
		return fmt.Sprintf("zuul artifact %d", i)
	}
	return fmt.Sprintf("artifact %q", a.Name)
}
