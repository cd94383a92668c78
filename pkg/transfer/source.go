package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/ocilayout"
)

// source is where a copy reads manifests and blobs: a registry's
// Repository, or an OCI image layout on this machine (Job.SrcLayout).
type source interface {
	getManifest(ctx context.Context, ref string) (*manifest, error)
	openBlob(ctx context.Context, d descriptor) (io.ReadCloser, error)
	// Ref names ref (a tag or digest) of the source in messages.
	Ref(ref string) string
	// location is the source's registry host and repository, "" for a
	// layout: a target on the same registry may mount from it.
	location() (host, name string)
}

func (r *Repository) location() (host, name string) { return r.host, r.name }

// layoutSource reads one image layout.
type layoutSource struct {
	l *ocilayout.Layout
}

func (ls layoutSource) location() (string, string) { return "", "" }

// layoutDigest reports whether ref, in a layout, is a digest rather than
// a name (names hold a colon too: repository:tag).
func layoutDigest(ref string) bool {
	_, err := digest.Parse(ref)
	return err == nil
}

func (ls layoutSource) Ref(ref string) string {
	if layoutDigest(ref) {
		return "oci:" + ls.l.Dir() + "@" + ref
	}
	return "oci:" + ls.l.Dir() + ":" + ref
}

// getManifest reads the manifest named ref (a digest, or a name of the
// layout's index.json) and checks it against its digest.
func (ls layoutSource) getManifest(_ context.Context, ref string) (*manifest, error) {
	var want ocilayout.Descriptor
	if layoutDigest(ref) {
		d, err := oci.ParseDigest(ref)
		if err != nil {
			return nil, err
		}
		want.Digest = d
	} else {
		d, err := ls.l.Resolve(ref)
		if errors.Is(err, ocilayout.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w: %w", ls.Ref(ref), oci.ErrNotFound, err)
		}
		if err != nil {
			return nil, err
		}
		want = d
	}
	f, err := ls.l.OpenBlob(want.Digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ls.Ref(ref), err)
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", ls.Ref(ref), ErrUnsupportedManifest, maxManifestSize)
	}
	if _, err := oci.Verify(want.Digest, body); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", ls.Ref(ref), ErrDigestMismatch, err)
	}
	mt := want.MediaType
	if mt == "" {
		mt = manifestMediaType("", body)
	}
	return parseManifest(&Manifest{MediaType: mt, Digest: want.Digest.String(), Body: body})
}

func (ls layoutSource) openBlob(_ context.Context, d descriptor) (io.ReadCloser, error) {
	f, err := ls.l.OpenBlob(d.Digest)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && d.Size > 0 && fi.Size() != d.Size {
		f.Close()
		return nil, fmt.Errorf("blob %s in %s: %w: the manifest says %d bytes, the file has %d", d.Digest, ls.l.Dir(), ErrDigestMismatch, d.Size, fi.Size())
	}
	return f, nil
}

// parseLayoutJob reads a job whose source is an image layout.
func parseLayoutJob(j Job, dst name.Reference) (*parsedJob, error) {
	l, err := ocilayout.Open(j.SrcLayout)
	if err != nil {
		return nil, &Error{Ref: "oci:" + j.SrcLayout + ":" + j.Src, Step: StepParse, Err: err}
	}
	if j.Src == "" {
		return nil, &Error{Ref: "oci:" + j.SrcLayout, Step: StepParse, Err: errors.New("name the image in the layout")}
	}
	p := &parsedJob{dst: dst, layout: l, srcName: j.Src, srcString: layoutSource{l: l}.Ref(j.Src),
		dstHost: dst.Context().RegistryStr(), dstRepo: dst.Context().RepositoryStr(), dstName: dst.String()}
	return p, nil
}

// LayoutManifest reads the manifest or index ref (a digest, or a name of
// the layout's index.json) from the image layout dir, checked against its
// digest.
func LayoutManifest(ctx context.Context, dir, ref string) (*Manifest, error) {
	l, err := ocilayout.Open(dir)
	if err != nil {
		return nil, err
	}
	m, err := layoutSource{l: l}.getManifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &Manifest{MediaType: m.mediaType, Digest: m.digest.String(), Body: m.raw}, nil
}
