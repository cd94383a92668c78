package scratchimage

import (
	"archive/tar"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestWriteLayout: two platforms' images written as an OCI layout read
// back as one index named by the tag, with the given digest, over an
// image per platform in order, each one layer holding the entries as
// added (dated created) and the config given, on the platform's OS and
// architecture.
func TestWriteLayout(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	config := v1.Config{Cmd: []string{"/bin/tool"}, WorkingDir: "/"}
	x := NewIndex()
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := Image("linux", arch, created, config, func(l *Layer) error {
			if err := l.Dir("bin", 0o755); err != nil {
				return err
			}
			if err := l.File("bin/tool", 0o755, []byte("tool for "+arch)); err != nil {
				return err
			}
			return l.Symlink("bin/alias", "tool")
		})
		if err != nil {
			t.Fatal(err)
		}
		x.Add("linux", arch, img)
	}
	dir := t.TempDir()
	digest, err := x.WriteLayout(dir, "v1")
	if err != nil {
		t.Fatal(err)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || !tm.Manifests[0].MediaType.IsIndex() || tm.Manifests[0].Digest.String() != digest ||
		tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1" {
		t.Fatalf("index.json: %+v; want one index %s named v1", tm.Manifests, digest)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var archs []string
	for _, d := range im.Manifests {
		archs = append(archs, d.Platform.OS+"/"+d.Platform.Architecture)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != d.Platform.OS+"/"+d.Platform.Architecture || !cf.Created.Time.Equal(created) ||
			!slices.Equal(cf.Config.Cmd, config.Cmd) || cf.Config.WorkingDir != "/" {
			t.Errorf("%s: config %s/%s created %v, %+v", d.Platform.Architecture, cf.OS, cf.Architecture, cf.Created, cf.Config)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%d layers (%v), want one", len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		var entries []string
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !h.ModTime.Equal(created) {
				t.Errorf("%s is dated %v", h.Name, h.ModTime)
			}
			b, _ := io.ReadAll(tr)
			entries = append(entries, h.Name+"="+h.Linkname+string(b))
		}
		rc.Close()
		if want := []string{"bin/=", "bin/tool=tool for " + d.Platform.Architecture, "bin/alias=tool"}; !slices.Equal(entries, want) {
			t.Errorf("%s: layer holds %q, want %q", d.Platform.Architecture, entries, want)
		}
	}
	if !slices.Equal(archs, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("the index holds %v", archs)
	}
}
