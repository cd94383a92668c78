package publish_test

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// buildkitIndex is an index as BuildKit pushes it with provenance: the
// image and an attestation manifest holding statement.
func buildkitIndex(t *testing.T, img v1.Image, statement []byte) v1.ImageIndex {
	t.Helper()
	imgDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	att, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       static.NewLayer(statement, types.MediaType(sign.PayloadTypeInToto)),
		Annotations: map[string]string{"in-toto.io/predicate-type": sign.PredicateSLSAv02},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": imgDigest.String()}}})
}

// TestUploadSignsBuildKitProvenance: a signed upload signs the provenance
// in the index's attestation manifest and attaches it to the platform
// image, so that promote's provenance check passes; a statement about
// another image than the one its attestation manifest names fails the
// upload, nothing written.
func TestUploadSignsBuildKitProvenance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Ours(t)
	keyPEM, _, pub := signingKey(t)
	img := image(t, "42", "attested", time.Now())
	imgDigest, _ := img.Digest()
	z := zuul.Vars{Change: "42", Patchset: "3", Pipeline: "gate", Build: "b-upload"}
	spec := publish.UploadSpec{Images: []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
		Zuul:        z, Promote: true, BuildsetRegistry: br, Jobs: 4}
	signing := publish.WithSigning(publish.Signing{Key: keyPEM, KeyParam: "docker_image_signing_key"})

	other := image(t, "42", "another image", time.Now())
	otherDigest, _ := other.Digest()
	bad := buildkitIndex(t, img, provenance(t, otherDigest.String(), "42", "3", "gate", "b-build"))
	brReg.Push(t, "myorg/app:latest", bad)
	_, err := publish.Upload(ctx, spec, signing)
	if !errors.Is(err, sign.ErrSubject) {
		t.Fatalf("upload of a provenance about another image: %v; want %v", err, sign.ErrSubject)
	}
	checkError(t, err, keyPEM, "docker_images[0] (myorg/app)", "not about image "+imgDigest.String())
	if d := target.Digest(t, "myorg/app:change_42_latest"); d != "" {
		t.Errorf("the refused upload staged %s", d)
	}

	good := buildkitIndex(t, img, provenance(t, imgDigest.String(), "42", "3", "gate", "b-build"))
	brReg.Push(t, "myorg/app:latest", good)
	res, err := publish.Upload(ctx, spec, signing)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Attested) != 1 || res.Attested[0].Digest != imgDigest.String() || res.Attested[0].Form != publish.FormReferrer {
		t.Fatalf("attested %+v: want the platform image's provenance as a referrer", res.Attested)
	}
	if target.Digest(t, "myorg/app:"+sign.AttestationTag(imgDigest.String())) == "" {
		t.Errorf("no %s tag for cosign verify-attestation", sign.AttestationTag(imgDigest.String()))
	}
	pspec := publish.PromoteSpec{Images: spec.Images, Target: spec.Target, Credentials: spec.Credentials, Zuul: z, Jobs: 4}
	pres, err := publish.Promote(ctx, pspec, publish.WithVerification(publish.Verification{Key: pub, Provenance: true,
		GatePipeline: "gate", KeyParam: "docker_image_verify_key"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(pres.Verified) != 1 || len(pres.Verified[0].ProvenanceBuilds) != 1 || pres.Verified[0].ProvenanceBuilds[0] != "b-build" {
		t.Errorf("verified %+v", pres.Verified)
	}
}
