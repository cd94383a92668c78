package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/sbomimage"
)

// scannerImagePlatforms are the platforms of the SBOM scanner's index
// (dist.sh's SBOM_SCANNER_ARCHES).
var scannerImagePlatforms = []string{"linux/amd64", "linux/arm64"}

// checkScannerImage checks the SBOM scanner's image in the release tree
// (roles/ensure-buildkit/files/sbom-scanner, where ensure-buildkit installs
// it from): an OCI layout holding one index named by the release's
// version, over one image per platform of scannerImagePlatforms, each
// running the scanner (its command, nothing else: BuildKit runs it with
// the BUILDKIT_SCAN_* variables) from a single layer that holds a static
// imagegate-sbom-scanner built for the platform, the same binary as
// bin/linux_<arch>/.
func checkScannerImage(t *testing.T, dist string) {
	t.Helper()
	var plats []string
	for _, pi := range releaseIndex(t, dist, filepath.Join(dist, "roles", "ensure-buildkit", "files", "sbom-scanner"), "the SBOM scanner") {
		plat, img := pi.plat, pi.img
		plats = append(plats, plat)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if run := append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...); cf.OS+"/"+cf.Architecture != plat ||
			!slices.Equal(run, []string{sbomimage.BinPath}) {
			t.Errorf("scanner %s: config %s/%s, entrypoint %q, cmd %q; want %s running %s", plat, cf.OS, cf.Architecture,
				cf.Config.Entrypoint, cf.Config.Cmd, plat, sbomimage.BinPath)
		}
		found, bin := singleLayer(t, "scanner "+plat, img, strings.TrimPrefix(sbomimage.BinPath, "/"))
		if h := found[strings.TrimPrefix(sbomimage.BinPath, "/")]; h != nil && h.Mode&0o111 == 0 {
			t.Errorf("scanner %s: %s has mode %o, not executable", plat, sbomimage.BinPath, h.Mode)
		}
		if bin == nil {
			t.Errorf("scanner %s: the image lacks %s", plat, sbomimage.BinPath)
			continue
		}
		arch := strings.TrimPrefix(plat, "linux/")
		if shipped, err := os.ReadFile(filepath.Join(dist, "bin", "linux_"+arch, "imagegate-sbom-scanner")); err != nil || !bytes.Equal(shipped, bin) {
			t.Errorf("scanner %s: the image's binary is not bin/linux_%s/imagegate-sbom-scanner (%v)", plat, arch, err)
		}
		checkStaticBinary(t, plat, bin, "imagegate-sbom-scanner")
	}
	if !slices.Equal(plats, scannerImagePlatforms) {
		t.Errorf("the scanner image's index holds %v, want %v", plats, scannerImagePlatforms)
	}
}

// spdxPackages reads the SPDX SBOM BuildKit attached to ref (repo:tag) in
// r, whose index holds the image and its attestation manifest, and returns
// the packages it lists as "name version"; it fails t if there is none or
// the statement's subject is not the image.
func spdxPackages(t *testing.T, r *registrytest.Registry, ref string) []string {
	t.Helper()
	n, err := name.ParseReference(r.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(n, remoteOpts(r)...)
	if err != nil {
		t.Fatalf("reading %s as an index: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			continue
		}
		att, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := att.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range m.Layers {
			if l.Annotations["in-toto.io/predicate-type"] != "https://spdx.dev/Document" {
				continue
			}
			layer, err := att.LayerByDigest(l.Digest)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := layer.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Subject []struct {
					Digest map[string]string `json:"digest"`
				} `json:"subject"`
				Predicate struct {
					Packages []struct {
						Name    string `json:"name"`
						Version string `json:"versionInfo"`
					} `json:"packages"`
				} `json:"predicate"`
			}
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatalf("%s: the SPDX statement: %v\n%.600s", ref, err, b)
			}
			// One subject per name the image was pushed under, each the
			// image the attestation manifest names.
			want := d.Annotations["vnd.docker.reference.digest"]
			if len(st.Subject) == 0 {
				t.Errorf("%s: the SPDX statement has no subject, want the image %s", ref, want)
			}
			for _, s := range st.Subject {
				if "sha256:"+s.Digest["sha256"] != want {
					t.Errorf("%s: the SPDX statement's subjects %v, want the image %s", ref, st.Subject, want)
					break
				}
			}
			var pkgs []string
			for _, p := range st.Predicate.Packages {
				pkgs = append(pkgs, p.Name+" "+p.Version)
			}
			return pkgs
		}
	}
	t.Fatalf("%s has no SPDX attestation: %+v", ref, im.Manifests)
	return nil
}

// hostPackage returns the paragraph of this machine's dpkg database for
// pkg (a real entry for an image's database) and its version.
func hostPackage(t *testing.T, pkg string) (paragraph, version string) {
	t.Helper()
	b, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(string(b), "\n\n") {
		if strings.HasPrefix(p, "Package: "+pkg+"\n") {
			for _, line := range strings.Split(p, "\n") {
				if v, ok := strings.CutPrefix(line, "Version: "); ok {
					return p + "\n", v
				}
			}
			t.Fatalf("%s has no Version", pkg)
		}
	}
	t.Fatalf("%s is not installed here (tests/setup/deps.sh installs it)", pkg)
	return "", ""
}
