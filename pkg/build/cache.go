package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	cachetypes "github.com/moby/buildkit/cache/remotecache/v1/types"
	"github.com/moby/buildkit/client"
	gwpb "github.com/moby/buildkit/frontend/gateway/pb"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// BuildKit's layer cache across builds (docs/cache.md). Every build of an
// image with a buildset registry imports the caches it may trust and
// exports its own, all through the buildset registry (the node holds no
// other credentials):
//
//   - imports: the cache of merged code for the job's project, branch and
//     image (<registry>/imagegate-cache/<repository>:merged_..., which
//     intermediate_registry_pull copies from the intermediate registry), and
//     the caches of the changes ahead that built the image (the
//     buildkit_cache artifacts of zuul.artifacts, copied the same way). No
//     other name is ever imported, so no build of an unrelated change can
//     reach this one.
//   - export: <registry>/imagegate-cache/<repository>:<zuul.build>_cache,
//     mode=max (every intermediate step), which only this build's own
//     artifact names; intermediate_registry_push copies it on.
//
// A cache is an optimisation: one that is missing, corrupt, refers to
// blobs the registry lacks, or cannot be read, costs a warning naming the
// cause and the build runs without it. Each candidate is read and checked
// before the solve (manifest and cache configuration by digest, every
// layer present), and a solve that fails on an imported cache is run again
// without imports. BuildKit checks every blob it fetches against its
// digest, so content whose digest does not match is never used.

// Registry cache attributes (BuildKit's docs/reference: registry cache).
const (
	cacheTypeRegistry = "registry"
	cacheAttrRef      = "ref"
	cacheAttrMode     = "mode"
	cacheAttrManifest = "image-manifest"
	cacheAttrOCI      = "oci-mediatypes"
	cacheAttrIgnore   = "ignore-error"

	// maxCacheDoc bounds the manifest and cache configuration read.
	maxCacheDoc = 16 << 20
)

// cachePlan is the cache of one image's build.
type cachePlan struct {
	// imports are the caches the build may import, with why each is
	// trusted, in order; the ones found good are used.
	imports []cacheSource
	// export is where the build's cache goes; empty exports none.
	export string
	// notes are why a cache is not imported or exported (bad artifacts,
	// no zuul.build), reported as warnings.
	notes []string
}

type cacheSource struct {
	ref string
	// what names the cache in messages.
	what string
	// optional: a missing cache of merged code is the normal first build,
	// not worth a warning.
	optional bool
}

// planCache names the caches of one image: nothing when the cache is off
// or there is no buildset registry to carry it.
func (b *builder) planCache(req *Request, pushHost string, p *plan) {
	if !req.Cache || req.Registry == nil {
		return
	}
	cp := &cachePlan{}
	repo := zuul.CacheRepository(strings.TrimSpace(p.image.Repository))
	if tag, err := req.Zuul.MergedCacheTag(); err == nil {
		cp.imports = append(cp.imports, cacheSource{ref: pushHost + "/" + repo + ":" + tag, optional: true,
			what: fmt.Sprintf("the cache of merged code (%s, branch %s)", req.Zuul.Project.CanonicalName, req.Zuul.Branch)})
	} else {
		b.log.Info("no cache of merged code to import", "image", p.name, "reason", err)
	}
	caches, errs := zuul.CacheArtifacts(req.Zuul.Artifacts, p.image.Repository)
	for _, err := range errs {
		cp.notes = append(cp.notes, fmt.Sprintf("ignoring a cache artifact: %v", err))
	}
	for _, c := range caches {
		cp.imports = append(cp.imports, cacheSource{ref: pushHost + "/" + c.Path(),
			what: fmt.Sprintf("the cache of a change ahead (%s)", c.Path())})
	}
	if tag, err := req.Zuul.CacheTag(); err == nil {
		cp.export = pushHost + "/" + repo + ":" + tag
	} else {
		cp.notes = append(cp.notes, fmt.Sprintf("not exporting the build cache of %s: %v", p.name, err))
	}
	p.cache = cp
}

// usableCaches checks each import candidate in the buildset registry and
// returns the references worth importing; each one left out is a warning
// naming the cause (an absent cache of merged code only a log line).
func (b *builder) usableCaches(ctx context.Context, reg *registry, p *plan, logw io.Writer) []string {
	if p.cache == nil {
		return nil
	}
	var refs []string
	for _, s := range p.cache.imports {
		err := reg.checkCache(ctx, s.ref)
		switch {
		case err == nil:
			refs = append(refs, s.ref)
			fmt.Fprintf(logw, "importing %s: %s\n", s.what, s.ref)
		case errors.Is(err, errNoCache) && s.optional:
			fmt.Fprintf(logw, "no %s yet (%s): building without it\n", strings.TrimPrefix(s.what, "the "), s.ref)
		default:
			b.warn("%s: not importing %s: %v; building without it", p.name, s.what, err)
		}
	}
	return refs
}

var errNoCache = errors.New("the buildset registry has no such cache")

