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
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/scratchimage"
)

// BinPath is where the scanner lives in the image.
const BinPath = "/usr/local/bin/imagegate-sbom-scanner"

// Write writes the OCI layout dir (replacing it) holding one index named
// tag over an image per platform ("linux/amd64" → the scanner binary built
// for it), files and config dated created, and returns the index digest.
func Write(dir, tag string, created time.Time, bins map[string]string) (string, error) {
	idx := scratchimage.NewIndex()
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
		idx.Add(osName, arch, img)
	}
	return idx.WriteLayout(dir, tag)
}

func image(bin, osName, arch string, created time.Time) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	// BuildKit runs Entrypoint+Cmd with the BUILDKIT_SCAN_* variables.
	config := v1.Config{Cmd: []string{BinPath}, WorkingDir: "/", Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Labels: map[string]string{"org.opencontainers.image.title": "imagegate-sbom-scanner",
			"org.opencontainers.image.description": "imagegate's SBOM generator for BuildKit (SPDX 2.3: dpkg databases, Go binaries)"}}
	return scratchimage.Image(osName, arch, created, config, func(l *scratchimage.Layer) error {
		for _, d := range []string{"usr", "usr/local", "usr/local/bin", "tmp"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			if err := l.Dir(d, mode); err != nil {
				return err
			}
		}
		return l.File(strings.TrimPrefix(BinPath, "/"), 0o755, b)
	})
}
