// Package sbomimage assembles the container image of
// imagegate-sbom-scanner, the SBOM generator docker_image_build hands to
// BuildKit, without a container runtime: for each platform the static
// binary in one layer on an empty base, its command the scanner, and one
// OCI index over them, written as an OCI image layout (what
// docker_image_build pushes into the buildset registry for buildkitd to
// pull). It is build tooling for tests/setup/dist.sh
// (internal/cmd/sbomimage) and for tests, not a product.
package sbomimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinPath is where the scanner lives in the image.
const BinPath = "/usr/local/bin/imagegate-sbom-scanner"

// Write writes the OCI layout dir (replacing it) holding one index named
// tag over an image per platform ("linux/amd64" → the scanner binary built
// for it), files and config dated created, and returns the index digest.
func Write(dir, tag string, created time.Time, bins map[string]string) (string, error) {
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	plats := make([]string, 0, len(bins))
	for p := range bins {
		plats = append(plats, p)
	}
	sort.Strings(plats)
	for _, plat := range plats {
		osName, arch, ok := strings.Cut(plat, "/")
		if !ok {
			return "", fmt.Errorf("%q: want os/arch", plat)
		}
		img, err := image(bins[plat], osName, arch, created)
		if err != nil {
			return "", fmt.Errorf("%s: %w", plat, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return "", fmt.Errorf("writing the OCI layout: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

func image(bin, osName, arch string, created time.Time) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"usr", "usr/local", "usr/local/bin", "tmp"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: created, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinPath, "/"), Mode: 0o755,
		Size: int64(len(b)), ModTime: created, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
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
	// BuildKit runs Entrypoint+Cmd with the BUILDKIT_SCAN_* variables.
	cf.Config.Cmd = []string{BinPath}
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "imagegate-sbom-scanner",
		"org.opencontainers.image.description": "imagegate's SBOM generator for BuildKit (SPDX 2.3: dpkg databases, Go binaries)"}
	return mutate.ConfigFile(img, cf)
}
