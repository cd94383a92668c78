package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/sbomimage"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/build"
)

const (
	sbomColdRuns = 3
	sbomWarmRuns = 3
)

// BenchmarkBuildSBOM measures what the SPDX SBOM attestation adds to
// docker_image_build: BenchmarkBuild's Dockerfile and context, built and
// pushed with sbom: false and with sbom: true (BuildKit running
// imagegate-sbom-scanner, built here into its OCI layout as
// pkg/build's TestSBOM and dist.sh do, on the result), cold (a fresh
// buildkitd and a new repository, the two ways in turn in each round so
// that other load on the machine falls on both alike) and warm (nothing
// changed). Before each cold build with the SBOM the scanner image is
// deleted from the registry, so that, as in a new buildset, the build
// pushes it (its layer blob stays in docker-registry's storage: the
// manifests are pushed, the blob found). The goal is under 20%.
func BenchmarkBuildSBOM(b *testing.B) {
	bb := newBuildBench(b)
	scanner, scannerBytes := benchScannerLayout(b)
	scannerDigest, err := scannerIndexDigest(scanner)
	if err != nil {
		b.Fatal(err)
	}
	scannerRef, err := name.ParseReference(bb.reg.Host + "/" + build.ScannerRepository + "@" + scannerDigest)
	if err != nil {
		b.Fatal(err)
	}

	type series struct{ cold, warm []time.Duration }
	var without, with series
	for i := 0; i < sbomColdRuns; i++ {
		for _, way := range []struct {
			s       *series
			scanner string
			repo    string
		}{
			{&without, "", fmt.Sprintf("bench/nosbom-%d", i)},
			{&with, scanner, fmt.Sprintf("bench/sbom-%d", i)},
		} {
			if way.scanner != "" && i > 0 {
				if err := remote.Delete(scannerRef, distOptions(bb.reg)...); err != nil {
					b.Fatalf("deleting the scanner image: %v", err)
				}
			}
			bk := testenv.StartBuildkitd(b, bb.bkConfig)
			d, _, digest := buildRunModule(b, bb.bin, bb.args(bk.Addr, way.repo, "none", way.scanner))
			way.s.cold = append(way.s.cold, d)
			if i == 0 {
				benchCheckSBOM(b, bb, way.repo, digest, way.scanner != "")
			}
			for j := 0; j < sbomWarmRuns && i == 0; j++ {
				d, _, again := buildRunModule(b, bb.bin, bb.args(bk.Addr, way.repo, "none", way.scanner))
				way.s.warm = append(way.s.warm, d)
				if again != digest {
					b.Errorf("warm rebuild of %s: digest %s, the cold build's %s", way.repo, again, digest)
				}
			}
			bk.Stop()
		}
	}

	med := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	span := func(d []time.Duration) string {
		return fmt.Sprintf("%s [%s-%s]", Seconds(med(d)), Seconds(slices.Min(d)), Seconds(slices.Max(d)))
	}
	overhead := func(with, without time.Duration) string {
		return fmt.Sprintf("%+.1f%%", (with.Seconds()/without.Seconds()-1)*100)
	}
	Table(fmt.Sprintf("docker_image_build of BenchmarkBuild's Dockerfile with and without the SPDX SBOM attestation; median [min-max] of %d cold, %d warm; goal: under +20%%",
		sbomColdRuns, sbomWarmRuns), [][]string{
		{"", "cold", "warm", "cold overhead", "warm overhead", "cold time vs without"},
		{"sbom: false", span(without.cold), span(without.warm), "", "", "1.00x"},
		{"sbom: true (imagegate-sbom-scanner)", span(with.cold), span(with.warm),
			overhead(med(with.cold), med(without.cold)), overhead(med(with.warm), med(without.warm)),
			Ratio(med(with.cold).Seconds(), med(without.cold).Seconds())},
		{"scanner image (one platform)", MiB(scannerBytes), "", "", "", ""},
	})
	b.ReportMetric(med(without.cold).Seconds(), "nosbom-cold-s")
	b.ReportMetric(med(with.cold).Seconds(), "sbom-cold-s")
	b.ReportMetric(med(without.warm).Seconds(), "nosbom-warm-s")
	b.ReportMetric(med(with.warm).Seconds(), "sbom-warm-s")
	b.ReportMetric((med(with.cold).Seconds()/med(without.cold).Seconds()-1)*100, "cold-overhead-%")
}

// benchScannerLayout builds imagegate-sbom-scanner for this machine as the
// release tree does and writes its image's OCI layout; it returns the
// layout and the size of its blobs.
func benchScannerLayout(b *testing.B) (string, int64) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "imagegate-sbom-scanner")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/imagegate/imagegate/cmd/imagegate-sbom-scanner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the scanner: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "layout")
	if _, err := sbomimage.Write(out, "bench", time.Unix(0, 0), map[string]string{build.Native(): bin}); err != nil {
		b.Fatal(err)
	}
	var size int64
	err := filepath.Walk(filepath.Join(out, "blobs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return out, size
}

// scannerIndexDigest is the digest of the one index of the scanner's
// layout, the generator docker_image_build names.
func scannerIndexDigest(dir string) (string, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return "", err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(im.Manifests) != 1 {
		return "", fmt.Errorf("%s lists %d images, want the scanner's one", dir, len(im.Manifests))
	}
	return im.Manifests[0].Digest.String(), nil
}

// benchCheckSBOM checks that the build of repo (digest) carries an SPDX
// attestation when sbom is true and none otherwise: the benchmark measures
// what it says.
func benchCheckSBOM(b *testing.B, bb *buildBench, repo, digest string, sbom bool) {
	ref, err := name.ParseReference(bb.reg.Host + "/" + repo + "@" + digest)
	if err != nil {
		b.Fatal(err)
	}
	desc, err := remote.Get(ref, distOptions(bb.reg)...)
	if err != nil {
		b.Fatal(err)
	}
	found := false
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			b.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range im.Manifests {
			if d.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
				continue
			}
			att, err := idx.Image(d.Digest)
			if err != nil {
				b.Fatal(err)
			}
			m, err := att.Manifest()
			if err != nil {
				b.Fatal(err)
			}
			for _, l := range m.Layers {
				found = found || l.Annotations["in-toto.io/predicate-type"] == "https://spdx.dev/Document"
			}
		}
	}
	if found != sbom {
		b.Fatalf("%s (sbom: %v): SPDX attestation found: %v", repo, sbom, found)
	}
}
