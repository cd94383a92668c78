package build

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/sbomimage"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// hostPackage is the paragraph of the machine's dpkg database for pkg, a
// real entry for the image's database.
func hostPackage(t *testing.T, pkg string) (paragraph, version string) {
	t.Helper()
	b, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(string(b), "\n\n") {
		if strings.HasPrefix(p, "Package: "+pkg+"\n") {
			m := regexp.MustCompile(`(?m)^Version: (.*)$`).FindStringSubmatch(p)
			if m == nil {
				t.Fatalf("%s has no Version", pkg)
			}
			return p + "\n", m[1]
		}
	}
	t.Fatalf("%s is not installed here (tests/setup/deps.sh installs it)", pkg)
	return "", ""
}

// scannerLayout builds imagegate-sbom-scanner for this machine and its
// image's OCI layout, as dist.sh does for the release tree.
func scannerLayout(t *testing.T) (layout, bin string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "imagegate-sbom-scanner")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/imagegate/imagegate/cmd/imagegate-sbom-scanner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the scanner: %v\n%s", err, out)
	}
	layout = filepath.Join(dir, "layout")
	if _, err := sbomimage.Write(layout, "test", time.Unix(0, 0), map[string]string{Native(): bin}); err != nil {
		t.Fatal(err)
	}
	return layout, bin
}

// spdxOf reads the SPDX statement BuildKit attached to the image of
// repoTag (an index with the image and its attestation manifest) and
// returns the packages it lists as "name version", and the statement's
// subject digests.
func (e *env) spdxOf(t *testing.T, repoTag string) (pkgs []string, subjects []string) {
	t.Helper()
	ref, err := name.ParseReference(e.reg.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, e.remoteOp...)
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
		layers, err := att.Layers()
		if err != nil {
			t.Fatal(err)
		}
		m, err := att.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range layers {
			if m.Layers[i].Annotations["in-toto.io/predicate-type"] != "https://spdx.dev/Document" {
				continue
			}
			rc, err := l.Uncompressed()
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
				t.Fatalf("the SPDX statement: %v\n%s", err, b)
			}
			for _, p := range st.Predicate.Packages {
				pkgs = append(pkgs, p.Name+" "+p.Version)
			}
			for _, s := range st.Subject {
				subjects = append(subjects, "sha256:"+s.Digest["sha256"])
			}
			// The subject is the image manifest the attestation names.
			if want := d.Annotations["vnd.docker.reference.digest"]; len(subjects) == 0 || subjects[0] != want {
				t.Errorf("subjects %v, want the image %s", subjects, want)
			}
			return pkgs, subjects
		}
	}
	t.Fatalf("%s has no SPDX attestation: %+v", repoTag, im.Manifests)
	return nil, nil
}

// TestSBOM builds an image holding real packages (a Debian package
// database entry of this machine and a Go binary with module information:
// the scanner itself) with a real buildkitd and checks the SPDX
// attestation lists them; then the rebuild, sbom: false, a scanner
// failure and a missing scanner.
func TestSBOM(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	layout, bin := scannerLayout(t)
	para, version := hostPackage(t, "busybox-static")
	scanner, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "app/Dockerfile", "FROM scratch\nCOPY rootfs/ /\n")
	e.write(t, "app/rootfs/var/lib/dpkg/status", para)
	e.write(t, "app/rootfs/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
	p := filepath.Join(e.workDir, "app/rootfs/usr/bin/tool")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, scanner, 0o755); err != nil {
		t.Fatal(err)
	}
	image := zuul.Image{Context: "app", Repository: "myorg/sbom", Tags: []string{"latest"}, SBOM: true}
	req := e.request(image)
	req.SBOMScanner = layout

	rep, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, _ := e.spdxOf(t, "myorg/sbom:latest")
	for _, want := range []string{"busybox-static " + version, "github.com/spdx/tools-golang v0.5.7", "github.com/imagegate/imagegate (devel)"} {
		found := false
		for _, p := range pkgs {
			found = found || p == want
		}
		if !found {
			t.Errorf("the SBOM does not list %q: %q", want, pkgs)
		}
	}
	// The scanner went into the buildset registry, by digest.
	if d, err := scannerIndex(layout); err != nil {
		t.Fatal(err)
	} else {
		e.digest(t, ScannerRepository+"@"+d.Digest.String())
	}

	t.Run("rebuild", func(t *testing.T) {
		again, err := Build(context.Background(), *req)
		if err != nil {
			t.Fatal(err)
		}
		if again.Changed || again.Images[0].Digest != rep.Images[0].Digest {
			t.Errorf("unchanged rebuild: changed %v, digest %s then %s", again.Changed, rep.Images[0].Digest, again.Images[0].Digest)
		}
	})

	t.Run("off", func(t *testing.T) {
		off := image
		off.SBOM, off.Repository = false, "myorg/nosbom"
		r := e.request(off)
		r.SBOMScanner = filepath.Join(t.TempDir(), "none")
		if _, err := Build(context.Background(), *r); err != nil {
			t.Fatal(err)
		}
		img := e.image(t, "myorg/nosbom:latest")
		if mt, _ := img.MediaType(); strings.Contains(string(mt), "index") {
			t.Errorf("sbom: false pushed an index (%s)", mt)
		}
	})

	t.Run("scanner failure", func(t *testing.T) {
		e.write(t, "bad/Dockerfile", "FROM scratch\nCOPY status /var/lib/dpkg/status\n")
		e.write(t, "bad/status", "Package: broken\nthis line is not a field\n")
		bad := zuul.Image{Context: "bad", Repository: "myorg/badsbom", Tags: []string{"latest"}, SBOM: true}
		r := e.request(bad)
		r.SBOMScanner = layout
		_, err := Build(context.Background(), *r)
		var ie *ImageError
		if !errors.As(err, &ie) || !strings.Contains(ie.Image, "myorg/badsbom") {
			t.Fatalf("err = %v, want an ImageError naming the image", err)
		}
		if msg := ie.Error() + ie.Step + strings.Join(ie.Output, "\n"); !strings.Contains(msg, "parsing the dpkg database var/lib/dpkg/status") || !strings.Contains(msg, "sbom") {
			t.Errorf("the error does not say the scanner failed and why: %v (step %q, output %q)", err, ie.Step, ie.Output)
		}
		e.absent(t, "myorg/badsbom:latest")
	})

	t.Run("missing scanner", func(t *testing.T) {
		r := e.request(image)
		r.SBOMScanner = filepath.Join(t.TempDir(), "missing")
		r.Images[0].Repository = "myorg/noscanner"
		res, err := Build(context.Background(), *r)
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "no SBOM for docker_images[0] (myorg/noscanner): sbom_scanner "+r.SBOMScanner) || !strings.Contains(w, "sbom: false") {
			t.Errorf("warnings %q, want one naming the image, sbom_scanner and the way out", res.Warnings)
		}
		if mt, _ := e.image(t, "myorg/noscanner:latest").MediaType(); strings.Contains(string(mt), "index") {
			t.Errorf("built without a scanner, the image is an index (%s)", mt)
		}
	})
}
