package intermediate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func newSigner(t *testing.T) (*sign.Signer, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	s, err := sign.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return s, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// ahead is an image a change ahead pushed to the intermediate registry,
// as its artifact names it.
type ahead struct {
	art    zuul.Artifact
	digest string
}

// pushAhead pushes a one-platform index as the build build of change
// change,patchset pushes it to the intermediate registry, and returns its
// artifact, with what Zuul adds.
func pushAhead(t *testing.T, irReg transfertest.Registry, ir *zuul.IntermediateRegistry, repo, build, change, patchset, job string, seed uint64) ahead {
	t.Helper()
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(seed, 4_000)))
	d := irReg.Push(t, repo+":"+build+"_latest", idx)
	a := zuul.NewContainerImageArtifact(ir.Host, ir.Port, repo, "latest", build+"_latest")
	a.Project, a.Change, a.Patchset, a.Job = "myorg/"+repo, change, patchset, job
	return ahead{art: a, digest: d}
}

// signAhead stores, in the intermediate registry, s's signature of the
// image (as a referrer where the registry has the API, else under cosign's
// .sig tag) and, unless statement is nil, its signed attestation under
// cosign's .att tag.
func signAhead(t *testing.T, irReg transfertest.Registry, repo, dgst string, s *sign.Signer, statement []byte) {
	t.Helper()
	ctx := context.Background()
	c, err := transfer.New(transfer.WithEndpoint(irReg.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Repository(ctx, irReg.Host, repo, true)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.SignImage(irReg.Host+"/"+repo, dgst)
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.Head(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Referrers(ctx, dgst, ""); err == nil {
		ref, _ := sign.ReferrerManifest(sign.ArtifactTypeSignature, sign.Descriptor{MediaType: d.MediaType, Digest: dgst, Size: d.Size}, []sign.Blob{sig.Blob()})
		putEncoded(t, r, ref.Digest, ref)
	} else if errors.Is(err, oci.ErrNotFound) {
		tm, _ := sign.TagManifest(nil, []sign.Blob{sig.Blob()})
		putEncoded(t, r, sign.SignatureTag(dgst), tm)
	} else {
		t.Fatal(err)
	}
	if statement == nil {
		return
	}
	env, err := s.Attest(statement)
	if err != nil {
		t.Fatal(err)
	}
	att, _ := sign.TagManifest(nil, []sign.Blob{env})
	putEncoded(t, r, sign.AttestationTag(dgst), att)
}

// provenanceOf is an SLSA v0.2 provenance of dgst as BuildKit records a
// Zuul build's labels.
func provenanceOf(t *testing.T, dgst, change, patchset, pipeline, build string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"_type": sign.StatementV01, "predicateType": sign.PredicateSLSAv02,
		"subject": []map[string]any{{"name": "app", "digest": map[string]string{"sha256": strings.TrimPrefix(dgst, "sha256:")}}},
		"predicate": map[string]any{"invocation": map[string]any{"parameters": map[string]any{"frontend": "dockerfile.v0",
			"args": map[string]string{"label:" + sign.LabelChange: change, "label:" + sign.LabelPatchset: patchset,
				"label:" + sign.LabelPipeline: pipeline, "label:" + sign.LabelBuild: build}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPullVerified: with verify_key (and verify_provenance), an image of a
// change ahead signed with the key, whose provenance names the artifact's
// change, patchset and the build that pushed it, is checked in the
// intermediate registry and copied; one unsigned, signed with another
// key, or with the provenance of another change is refused, the task
// failing before anything is copied, naming the artifact, its change and
// job, the image and the check. Through an intermediate registry with the
// referrers API and through one without (Debian's docker-registry).
func TestPullVerified(t *testing.T) {
	t.Parallel()
	signer, pub := newSigner(t)
	other, _ := newSigner(t)
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
			irReg, brReg := tc.ir(t), transfertest.Ours(t)
			ir := irAt(irReg, "127.0.0.1")
			good := pushAhead(t, irReg, ir, "myorg/app", "b0a1", "41", "2", "build-app", 1)
			signAhead(t, irReg, "myorg/app", good.digest, signer, provenanceOf(t, good.digest, "41", "2", "gate", "b0a1"))
			unsigned := pushAhead(t, irReg, ir, "myorg/lib", "c0d2", "42", "1", "build-lib", 2)
			wrongKey := pushAhead(t, irReg, ir, "myorg/tool", "d0e3", "42", "1", "build-tool", 3)
			signAhead(t, irReg, "myorg/tool", wrongKey.digest, other, nil)
			otherChange := pushAhead(t, irReg, ir, "myorg/web", "e0f4", "42", "1", "build-web", 4)
			signAhead(t, irReg, "myorg/web", otherChange.digest, signer, provenanceOf(t, otherChange.digest, "7", "1", "gate", "e0f4"))
			otherBuild := pushAhead(t, irReg, ir, "myorg/api", "f0a5", "42", "1", "build-api", 5)
			signAhead(t, irReg, "myorg/api", otherBuild.digest, signer, provenanceOf(t, otherBuild.digest, "42", "1", "gate", "another-build"))

			spec := func(arts ...ahead) intermediate.PullSpec {
				s := intermediate.PullSpec{Registries: registries(buildset(brReg), ir),
					PullVerification: intermediate.PullVerification{Key: pub, Provenance: true, Pipeline: "gate"}}
				for _, a := range arts {
					s.Artifacts = append(s.Artifacts, a.art)
				}
				return s
			}
			nothingCopied := func(t *testing.T) {
				t.Helper()
				for _, r := range []string{"myorg/app", "myorg/lib", "myorg/tool", "myorg/web", "myorg/api"} {
					if d := brReg.Digest(t, r+":latest"); d != "" {
						t.Errorf("%s:latest is in the buildset registry (%s) after a refused pull", r, d)
					}
				}
			}
			for _, bad := range []struct {
				name string
				a    ahead
				want []string
			}{
				{"unsigned", unsigned, []string{`artifact "myorg/lib:latest" (change 42, patchset 1, job build-lib)`, "myorg/lib:c0d2_latest",
					unsigned.digest, "signature check failed", "verify_key (key ", "no signature of"}},
				{"another key", wrongKey, []string{`artifact "myorg/tool:latest" (change 42, patchset 1, job build-tool)`,
					"signature check failed", "none of the 1 signatures"}},
				{"another change", otherChange, []string{`artifact "myorg/web:latest" (change 42, patchset 1, job build-web)`,
					"provenance check failed", "change 42, patchset 1, pipeline gate and build e0f4", `a provenance names change "7", patchset "1"`}},
				{"another build", otherBuild, []string{`artifact "myorg/api:latest"`, "provenance check failed", `a provenance names build "another-build"`}},
			} {
				// The good image beside the bad one: neither is copied.
				res, err := intermediate.Pull(ctx, spec(good, bad.a))
				if err == nil {
					t.Fatalf("%s: pulled %+v", bad.name, res.Images)
				}
				for _, w := range append(bad.want, "1 of 2 images of changes ahead failed verification", "nothing was copied") {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", bad.name, err, w)
					}
				}
				if strings.Contains(err.Error(), `"myorg/app:latest"`) {
					t.Errorf("%s: the good image is named in %q", bad.name, err)
				}
				nothingCopied(t)
			}

			// The signed one alone: checked, then copied by the digest checked.
			res, err := intermediate.Pull(ctx, spec(good))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Verified) != 1 || res.Verified[0].Digest != good.digest || res.Verified[0].SignatureForm != tc.form ||
				res.Verified[0].Change != "41" || res.Verified[0].Job != "build-app" ||
				len(res.Verified[0].ProvenanceBuilds) != 1 || res.Verified[0].ProvenanceBuilds[0] != "b0a1" {
				t.Errorf("verified %+v", res.Verified)
			}
			if len(res.Images) != 1 || !strings.HasSuffix(res.Images[0].Source, "@"+good.digest) || !res.Changed {
				t.Errorf("images %+v", res.Images)
			}
			if d := brReg.Digest(t, "myorg/app:latest"); d != good.digest {
				t.Errorf("myorg/app:latest is %q in the buildset registry, want %s", d, good.digest)
			}

			// Signature only (no verify_provenance): the unattested but
			// signed image of another build passes.
			s := spec(otherChange)
			s.Provenance, s.Pipeline = false, ""
			if res, err := intermediate.Pull(ctx, s); err != nil || len(res.Verified) != 1 || len(res.Verified[0].ProvenanceBuilds) != 0 {
				t.Errorf("signature-only pull: %+v, %v", res, err)
			}
		})
	}
}

// TestPullVerifyBadInput: a verify_key that is not a public key, or
// verify_provenance without a key, fails before anything is read, naming
// the parameter; verify_provenance for an artifact without the change
// ahead fails naming the artifact. Nothing is copied.
func TestPullVerifyBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	irReg, brReg := transfertest.Ours(t), transfertest.Ours(t)
	ir, br := irAt(irReg, "127.0.0.1"), buildset(brReg)
	art := zuul.NewContainerImageArtifact(ir.Host, ir.Port, "myorg/app", "latest", "b0a1_latest")
	_, pub := newSigner(t)
	for _, tc := range []struct {
		name string
		v    intermediate.PullVerification
		want []string
	}{
		{"not PEM", intermediate.PullVerification{Key: "not a key"}, []string{"verify_key"}},
		{"private key", intermediate.PullVerification{Key: "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"}, []string{"verify_key"}},
		{"provenance without key", intermediate.PullVerification{Provenance: true}, []string{"verify_provenance", "verify_key", "is empty"}},
		{"no change ahead", intermediate.PullVerification{Key: pub, Provenance: true}, []string{`artifact "myorg/app:latest"`, "verify_provenance needs the change and patchset"}},
	} {
		_, err := intermediate.Pull(ctx, intermediate.PullSpec{Registries: registries(br, ir), Artifacts: []zuul.Artifact{art}, PullVerification: tc.v})
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
		if d := brReg.Digest(t, "myorg/app:latest"); d != "" {
			t.Errorf("%s: myorg/app:latest copied (%s)", tc.name, d)
		}
	}
}
