// Package scratchimage assembles a FROM-scratch multi-platform image of a
// static binary without a container runtime: per platform one layer of
// files on an empty base, an OCI config, and one OCI index over the
// platforms, written as an OCI image layout. It is the part
// internal/registryimage and internal/sbomimage share: build tooling for
// tests/setup/dist.sh and for tests, not a product.
package scratchimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Layer writes the tar stream of one image layer; its entries are dated
// by the layer's creation time.
type Layer struct {
	tw      *tar.Writer
	created time.Time
}

// Dir adds the directory name (relative, without a trailing slash).
func (l *Layer) Dir(name string, mode int64) error {
	return l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: l.created, Format: tar.FormatPAX})
}

// File adds the regular file name holding data.
func (l *Layer) File(name string, mode int64, data []byte) error {
	if err := l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode,
		Size: int64(len(data)), ModTime: l.created, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := l.tw.Write(data)
	return err
}

// Symlink adds the symbolic link name pointing at target.
func (l *Layer) Symlink(name, target string) error {
	return l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target,
		Mode: 0o777, ModTime: l.created, Format: tar.FormatPAX})
}

// Image is one platform's image: the one layer fill writes, on an empty
// base, with config as its runtime configuration, dated created.
func Image(osName, arch string, created time.Time, config v1.Config, fill func(*Layer) error) (v1.Image, error) {
	var buf bytes.Buffer
	l := &Layer{tw: tar.NewWriter(&buf), created: created}
	if err := fill(l); err != nil {
		return nil, err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = osName, arch, v1.Time{Time: created}
	cf.Config = config
	return mutate.ConfigFile(img, cf)
}

// Index is an OCI index being assembled, one image per platform.
type Index struct {
	idx v1.ImageIndex
}

// NewIndex is an empty OCI index.
func NewIndex() *Index {
	return &Index{idx: mutate.IndexMediaType(empty.Index, types.OCIImageIndex)}
}

// Add appends img as the image of osName/arch.
func (x *Index) Add(osName, arch string, img v1.Image) {
	x.idx = mutate.AppendManifests(x.idx, mutate.IndexAddendum{Add: img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
}

// WriteLayout writes the OCI layout dir (replacing it) holding the index
// named tag (org.opencontainers.image.ref.name), and returns the index
// digest.
func (x *Index) WriteLayout(dir, tag string) (string, error) {
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendIndex(x.idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return "", fmt.Errorf("writing the OCI layout: %w", err)
	}
	d, err := x.idx.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
