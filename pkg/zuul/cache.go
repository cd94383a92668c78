package zuul

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// BuildKit's layer cache travels between builds as a registry cache
// manifest (BuildKit's registry cache exporter, mode=max), under names both
// the build on the node and the intermediate-registry steps on the
// executor derive from this file, so they cannot disagree:
//
//   - the cache of one build: <CacheRepository(repo)>:<zuul.build>_cache, in
//     the buildset registry (written by the build) and under the same path
//     in the intermediate registry (copied there by intermediate_registry_push,
//     and reachable by later builds only through the buildkit_cache
//     artifact that names it, as an image is through its container_image
//     artifact);
//   - the cache of merged code: <CacheRepository(repo)>:MergedCacheTag(project,
//     branch), written to the intermediate registry only from pipelines that
//     run on merged code (CachePipelines), copied into a buildset registry
//     by intermediate_registry_pull, and imported by every build of that
//     project, branch and image.
//
// docs/cache.md has the threat model.

// BuildkitCacheType is metadata.type of the artifact naming a build's cache.
const BuildkitCacheType = "buildkit_cache"

// CacheNamespace is the first path component of every cache repository.
const CacheNamespace = "imagegate-cache"

// DefaultCachePipelines are the pipelines whose builds may write the cache
// of merged code when the intermediate registry secret names none: Zuul's
// usual names for the pipelines of merged changes (post: ref-updated,
// promote: change-merged).
var DefaultCachePipelines = []string{"post", "promote"}

// CacheRepository is the repository an image's cache lives in, in both
// registries: imagegate-cache/<repository without docker.io/>.
func CacheRepository(repo string) string {
	return CacheNamespace + "/" + StripDockerIO(repo)
}

// CacheTag is the tag of the cache a build exports: <zuul.build>_cache.
func (v *Vars) CacheTag() (string, error) {
	return v.IntermediateTag("cache")
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// MergedCacheTag is the tag of the cache of merged code for a project's
// branch: merged_<branch, made tag-safe>_<12 hex of the SHA-256 of project
// and branch>. The hash keys it by project (one image built by two
// projects keeps two caches) and keeps branches apart that differ only in
// characters a tag cannot hold.
func MergedCacheTag(project, branch string) (string, error) {
	if project == "" || branch == "" {
		return "", fmt.Errorf("the cache of merged code is keyed by project and branch: zuul.project.canonical_name %q and zuul.branch %q must both be set", project, branch)
	}
	sum := sha256.Sum256([]byte(project + "\x00" + branch))
	b := strings.Trim(tagUnsafe.ReplaceAllString(branch, "-"), "-.")
	if len(b) > 80 {
		b = b[:80]
	}
	return "merged_" + b + "_" + hex.EncodeToString(sum[:6]), nil
}

// MergedCacheTag is the tag of the merged-code cache of this job's project
// and branch.
func (v *Vars) MergedCacheTag() (string, error) {
	return MergedCacheTag(v.Project.CanonicalName, v.Branch)
}

// OnMergedCode reports whether the job runs in one of pipelines, the
// pipelines whose items are merged code (DefaultCachePipelines when
// pipelines is empty). zuul.pipeline is set by Zuul and cannot be changed
// by a job's variables.
func (v *Vars) OnMergedCode(pipelines []string) bool {
	if len(pipelines) == 0 {
		pipelines = DefaultCachePipelines
	}
	return v.Pipeline != "" && slices.Contains(pipelines, v.Pipeline)
}

// BuildkitCache is the content of a buildkit_cache artifact.
type BuildkitCache struct {
	// Repository is the image's repository (metadata.repository).
	Repository string
	// Tag is the cache's tag (metadata.tag), the same in both registries.
	Tag string
	// Ref is the URL without docker://: <ir>/<CacheRepository>:<Tag>.
	Ref string
}

// Path is where the cache lives in a buildset registry:
// <CacheRepository>:<Tag>.
func (c BuildkitCache) Path() string { return CacheRepository(c.Repository) + ":" + c.Tag }

// BuildkitCache returns the cache an artifact names, and false for an
// artifact of another type. A buildkit_cache artifact with missing
// metadata or a URL not of the cache's form is an error naming it.
func (a *Artifact) BuildkitCache() (BuildkitCache, bool, error) {
	if a.Metadata == nil {
		return BuildkitCache{}, false, nil
	}
	if t, _ := a.Metadata["type"].(string); t != BuildkitCacheType {
		return BuildkitCache{}, false, nil
	}
	repo, _ := a.Metadata["repository"].(string)
	tag, _ := a.Metadata["tag"].(string)
	if repo == "" || tag == "" || strings.ContainsAny(tag, ":/@ ") {
		return BuildkitCache{}, true, fmt.Errorf("artifact %q: metadata.repository and metadata.tag (a tag) are required for a %s artifact", a.Name, BuildkitCacheType)
	}
	c := BuildkitCache{Repository: repo, Tag: tag}
	ref, ok := strings.CutPrefix(a.URL, "docker://")
	host, path, _ := strings.Cut(ref, "/")
	if !ok || host == "" || path != c.Path() {
		return BuildkitCache{}, true, fmt.Errorf("artifact %q: url %q is not docker://<registry>/%s", a.Name, a.URL, c.Path())
	}
	c.Ref = ref
	return c, true, nil
}

// NewBuildkitCacheArtifact is the artifact intermediate_registry_push
// returns for the cache of one image: name "<repository>:buildkit_cache",
// url "docker://<host>:<port>/<CacheRepository>:<tag>", metadata {type:
// buildkit_cache, repository, tag}. It reaches later builds of the changes
// behind through zuul.artifacts, exactly as the image does.
func NewBuildkitCacheArtifact(irHost string, irPort int, repository, tag string) Artifact {
	c := BuildkitCache{Repository: repository, Tag: tag}
	return Artifact{
		Name: repository + ":" + BuildkitCacheType,
		URL:  "docker://" + HostPort(irHost, irPort) + "/" + c.Path(),
		Metadata: map[string]any{
			"type":       BuildkitCacheType,
			"repository": repository,
			"tag":        tag,
		},
	}
}

// CacheArtifacts are the caches of the changes ahead for an image (its
// repository compared without docker.io/), in the order Zuul lists them;
// malformed buildkit_cache artifacts are returned as errors, for the
// caller to warn about: a cache is never worth failing a build for.
func CacheArtifacts(arts []Artifact, repo string) ([]BuildkitCache, []error) {
	var out []BuildkitCache
	var errs []error
	for _, a := range arts {
		c, ok, err := a.BuildkitCache()
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok && StripDockerIO(c.Repository) == StripDockerIO(repo):
			out = append(out, c)
		}
	}
	return out, errs
}
