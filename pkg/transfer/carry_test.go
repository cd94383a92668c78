package transfer_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// repo opens a repository for manifest-level work.
func repo(t *testing.T, c *transfer.Client, r transfertest.Registry, name string) *transfer.Repository {
	t.Helper()
	rc, err := c.Repository(context.Background(), r.Host, name, true)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// put stores enc (its blobs, then the manifest by digest or under tag) and
// returns the OCI-Subject answer.
func put(t *testing.T, r *transfer.Repository, ref string, enc *sign.Encoded) string {
	t.Helper()
	ctx := context.Background()
	for _, b := range enc.Blobs {
		if _, err := r.PushBlob(ctx, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if ref == "" {
		ref = enc.Digest
	}
	got, err := r.PutSubject(ctx, ref, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func layer(mediaType, data string) sign.Blob {
	return sign.Blob{Descriptor: sign.Descriptor{MediaType: mediaType, Digest: digestOf(data), Size: int64(len(data))}, Data: []byte(data)}
}

// TestCopyCarriesReferrers: WithReferrers carries an image's referrers
// (signature, attestation, another artifact) and cosign's tags, of the
// index and of its platform images, byte for byte to a registry with the
// referrers API, and into cosign's tags and the referrers tag schema on
// one without (Debian's docker-registry 2.8); a copy run again writes
// nothing, and a copy without the option carries nothing.
func TestCopyCarriesReferrers(t *testing.T) {
	t.Parallel()
	src, ours, dist := transfertest.Ours(t), transfertest.Ours(t), transfertest.Distribution(t)
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(41, 20_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(42, 20_000)))
	idxDigest := transfertest.Push(t, src, src.Host+"/myorg/app:latest", idx)
	im, _ := idx.IndexManifest()
	child := im.Manifests[0]
	c := newClient(t, append(endpoints(src, ours, dist), transfer.WithReferrers())...)
	sr := repo(t, c, src, "myorg/app")

	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	subject := sign.Descriptor{MediaType: oci.MediaTypeOCIIndex, Digest: idxDigest, Size: int64(len(raw))}
	sig, _ := sign.ReferrerManifest(sign.ArtifactTypeSignature, subject, []sign.Blob{layer(sign.MediaTypeSimpleSigning, `{"sig":1}`)})
	att, _ := sign.ReferrerManifest(sign.ArtifactTypeInToto, subject, []sign.Blob{layer(sign.MediaTypeDSSE, `{"att":1}`)})
	sbom, _ := sign.ReferrerManifest("application/spdx+json", subject, []sign.Blob{layer("application/spdx+json", `{"spdx":1}`)})
	childSubject := sign.Descriptor{MediaType: string(child.MediaType), Digest: child.Digest.String(), Size: child.Size}
	childSig, _ := sign.ReferrerManifest(sign.ArtifactTypeSignature, childSubject, []sign.Blob{layer(sign.MediaTypeSimpleSigning, `{"sig":2}`)})
	for _, enc := range []*sign.Encoded{sig, att, sbom, childSig} {
		put(t, sr, "", enc)
	}
	// A signature under cosign's tag too, as cosign sign without OCI 1.1
	// writes it.
	tagSig, _ := sign.TagManifest(nil, []sign.Blob{layer(sign.MediaTypeSimpleSigning, `{"sig":3}`)})
	put(t, sr, sign.SignatureTag(idxDigest), tagSig)

	ctx := context.Background()
	copyTo := func(dst transfertest.Registry, c *transfer.Client) transfer.Result {
		t.Helper()
		r, err := c.Copy(ctx, src.Host+"/myorg/app:latest", dst.Host+"/myorg/app:change_1_latest")
		if err != nil {
			t.Fatal(err)
		}
		return *r
	}

	t.Run("referrers API", func(t *testing.T) {
		if r := copyTo(ours, c); r.Referrers != 5 {
			t.Errorf("carried %d manifests, want 5", r.Referrers)
		}
		dr := repo(t, c, ours, "myorg/app")
		refs, err := dr.Referrers(ctx, idxDigest, "")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range refs {
			got[r.Digest] = true
		}
		for _, enc := range []*sign.Encoded{sig, att, sbom} {
			if !got[enc.Digest] {
				t.Errorf("referrer %s not carried (have %v)", enc.Digest, got)
			}
			checkSame(t, src, src.Host+"/myorg/app@"+enc.Digest, ours, ours.Host+"/myorg/app@"+enc.Digest)
		}
		if refs, _ := dr.Referrers(ctx, child.Digest.String(), ""); len(refs) != 1 || refs[0].Digest != childSig.Digest {
			t.Errorf("platform image's referrers %+v", refs)
		}
		checkSame(t, src, src.Host+"/myorg/app:"+sign.SignatureTag(idxDigest), ours, ours.Host+"/myorg/app:"+sign.SignatureTag(idxDigest))
		if r := copyTo(ours, c); r.Referrers != 0 || r.Changed {
			t.Errorf("second copy wrote %d referrers (changed %v)", r.Referrers, r.Changed)
		}
	})

	t.Run("tag scheme", func(t *testing.T) {
		// The signature referrer becomes the .sig tag, cosign's .sig tag
		// then merges into it, the attestation becomes the .att tag, the
		// SBOM goes into the referrers tag schema, the platform image's
		// signature into its .sig tag.
		if r := copyTo(dist, c); r.Referrers != 5 {
			t.Errorf("carried %d manifests, want 5", r.Referrers)
		}
		dr := repo(t, c, dist, "myorg/app")
		layers := func(tag string) []string {
			t.Helper()
			m, err := dr.Get(ctx, tag)
			if err != nil {
				t.Fatalf("%s: %v", tag, err)
			}
			sm, _ := sign.ParseManifest(m.Body)
			var out []string
			for _, l := range sm.Layers {
				out = append(out, l.Digest)
			}
			return out
		}
		if got := strings.Join(layers(sign.SignatureTag(idxDigest)), " "); !strings.Contains(got, digestOf(`{"sig":1}`)) || !strings.Contains(got, digestOf(`{"sig":3}`)) {
			t.Errorf(".sig tag layers %s, want the referrer's and the tag's", got)
		}
		if got := layers(sign.AttestationTag(idxDigest)); len(got) != 1 || got[0] != digestOf(`{"att":1}`) {
			t.Errorf(".att tag layers %v", got)
		}
		if got := layers(sign.SignatureTag(child.Digest.String())); len(got) != 1 || got[0] != digestOf(`{"sig":2}`) {
			t.Errorf("platform .sig tag layers %v", got)
		}
		m, err := dr.Get(ctx, strings.Replace(idxDigest, ":", "-", 1))
		if err != nil {
			t.Fatal(err)
		}
		var fallback struct{ Manifests []transfer.Referrer }
		if err := json.Unmarshal(m.Body, &fallback); err != nil || len(fallback.Manifests) != 1 ||
			fallback.Manifests[0].Digest != sbom.Digest || fallback.Manifests[0].ArtifactType != "application/spdx+json" {
			t.Errorf("referrers tag schema index %s (%v)", m.Body, err)
		}
		checkSame(t, src, src.Host+"/myorg/app@"+sbom.Digest, dist, dist.Host+"/myorg/app@"+sbom.Digest)
		if r := copyTo(dist, c); r.Referrers != 0 || r.Changed {
			t.Errorf("second copy wrote %d referrers (changed %v)", r.Referrers, r.Changed)
		}
	})

	t.Run("without the option", func(t *testing.T) {
		plain := newClient(t, endpoints(src, ours, dist)...)
		r, err := plain.Copy(ctx, src.Host+"/myorg/app:latest", ours.Host+"/other/app:latest")
		if err != nil {
			t.Fatal(err)
		}
		if r.Referrers != 0 {
			t.Errorf("carried %d", r.Referrers)
		}
		if refs, _ := repo(t, c, ours, "other/app").Referrers(ctx, idxDigest, ""); len(refs) != 0 {
			t.Errorf("referrers carried without WithReferrers: %+v", refs)
		}
	})
}

func digestOf(s string) string { return digest.FromString(s).String() }
