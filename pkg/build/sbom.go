package build

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// SBOMs: BuildKit runs imagegate-sbom-scanner (cmd/imagegate-sbom-scanner,
// an image the release tree ships as an OCI layout) on every platform's
// result and stores its SPDX in-toto statement in the image's attestation
// manifest (BuildKit's docs/attestations/sbom-protocol.md and
// attestation-storage.md). buildkitd pulls the scanner like any image, so
// the build first pushes it from the node's layout into the buildset
// registry, by digest: no internet is needed, and the generator the build
// names is exactly the scanner shipped. A scanner failure fails that
// image's build (BuildKit's step "generating sbom using ...").

// ScannerRepository is the buildset registry repository the scanner image
// is pushed to.
const ScannerRepository = "imagegate/sbom-scanner"

// attrSBOM is the dockerfile frontend's SBOM attestation attribute, whose
// value is a CSV of key=value, generator=<image> the scanner.
const attrSBOM = "attest:sbom"

// sbomAttr is the attest:sbom value naming generator.
func sbomAttr(generator string) string { return "generator=" + generator }

// scannerIndex reads the descriptor of the one image (index) of the OCI
// layout dir, the scanner as dist.sh writes it.
func scannerIndex(dir string) (ocispec.Descriptor, error) {
	b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	if len(idx.Manifests) != 1 {
		return ocispec.Descriptor{}, fmt.Errorf("%s lists %d images, want the scanner's one", ocispec.ImageIndexFile, len(idx.Manifests))
	}
	d := idx.Manifests[0]
	if err := d.Digest.Validate(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ocispec.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded())); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("the image %s is not in the layout: %w", d.Digest, err)
	}
	return d, nil
}

// checkScanner decides, before anything is built, whether the images
// asking for an SBOM get one: when sbom_scanner is not the scanner's OCI
// layout (a node the ensure-buildkit role of the release tree did not set
// up), they are built without, with a warning naming the images, the
// layout and what to do. A scanner that runs and fails is different: it
// fails that image's build.
func (b *builder) checkScanner(req *Request, plans []*plan) {
	var names []string
	for _, p := range plans {
		if p.image.SBOM {
			names = append(names, p.name)
		}
	}
	if len(names) == 0 {
		return
	}
	if _, err := scannerIndex(req.SBOMScanner); err != nil {
		b.warn("no SBOM for %s: sbom_scanner %s is not the OCI layout of imagegate-sbom-scanner (%v); run the ensure-buildkit role, which installs it from the release tree, set sbom_scanner, or set sbom: false on the images",
			strings.Join(names, ", "), req.SBOMScanner, err)
		for _, p := range plans {
			p.image.SBOM = false
		}
	}
}

// pushScanner pushes the scanner image of the layout dir into the
// buildset registry at host, unless it is there already, and returns the
// generator reference by digest.
func pushScanner(ctx context.Context, reg *registry, host, dir string) (string, error) {
	desc, err := scannerIndex(dir)
	if err != nil {
		return "", fmt.Errorf("sbom_scanner %s: %w", dir, err)
	}
	ref := host + "/" + ScannerRepository + "@" + desc.Digest.String()
	if have, err := reg.digest(ctx, ref); err == nil && have == desc.Digest.String() {
		return ref, nil
	}
	store, err := local.NewStore(dir)
	if err != nil {
		return "", fmt.Errorf("sbom_scanner %s: %w", dir, err)
	}
	// A tag keeps the scanner from being pruned as untagged.
	tagged := host + "/" + ScannerRepository + ":" + desc.Digest.Encoded()[:32]
	pusher, err := reg.resolver.Pusher(ctx, tagged)
	if err != nil {
		return "", fmt.Errorf("pushing the SBOM scanner to %s: %w", tagged, err)
	}
	if err := remotes.PushContent(ctx, pusher, desc, store, nil, platforms.All, nil); err != nil {
		return "", fmt.Errorf("pushing the SBOM scanner to %s: %w", tagged, err)
	}
	return ref, nil
}

// planSBOM decides, for each image asking for an SBOM, which generator the
// build names, pushing the scanner once when some image needs it. Without
// a buildset registry buildkitd has nowhere to pull the scanner from: the
// images are built without SBOM, with a warning naming them.
func (b *builder) planSBOM(ctx context.Context, req *Request, reg *registry, pushHost string, plans []*plan) error {
	var want []*plan
	for _, p := range plans {
		if p.image.SBOM {
			want = append(want, p)
		}
	}
	if len(want) == 0 {
		return nil
	}
	if reg == nil {
		for _, p := range want {
			b.warn("%s: no SBOM: there is no buildset registry for buildkitd to pull the SBOM scanner from", p.name)
		}
		return nil
	}
	gen, err := pushScanner(ctx, reg, pushHost, req.SBOMScanner)
	if err != nil {
		return fmt.Errorf("nothing was built: %w", err)
	}
	for _, p := range want {
		p.spec.SBOMGenerator = gen
	}
	return nil
}
