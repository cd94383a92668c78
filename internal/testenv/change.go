package testenv

import (
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ChangeImage returns an image as docker_image_build leaves one for a
// change: BusyboxImage with the layers extra (tar bytes) on top, for
// linux/arch, created at created, and labelled org.zuul-ci.change and
// org.zuul-ci.change_url as the build labels it (no labels when change is
// ""). Upload and promote tests stage and publish such images; the
// creation time is what a stale-tag sweep reads.
func ChangeImage(t testing.TB, change, arch string, created time.Time, extra ...[]byte) v1.Image {
	t.Helper()
	img := BusyboxImage(t, extra...)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	cf.Created = v1.Time{Time: created}
	if change != "" {
		cf.Config.Labels = map[string]string{"org.zuul-ci.change": change, "org.zuul-ci.change_url": "https://review.example/" + change}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// ChangeIndex returns a two-platform OCI index (linux/amd64 and
// linux/arm64) of ChangeImage images, each with the layers layers(arch) on
// top, as a multi-arch build of a change leaves it.
func ChangeIndex(t testing.TB, change string, created time.Time, layers func(arch string) [][]byte) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		adds = append(adds, mutate.IndexAddendum{Add: ChangeImage(t, change, arch, created, layers(arch)...),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// DigestOf returns the digest of an image or an index.
func DigestOf(t testing.TB, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
