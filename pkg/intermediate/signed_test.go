package intermediate_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestSignedRoundTrip: an image signed in the buildset registry (an OCI
// 1.1 signature referrer of the index, cosign's .att tag holding its
// provenance) keeps both through the intermediate registry into a later
// buildset registry, where they verify with the key; through an
// intermediate registry with the referrers API the referrer arrives byte
// for byte, through Debian's docker-registry (none) as cosign's .sig tag.
func TestSignedRoundTrip(t *testing.T) {
	t.Parallel()
	signer, _ := newSigner(t)
	for _, tc := range []struct {
		name     string
		ir       func(testing.TB) transfertest.Registry
		referrer bool // the signature arrives as a referrer
	}{
		{"imagegate intermediate", transfertest.Ours, true},
		{"distribution intermediate", transfertest.Distribution, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			br1, br2, irReg := transfertest.Ours(t), transfertest.Ours(t), tc.ir(t)
			idx := transfertest.Index(t, true,
				transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(11, 20_000)))
			dgst := transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", idx)
			raw, _ := idx.RawManifest()

			c, err := transfer.New(transfer.WithEndpoint(br1.Endpoint()), transfer.WithEndpoint(br2.Endpoint()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r1, err := c.Repository(ctx, br1.Host, "myorg/app", true)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := signer.SignImage("registry.example.org/myorg/app", dgst)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := sign.ReferrerManifest(sign.ArtifactTypeSignature,
				sign.Descriptor{MediaType: oci.MediaTypeOCIIndex, Digest: dgst, Size: int64(len(raw))}, []sign.Blob{sig.Blob()})
			putEncoded(t, r1, ref.Digest, ref)
			statement, _ := json.Marshal(map[string]any{"_type": sign.StatementV01, "predicateType": sign.PredicateSLSAv02,
				"subject":   []map[string]any{{"name": "app", "digest": map[string]string{"sha256": strings.TrimPrefix(dgst, "sha256:")}}},
				"predicate": map[string]any{}})
			env, err := signer.Attest(statement)
			if err != nil {
				t.Fatal(err)
			}
			att, _ := sign.TagManifest(nil, []sign.Blob{env})
			putEncoded(t, r1, sign.AttestationTag(dgst), att)

			ir := irAt(irReg, "127.0.0.1")
			vars := zuul.Vars{Build: "feedfacefeedface"}
			images := []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}}
			pushed, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: vars, Registries: registries(buildset(br1), ir), DockerImages: images})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := intermediate.Pull(ctx, intermediate.PullSpec{Registries: registries(buildset(br2), ir), Artifacts: pushed.Artifacts}); err != nil {
				t.Fatal(err)
			}

			r2, err := c.Repository(ctx, br2.Host, "myorg/app", false)
			if err != nil {
				t.Fatal(err)
			}
			if d, err := r2.Head(ctx, "latest"); err != nil || d.Digest != dgst {
				t.Fatalf("pulled %s (%v), want %s", d.Digest, err, dgst)
			}
			// The signature, where it arrived.
			var sigManifest *transfer.Manifest
			if refs, err := r2.Referrers(ctx, dgst, sign.ArtifactTypeSignature); err != nil {
				t.Fatal(err)
			} else if tc.referrer {
				if len(refs) != 1 || refs[0].Digest != ref.Digest {
					t.Fatalf("referrers %+v, want %s", refs, ref.Digest)
				}
				sigManifest, err = r2.Get(ctx, ref.Digest)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if len(refs) != 0 {
					t.Errorf("referrers %+v through a registry without the API", refs)
				}
				sigManifest, err = r2.Get(ctx, sign.SignatureTag(dgst))
				if err != nil {
					t.Fatal(err)
				}
			}
			verify := func(m *transfer.Manifest, check func(sign.Descriptor, []byte) error) {
				t.Helper()
				sm, err := sign.ParseManifest(m.Body)
				if err != nil || len(sm.Layers) != 1 {
					t.Fatalf("%s: %v", m.Body, err)
				}
				b, err := r2.Blob(ctx, sm.Layers[0].Digest)
				if err != nil {
					t.Fatal(err)
				}
				if err := check(sm.Layers[0], b); err != nil {
					t.Error(err)
				}
			}
			v := signer.Verifier()
			verify(sigManifest, func(l sign.Descriptor, b []byte) error { return v.VerifyImage(l, b, dgst) })
			am, err := r2.Get(ctx, sign.AttestationTag(dgst))
			if err != nil {
				t.Fatal(err)
			}
			if am.Digest != att.Digest {
				t.Errorf(".att tag is %s, want %s byte for byte", am.Digest, att.Digest)
			}
			verify(am, func(_ sign.Descriptor, b []byte) error { _, err := v.VerifyAttestation(b, dgst); return err })

			// Pulled again: nothing to do.
			again, err := intermediate.Pull(ctx, intermediate.PullSpec{Registries: registries(buildset(br2), ir), Artifacts: pushed.Artifacts})
			if err != nil || again.Changed {
				t.Errorf("second pull: changed %v, %v", again.Changed, err)
			}
			if _, err := r2.Get(ctx, sign.SignatureTag(dgst)); tc.referrer && !errors.Is(err, oci.ErrNotFound) {
				t.Errorf("a .sig tag appeared beside the referrer: %v", err)
			}
		})
	}
}

func putEncoded(t *testing.T, r *transfer.Repository, ref string, enc *sign.Encoded) {
	t.Helper()
	ctx := context.Background()
	for _, b := range enc.Blobs {
		if _, err := r.PushBlob(ctx, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.PutSubject(ctx, ref, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body}); err != nil {
		t.Fatal(err)
	}
}
