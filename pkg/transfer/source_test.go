package transfer_test

import (
	"context"
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/ocilayout"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// TestCopyFromLayout: images of an OCI image layout, named by their
// ref.name annotation, are copied to a registry with their digests; an
// absent name is not found.
func TestCopyFromLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := transfertest.Image(t, true, transfertest.Layer(51, 20_000))
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(52, 9000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(53, 9000)))
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocilayout.RefName: "org/app:1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{ocilayout.RefName: "org/multi:1"})); err != nil {
		t.Fatal(err)
	}
	dst := transfertest.Distribution(t)
	c := newClient(t, transfer.WithEndpoint(dst.Endpoint()))
	rs, err := c.CopyAll(context.Background(), []transfer.Job{
		{SrcLayout: dir, Src: "org/app:1", Dst: dst.Host + "/org/app:change_1_1"},
		{SrcLayout: dir, Src: "org/multi:1", Dst: dst.Host + "/org/multi:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{testDigest(t, img), testDigest(t, idx)} {
		if rs[i].Digest != want || !rs[i].Changed {
			t.Errorf("job %d: %+v, want digest %s", i, rs[i], want)
		}
	}
	if _, d := transfertest.Manifest(t, dst, dst.Host+"/org/multi:1"); d != testDigest(t, idx) {
		t.Errorf("target has %s", d)
	}
	_, err = c.Copy(context.Background(), "org/none:1", dst.Host+"/org/none:1")
	if err == nil {
		t.Error("a reference without a registry was accepted")
	}
	_, err = c.CopyAll(context.Background(), []transfer.Job{{SrcLayout: dir, Src: "org/none:1", Dst: dst.Host + "/org/none:1"}})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("absent name: %v; want ErrNotFound", err)
	}
}

func testDigest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
