package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/ocilayout"
)

// Without a buildset registry (upstream's release pattern: build then
// upload on one node), each image is also exported by BuildKit's oci
// exporter into the OCI image layout oci_layout_dir on this host, named
// <repository>:<tag> for each of its tags as docker_images gives them:
// the manifest, or the index of a multi-platform build, exactly as built.
// docker_image_upload takes the images from there when it finds no
// buildset registry, so the digests uploaded are the digests built;
// dockerd's store (docker save) would not keep them.

// openLayout opens (or creates) the image layout when the build has no
// buildset registry to push to.
func (b *builder) openLayout(req *Request) error {
	if req.Registry != nil || req.LayoutDir == "" {
		return nil
	}
	l, err := ocilayout.Create(req.LayoutDir)
	if err != nil {
		return fmt.Errorf("oci_layout_dir: %w", err)
	}
	b.layout = l
	return nil
}

// layoutNames are the names of an image in the layout.
func layoutNames(p *plan) []string {
	var names []string
	for _, tag := range p.image.Tags {
		names = append(names, p.image.Repository+":"+tag)
	}
	return names
}

// buildToLayout builds one image into the layout, then loads it into
// dockerd (a cached solve, the node's platform of a multi-platform build)
// unless dockerd has it already.
func (b *builder) buildToLayout(ctx context.Context, c *client.Client, native string, eng store,
	creds map[string]Credential, logw io.Writer, p *plan, res *ImageResult, start time.Time) (*ImageResult, error) {
	spec := p.spec
	names := layoutNames(p)
	pr, pw := io.Pipe()
	type imported struct {
		desc   ocilayout.Descriptor
		before map[string]digest.Digest
		err    error
	}
	done := make(chan imported, 1)
	started := false
	spec.OCI = func() (io.WriteCloser, error) {
		if started {
			return nil, errors.New("buildkitd asked for a second OCI export")
		}
		started = true
		go func() {
			d, before, err := b.layout.Import(pr, names)
			if err != nil {
				pr.CloseWithError(err)
			} else {
				_, _ = io.Copy(io.Discard, pr) // the tarball's padding
			}
			done <- imported{d, before, err}
		}()
		return pw, nil
	}
	resp, prog, err := b.solve(ctx, c, &spec, creds, logw)
	res.BuildTime = time.Since(start).Seconds()
	if prog != nil {
		res.CacheHits, res.Steps = prog.cacheHits(), len(prog.steps)
	}
	var imp imported
	if started {
		pw.CloseWithError(err)
		imp = <-done
	}
	if err != nil {
		return nil, b.solveError(p, prog, err)
	}
	if !started {
		return nil, &ImageError{Image: p.name, Err: errors.New("buildkitd exported no OCI image")}
	}
	if imp.err != nil {
		return nil, &ImageError{Image: p.name, Err: fmt.Errorf("writing the image to the layout %s: %w", b.layout.Dir(), imp.err)}
	}
	res.Digest = imp.desc.Digest.String()
	for _, n := range names {
		if imp.before[n] != imp.desc.Digest {
			res.Changed = true
		}
	}
	fmt.Fprintf(logw, "image layout %s: %s -> %s\n", b.layout.Dir(), res.Digest, names)
	if eng != nil {
		load, err := b.loadAfterPush(ctx, c, native, eng, creds, logw, p, resp.ExporterResponse[respConfigDigest])
		if err != nil {
			return res, err
		}
		if load != nil {
			if err := load.wait(); err != nil {
				return res, &ImageError{Image: p.name, Err: err}
			}
			res.DockerNames = p.dockerNames
			res.Changed = res.Changed || load.loaded
		}
	}
	res.BuildTime = time.Since(start).Seconds()
	fmt.Fprintf(logw, "==== %s: done in %.1fs, digest %s, %d of %d steps cached\n", p.name, res.BuildTime, res.Digest, res.CacheHits, res.Steps)
	return res, nil
}
