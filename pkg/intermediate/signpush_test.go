package intermediate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/verify"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// keyPair is a fresh ECDSA key pair as PEM: the private key (PKCS #8) and
// the public key (cosign.pub).
func keyPair(t *testing.T) (private, public string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// buildkitIndex is an index as BuildKit pushes it with provenance: the
// platform image and an attestation manifest holding statement about it.
func buildkitIndex(t *testing.T, img v1.Image, statement []byte) v1.ImageIndex {
	t.Helper()
	d, err := img.Digest()
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
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": d.String()}}})
}

// TestPushSigned: intermediate_registry_push with signing_key signs the
// pushed index and its platform image in the intermediate registry, and
// attests the platform image's BuildKit provenance, before the
// <build>_<tag> tag is written, so that a later change's Pull with
// verify_key and verify_provenance accepts the image; a second push
// changes nothing. Through an intermediate registry with the referrers API
// (signatures as referrers) and Debian's docker-registry (cosign's tags).
func TestPushSigned(t *testing.T) {
	t.Parallel()
	private, public := keyPair(t)
	for _, tc := range []struct {
		name string
		ir   func(testing.TB) transfertest.Registry
		form string
	}{
		{"imagegate intermediate", transfertest.Ours, verify.FormReferrer},
		{"distribution intermediate", transfertest.Distribution, verify.FormTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			br1, br2, irReg := transfertest.Ours(t), transfertest.Ours(t), tc.ir(t)
			ir := irAt(irReg, "127.0.0.1")
			img := transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(21, 8_000))
			imgDigest, _ := img.Digest()
			idx := buildkitIndex(t, img, provenanceOf(t, imgDigest.String(), "41", "2", "gate", "b0a1"))
			dgst := transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", idx)

			spec := intermediate.PushSpec{Zuul: zuul.Vars{Build: "b0a1"}, Registries: registries(buildset(br1), ir),
				DockerImages: []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}},
				PushSigning:  intermediate.PushSigning{Key: private}}
			pushed, err := intermediate.Push(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			signed := map[string]intermediate.SignedImage{}
			for _, s := range pushed.Signed {
				signed[s.Digest] = s
			}
			for _, d := range []string{dgst, imgDigest.String()} {
				if s, ok := signed[d]; !ok || s.Form != tc.form || !s.Changed || s.Repository != "myorg/app" {
					t.Errorf("%s: signed %+v", d, pushed.Signed)
				}
			}
			if len(pushed.Signed) != 2 || len(pushed.Attested) != 1 || pushed.Attested[0].Digest != imgDigest.String() || !pushed.Attested[0].Changed {
				t.Errorf("signed %+v, attested %+v", pushed.Signed, pushed.Attested)
			}
			if d := irReg.Digest(t, "myorg/app:b0a1_latest"); d != dgst {
				t.Errorf("myorg/app:b0a1_latest is %q in the intermediate registry, want %s", d, dgst)
			}

			// Again: every signature and attestation is found in place.
			again, err := intermediate.Push(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if again.Changed || len(again.Signed) != 2 || len(again.Attested) != 1 {
				t.Errorf("second push: changed %v, signed %+v, attested %+v", again.Changed, again.Signed, again.Attested)
			}
			for _, s := range append(again.Signed, again.Attested...) {
				if s.Changed {
					t.Errorf("second push signed again: %+v", s)
				}
			}

			// A later change pulls it with the public key: accepted.
			art := pushed.Artifacts[0]
			art.Project, art.Change, art.Patchset, art.Job = "myorg/app", "41", "2", "build-app"
			res, err := intermediate.Pull(ctx, intermediate.PullSpec{Registries: registries(buildset(br2), ir),
				Artifacts:        []zuul.Artifact{art},
				PullVerification: intermediate.PullVerification{Key: public, Provenance: true, Pipeline: "gate"}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Verified) != 1 || res.Verified[0].Digest != dgst || res.Verified[0].SignatureForm != tc.form ||
				len(res.Verified[0].ProvenanceBuilds) != 1 || res.Verified[0].ProvenanceBuilds[0] != "b0a1" {
				t.Errorf("verified %+v", res.Verified)
			}
			if d := br2.Digest(t, "myorg/app:latest"); d != dgst {
				t.Errorf("myorg/app:latest is %q in the later buildset registry, want %s", d, dgst)
			}
		})
	}
}

// TestPushSigningBadInput: a signing key that does not parse, or a
// password without a key, fails the push before anything is written,
// naming the parameter and never showing the key or password.
func TestPushSigningBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	br, irReg := transfertest.Ours(t), transfertest.Ours(t)
	transfertest.Push(t, br, br.Host+"/myorg/app:latest", transfertest.Image(t, true, transfertest.Layer(31, 2_000)))
	const secret = "s3cret-passw0rd"
	badKey := "-----BEGIN PRIVATE KEY-----\nTm90QUtleVNlY3JldE1hdGVyaWFs\n-----END PRIVATE KEY-----\n"
	_, public := keyPair(t)
	for _, tc := range []struct {
		name string
		s    intermediate.PushSigning
		want []string
	}{
		{"not a key", intermediate.PushSigning{Key: badKey, Password: secret}, []string{"signing_key: ", "cosign.key"}},
		{"a public key", intermediate.PushSigning{Key: public}, []string{"signing_key: "}},
		{"password without key", intermediate.PushSigning{Password: secret}, []string{"signing_key_password is set but signing_key is empty"}},
	} {
		var redacted []string
		_, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: zuul.Vars{Build: "b0a1"}, Registries: registries(buildset(br), irAt(irReg, "127.0.0.1")),
			DockerImages: []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}}, PushSigning: tc.s},
			intermediate.WithRedact(func(s string) { redacted = append(redacted, s) }))
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
		for _, s := range []string{secret, "Tm90QUtleVNlY3JldE1hdGVyaWFs", strings.Split(public, "\n")[1]} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q shows the secret", tc.name, err)
			}
		}
		if tc.s.Key != "" && !slices.Contains(redacted, tc.s.Key) {
			t.Errorf("%s: the key was not handed to the redact function", tc.name)
		}
		if d := irReg.Digest(t, "myorg/app:b0a1_latest"); d != "" {
			t.Errorf("%s: myorg/app:b0a1_latest pushed (%s)", tc.name, d)
		}
	}
}
