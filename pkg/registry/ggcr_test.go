package registry_test

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
)

// TestGGCRPushPull pushes a random image and index with
// go-containerregistry's remote client (token auth) and pulls them back.
func TestGGCRPushPull(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	auth := remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})
	tr := remote.WithTransport(reg.Transport())

	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Host + "/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, auth, tr); err != nil {
		t.Fatalf("push: %v", err)
	}
	got, err := remote.Image(ref, tr)
	if err != nil {
		t.Fatalf("anonymous pull: %v", err)
	}
	wantDigest, _ := img.Digest()
	gotDigest, err := got.Digest()
	if err != nil || gotDigest != wantDigest {
		t.Fatalf("pulled digest %v (%v), want %v", gotDigest, err, wantDigest)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}

	idx, err := random.Index(512, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	iref, _ := name.ParseReference(reg.Host + "/team/multi:latest")
	if err := remote.WriteIndex(iref, idx, auth, tr); err != nil {
		t.Fatalf("push index: %v", err)
	}
	gotIdx, err := remote.Index(iref, tr)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := idx.Digest()
	if gd, _ := gotIdx.Digest(); gd != wd {
		t.Fatalf("index digest %v, want %v", gd, wd)
	}

	// Without credentials, pushing is refused.
	if err := remote.Write(ref, img, tr); err == nil {
		t.Fatal("anonymous push succeeded")
	}
}
