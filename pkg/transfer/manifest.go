package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

// manifest is a manifest a copy carries, with what it refers to.
type manifest struct {
	raw       []byte
	mediaType string
	digest    digest.Digest
	// children are the manifests of an index; blobs the config and layers
	// of an image.
	children []descriptor
	blobs    []descriptor
}

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls,omitempty"`
}

// parseManifest reads the descriptors of m, refusing what cannot be copied
// unchanged.
func parseManifest(m *Manifest) (*manifest, error) {
	var doc struct {
		Config    *descriptor  `json:"config"`
		Layers    []descriptor `json:"layers"`
		Manifests []descriptor `json:"manifests"`
		Blobs     []descriptor `json:"blobs"`
	}
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrUnsupportedManifest, err)
	}
	d, err := digest.Parse(m.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: digest %q: %v", ErrUnsupportedManifest, m.Digest, err)
	}
	out := &manifest{raw: m.Body, mediaType: m.MediaType, digest: d}
	switch {
	case oci.IsSchema1(m.MediaType):
		return nil, fmt.Errorf("%w: Docker schema 1 (%s) cannot be copied unchanged; rebuild or push the image with a current client", ErrUnsupportedManifest, m.MediaType)
	case oci.IsIndex(m.MediaType):
		out.children = doc.Manifests
	case oci.IsGeneric(m.MediaType):
		return nil, fmt.Errorf("%w: no media type, and neither manifests nor config", ErrUnsupportedManifest)
	default:
		// Image manifests, and artifact manifests of other types that
		// follow the image manifest's shape.
		if doc.Config == nil && doc.Layers == nil && doc.Blobs == nil {
			return nil, fmt.Errorf("%w: media type %s with no config or layers", ErrUnsupportedManifest, m.MediaType)
		}
		if doc.Config != nil {
			out.blobs = append(out.blobs, *doc.Config)
		}
		out.blobs = append(out.blobs, doc.Layers...)
		out.blobs = append(out.blobs, doc.Blobs...)
	}
	for _, d := range append(append([]descriptor{}, out.children...), out.blobs...) {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: descriptor digest %q: %v", ErrUnsupportedManifest, d.Digest, err)
		}
	}
	return out, nil
}

// getManifest fetches a manifest a copy carries (Repository.Get) and
// reads its descriptors.
func (r *Repository) getManifest(ctx context.Context, ref string) (*manifest, error) {
	m, err := r.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	return parseManifest(m)
}

// headDigest returns the digest ref points at, or "" when the repository
// has no such manifest.
func (r *Repository) headDigest(ctx context.Context, ref string) (digest.Digest, error) {
	d, err := r.Head(ctx, ref)
	if errors.Is(err, oci.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return digest.Digest(d.Digest), nil
}

// putManifest stores a manifest a copy carries under ref (a tag or its
// digest).
func (r *Repository) putManifest(ctx context.Context, ref string, m *manifest) error {
	return r.Put(ctx, ref, &Manifest{MediaType: m.mediaType, Digest: m.digest.String(), Body: m.raw})
}
