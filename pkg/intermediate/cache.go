package intermediate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// BuildKit caches travel as images do, between the buildset registry the
// build reads and writes and the intermediate registry, which only the
// executor can write (docs/cache.md):
//
//   - Pull copies into the buildset registry the caches of the changes
//     ahead (their buildkit_cache artifacts) and, for every image of the
//     job, the cache of merged code for the job's project and branch.
//   - Push copies the cache each image's build exported
//     (imagegate-cache/<repository>:<zuul.build>_cache) to the same name in
//     the intermediate registry and returns a buildkit_cache artifact for
//     it; only in a pipeline of merged code (intermediate_registry's
//     cache_pipelines) does it also write the cache of merged code.
//
// A cache is an optimisation: one that is absent, corrupt or unreachable
// is a warning naming the cause, never a failure, and never stops an
// image's copy.

// Cache is one BuildKit cache copied, or not copied and why.
type Cache struct {
	// Repository is the image the cache belongs to.
	Repository string `json:"repository"`
	// Kind is "merged" (the cache of merged code) or "build" (one
	// build's).
	Kind   string `json:"kind"`
	Source string `json:"source"`
	Target string `json:"target"`
	Digest string `json:"digest,omitempty"`
	// Copied is true when the target holds the cache now (whether or not
	// it had it before).
	Copied  bool `json:"copied"`
	Changed bool `json:"changed"`
	// Reason is why it was not copied.
	Reason string `json:"reason,omitempty"`
}

const (
	cacheMerged = "merged"
	cacheBuild  = "build"
)

// copyCaches copies (or plans) the caches and fills them in; a failure is
// a warning, and a missing source a reason only (absent is the normal
// first build, or a build with its cache off).
func (r Registries) copyCaches(ctx context.Context, br *zuul.BuildsetRegistry, o options, out *ansible.Outcome, caches []Cache) bool {
	if len(caches) == 0 {
		return false
	}
	c, err := r.client(br, o)
	if err != nil {
		out.Warn("BuildKit caches not copied: %v", err)
		return false
	}
	defer c.Close()
	jobs := make([]transfer.Job, len(caches))
	for i, cc := range caches {
		jobs[i] = transfer.Job{Src: cc.Source, Dst: cc.Target}
	}
	var rs []transfer.Result
	if o.check {
		rs, err = c.Plan(ctx, jobs)
	} else {
		rs, err = c.CopyAll(ctx, jobs)
	}
	if rs == nil {
		out.Warn("BuildKit caches not copied: %v; builds will run without them", err)
		for i := range caches {
			caches[i].Reason = err.Error()
		}
		return false
	}
	changed := false
	for i, res := range rs {
		cc := &caches[i]
		var te *transfer.Error
		switch {
		case res.Err == nil:
			cc.Digest, cc.Copied, cc.Changed = res.Digest, true, res.Changed
			changed = changed || res.Changed
		case errors.Is(res.Err, oci.ErrNotFound) && errors.As(res.Err, &te) && te.Step == transfer.StepSourceManifest:
			cc.Reason = "no such cache: " + cc.Source
			if cc.Kind == cacheMerged && strings.HasPrefix(cc.Source, r.IntermediateRegistry.Address()+"/") {
				out.Warn("no cache of merged code for %s in the intermediate registry yet (%s): the build runs without it; builds in the pipelines of merged code write it", cc.Repository, cc.Source)
			}
		default:
			cc.Reason = res.Err.Error()
			out.Warn("BuildKit cache of %s not copied from %s to %s: %v; builds run without it", cc.Repository, cc.Source, cc.Target, res.Err)
		}
	}
	return changed
}

// pullCaches are the caches Pull copies: every buildkit_cache artifact,
// and the cache of merged code of every image of the job.
func (spec PullSpec) pullCaches(br *zuul.BuildsetRegistry, artifacts []zuul.Artifact, out *ansible.Outcome) []Cache {
	if !spec.Cache {
		return nil
	}
	var caches []Cache
	seen := map[string]bool{}
	add := func(c Cache) {
		if !seen[c.Target] {
			seen[c.Target] = true
			caches = append(caches, c)
		}
	}
	images := spec.DockerImages
	if images == nil {
		images = spec.ContainerImages
	}
	if len(images) > 0 {
		tag, err := spec.Zuul.MergedCacheTag()
		if err != nil {
			out.Warn("no cache of merged code copied: %v", err)
		}
		for _, im := range images {
			if err != nil || im.Repository == "" {
				break
			}
			path := zuul.CacheRepository(im.Repository) + ":" + tag
			add(Cache{Repository: im.Repository, Kind: cacheMerged, Source: spec.IntermediateRegistry.Address() + "/" + path,
				Target: br.Address() + "/" + path})
		}
	}
	for i, a := range artifacts {
		c, ok, err := a.BuildkitCache()
		if err != nil {
			out.Warn("ignoring zuul artifact %d: %v", i, err)
			continue
		}
		if !ok {
			continue
		}
		if _, err := transfer.ParseReference(c.Ref); err != nil {
			out.Warn("ignoring %s: url %q: %v", artifactLabel(i, a), a.URL, err)
			continue
		}
		add(Cache{Repository: c.Repository, Kind: cacheBuild, Source: c.Ref, Target: br.Address() + "/" + c.Path()})
	}
	return caches
}

// pushCaches are the caches Push copies: each image's build cache to the
// same name in the intermediate registry, and, in a pipeline of merged
// code, to the cache of merged code.
func (spec PushSpec) pushCaches(br *zuul.BuildsetRegistry, images []zuul.Image, out *ansible.Outcome) []Cache {
	if !spec.Cache {
		return nil
	}
	tag, err := spec.Zuul.CacheTag()
	if err != nil {
		return nil // Push has failed on zuul.build already
	}
	ir := spec.IntermediateRegistry
	merged := ""
	if spec.Zuul.OnMergedCode(ir.CachePipelines) {
		if merged, err = spec.Zuul.MergedCacheTag(); err != nil {
			out.Warn("the cache of merged code is not written: %v", err)
		}
	}
	var caches []Cache
	seen := map[string]bool{}
	for _, im := range images {
		repo := zuul.CacheRepository(im.Repository)
		if seen[repo] {
			continue
		}
		seen[repo] = true
		src := br.Address() + "/" + repo + ":" + tag
		caches = append(caches, Cache{Repository: im.Repository, Kind: cacheBuild, Source: src, Target: ir.Address() + "/" + repo + ":" + tag})
		if merged != "" {
			caches = append(caches, Cache{Repository: im.Repository, Kind: cacheMerged, Source: src, Target: ir.Address() + "/" + repo + ":" + merged})
		}
	}
	return caches
}

// cacheOutcome adds the caches copied to the message.
func cacheOutcome(out *ansible.Outcome, caches []Cache, o options) {
	n := 0
	for _, c := range caches {
		if c.Copied {
			n++
		}
	}
	if len(caches) == 0 {
		return
	}
	verb := "copied"
	if o.check {
		verb = "would copy"
	}
	out.Msg += fmt.Sprintf("; %s %d of %d BuildKit cache(s)", verb, n, len(caches))
}