// checkCache reads the cache manifest at ref and its cache configuration,
// each checked against its digest, and makes sure every layer the
// configuration names is in the manifest and in the registry: what
// BuildKit's importer would otherwise fail the build on.
func (r *registry) checkCache(ctx context.Context, ref string) error {
	ctx = log.WithLogger(ctx, logrus.NewEntry(quietLogger))
	_, desc, err := r.resolver.Resolve(ctx, ref)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %s", errNoCache, ref)
	}
	if err != nil {
		return fmt.Errorf("resolving %s: %w", ref, err)
	}
	f, err := r.resolver.Fetcher(ctx, ref)
	if err != nil {
		return fmt.Errorf("reading %s: %w", ref, err)
	}
	raw, err := fetchVerified(ctx, f, desc)
	if err != nil {
		return fmt.Errorf("reading the cache manifest %s: %w", ref, err)
	}
	var m ocispec.Manifest // an index has the same fields as far as read here
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("cache manifest %s is not JSON: %w", ref, err)
	}
	var config ocispec.Descriptor
	var layers []ocispec.Descriptor
	switch {
	case m.Config.MediaType == cachetypes.CacheConfigMediaTypeV0:
		config, layers = m.Config, m.Layers
	case json.Unmarshal(raw, &idx) == nil && len(idx.Manifests) > 0:
		// BuildKit's default form: an index listing the layers and the
		// configuration as its "manifests".
		for _, d := range idx.Manifests {
			if d.MediaType == cachetypes.CacheConfigMediaTypeV0 {
				config = d
			} else {
				layers = append(layers, d)
			}
		}
	}
	if config.Digest == "" {
		return fmt.Errorf("%s is not a BuildKit cache manifest (no %s configuration)", ref, cachetypes.CacheConfigMediaTypeV0)
	}
	cfgRaw, err := fetchVerified(ctx, f, config)
	if err != nil {
		return fmt.Errorf("reading the cache configuration of %s: %w", ref, err)
	}
	var cfg cachetypes.CacheConfig
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return fmt.Errorf("the cache configuration of %s is not valid: %w", ref, err)
	}
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	for _, l := range layers {
		byDigest[l.Digest] = l
	}
	for i, l := range cfg.Layers {
		d, ok := byDigest[l.Blob]
		if !ok {
			return fmt.Errorf("the cache configuration of %s names layer %d (%s), which its manifest does not list", ref, i, l.Blob)
		}
		if l.ParentIndex >= len(cfg.Layers) {
			return fmt.Errorf("the cache configuration of %s names parent %d of layer %d, out of range", ref, l.ParentIndex, i)
		}
		// The fetcher opens the blob on the first read: read one byte.
		rc, err := f.Fetch(ctx, d)
		if err == nil {
			_, err = rc.Read(make([]byte, 1))
			rc.Close()
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("layer %s of cache %s: %w", d.Digest, ref, err)
		}
	}
	return nil
}

// fetchVerified reads a small blob or manifest and checks its digest and
// size.
func fetchVerified(ctx context.Context, f interface {
	Fetch(context.Context, ocispec.Descriptor) (io.ReadCloser, error)
}, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxCacheDoc {
		return nil, fmt.Errorf("%s is %d bytes, more than a cache document may be (%d)", desc.Digest, desc.Size, maxCacheDoc)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("descriptor digest: %w", err)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxCacheDoc+1))
	if err != nil {
		return nil, err
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("content has digest %s, not %s", got, desc.Digest)
	}
	return b, nil
}

// cacheOptions are the solve's cache imports and export.
func (s *Spec) cacheOptions() (imports, exports []client.CacheOptionsEntry) {
	for _, ref := range s.CacheImports {
		imports = append(imports, client.CacheOptionsEntry{Type: cacheTypeRegistry, Attrs: map[string]string{cacheAttrRef: ref}})
	}
	if s.CacheExport != "" {
		// mode=max keeps every intermediate step; an OCI image manifest
		// (not BuildKit's default index of blobs) is what every registry
		// and the transfer layer copy as an image. A failed export must not
		// fail the build: the export is checked afterwards.
		exports = append(exports, client.CacheOptionsEntry{Type: cacheTypeRegistry, Attrs: map[string]string{
			cacheAttrRef: s.CacheExport, cacheAttrMode: "max", cacheAttrManifest: "true", cacheAttrOCI: "true",
			cacheAttrIgnore: "true"}})
	}
	return imports, exports
}

// retryWithoutCache reports whether a failed solve is worth running again
// without cache imports: it imported some, and did not fail because a
// build step's process failed (which would fail again).
func retryWithoutCache(spec *Spec, err error) bool {
	var exit *gwpb.ExitError
	return len(spec.CacheImports) > 0 && !errors.As(err, &exit) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, context.DeadlineExceeded)
}

// checkExport reports whether the build's cache reached the buildset
// registry: BuildKit ignores a failed export (ignore-error), so it is
// read back.
func (b *builder) checkExport(ctx context.Context, reg *registry, p *plan) string {
	if p.cache == nil || p.cache.export == "" || reg == nil {
		return ""
	}
	d, err := reg.digest(ctx, p.cache.export)
	if err != nil || d == "" {
		why := "BuildKit could not write it; see the build log"
		if err != nil {
			why = err.Error()
		}
		b.warn("%s: the build cache was not exported to %s (%s): later builds will not reuse this one's steps", p.name, p.cache.export, why)
		return ""
	}
	return p.cache.export
}
