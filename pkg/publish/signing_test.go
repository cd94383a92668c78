package publish_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// signingKey is a fresh ECDSA P-256 key: its PKCS #8 PEM, signer and
// public key PEM.
func signingKey(t testing.TB) (string, *sign.Signer, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	s, err := sign.ParsePrivateKey([]byte(p), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, s, string(s.PublicKeyPEM())
}

// provenance is an SLSA v0.2 statement about dgst in BuildKit's layout,
// naming a Zuul build.
func provenance(t testing.TB, dgst, change, patchset, pipeline, build string) []byte {
	t.Helper()
	hex := strings.TrimPrefix(dgst, "sha256:")
	b, err := json.Marshal(map[string]any{
		"_type": sign.StatementV01, "predicateType": sign.PredicateSLSAv02,
		"subject": []map[string]any{{"name": "app", "digest": map[string]string{"sha256": hex}}},
		"predicate": map[string]any{"invocation": map[string]any{"parameters": map[string]any{"frontend": "dockerfile.v0",
			"args": map[string]string{"label:" + sign.LabelChange: change, "label:" + sign.LabelPatchset: patchset,
				"label:" + sign.LabelPipeline: pipeline, "label:" + sign.LabelBuild: build}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attach stores a signed attestation of dgst in repo: an in-toto referrer
// when referrer is true, cosign's .att tag otherwise.
func attach(t testing.TB, reg registry, repo, dgst string, s *sign.Signer, statement []byte, referrer bool) {
	t.Helper()
	ctx := context.Background()
	c, err := transfer.New(transfer.WithEndpoint(reg.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Repository(ctx, reg.Host, repo, true)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := s.Attest(statement)
	if err != nil {
		t.Fatal(err)
	}
	var enc *sign.Encoded
	ref := sign.AttestationTag(dgst)
	if referrer {
		d, err := r.Head(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		enc, err = sign.ReferrerManifest(sign.ArtifactTypeInToto, sign.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, []sign.Blob{layer})
		if err != nil {
			t.Fatal(err)
		}
		ref = enc.Digest
	} else if enc, err = sign.TagManifest(nil, []sign.Blob{layer}); err != nil {
		t.Fatal(err)
	}
	for _, b := range enc.Blobs {
		if _, err := r.PushBlob(ctx, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Put(ctx, ref, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body}); err != nil {
		t.Fatal(err)
	}
}

// TestSignedUploadVerifiedPromote stages signed images on both kinds of
// registry (ours serves referrers; Debian's docker-registry 2.8 does not,
// so signatures go under cosign's tag), attaches provenance, and promotes
// with both checks on.
func TestSignedUploadVerifiedPromote(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		target func(testing.TB) registry
		form   string
	}{
		{"referrers", transfertest.Ours, publish.FormReferrer},
		{"tag scheme", transfertest.Distribution, publish.FormTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			brReg, br := buildsetRegistry(t)
			target := tc.target(t)
			app := image(t, "42", "app-"+tc.name, time.Now())
			multi := index(t, "42", "multi-"+tc.name, time.Now())
			appDigest := brReg.Push(t, "myorg/app:latest", app)
			multiDigest := brReg.Push(t, "myorg/multi:latest", multi)
			keyPEM, signer, pub := signingKey(t)
			z := zuul.Vars{Change: "42", Patchset: "3", Pipeline: "gate", Build: "b-upload"}
			spec := publish.UploadSpec{
				Images:      []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}, {Repository: "myorg/multi", Tags: []string{"latest"}}},
				Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
				Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
				Zuul:        z, Promote: true, BuildsetRegistry: br, Jobs: 8,
			}
			signing := publish.WithSigning(publish.Signing{Key: keyPEM, KeyParam: "docker_image_signing_key"})
			ctx := context.Background()
			res, err := publish.Upload(ctx, spec, signing, publish.WithCheckMode(true))
			if err != nil {
				t.Fatal(err)
			}
			// The image, the index and its two platform images.
			if len(res.Signed) != 4 || target.Digest(t, "myorg/app:"+sign.SignatureTag(appDigest)) != "" {
				t.Fatalf("check mode: signed %+v", res.Signed)
			}
			res, err = publish.Upload(ctx, spec, signing)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Signed) != 4 {
				t.Fatalf("signed %+v", res.Signed)
			}
			for _, s := range res.Signed {
				if s.Form != tc.form || !s.Changed {
					t.Errorf("signed %+v, want form %s", s, tc.form)
				}
			}
			if tc.form == publish.FormTag && target.Digest(t, "myorg/app:"+sign.SignatureTag(appDigest)) == "" {
				t.Errorf("no %s tag", sign.SignatureTag(appDigest))
			}
			res, err = publish.Upload(ctx, spec, signing)
			if err != nil {
				t.Fatal(err)
			}
			if res.Changed {
				t.Errorf("second upload changed: %+v", res.Signed)
			}

			// Provenance of the image, and of each platform image of
			// the index (as BuildKit writes it).
			attach(t, target, "myorg/app", appDigest, signer, provenance(t, appDigest, "42", "3", "gate", "b-build"), tc.form == publish.FormReferrer)
			for _, s := range res.Signed {
				if s.Repository == "myorg/multi" && s.Digest != multiDigest {
					attach(t, target, "myorg/multi", s.Digest, signer, provenance(t, s.Digest, "42", "3", "gate", "b-build"), false)
				}
			}
			pspec := publish.PromoteSpec{Images: spec.Images, Target: spec.Target, Credentials: spec.Credentials, Zuul: z, Jobs: 8}
			verify := publish.WithVerification(publish.Verification{Key: pub, Provenance: true, GatePipeline: "gate", KeyParam: "docker_image_verify_key"})
			pres, err := publish.Promote(ctx, pspec, verify)
			if err != nil {
				t.Fatal(err)
			}
			if len(pres.Verified) != 2 {
				t.Fatalf("verified %+v", pres.Verified)
			}
			for _, v := range pres.Verified {
				want := 1
				if v.Repository == "myorg/multi" {
					want = 2
				}
				if v.SignatureForm != tc.form || len(v.ProvenanceBuilds) != want || v.ProvenanceBuilds[0] != "b-build" {
					t.Errorf("verified %+v", v)
				}
			}
			if target.Digest(t, "myorg/app:latest") != appDigest || target.Digest(t, "myorg/multi:latest") != multiDigest {
				t.Error("final tags not promoted")
			}
		})
	}
}

// TestPromoteRefusesTampered: a staged image replaced (unsigned, signed
// with another key, or with provenance of another change or subject) is
// refused, and no image of the promote is promoted.
func TestPromoteRefusesTampered(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Ours(t)
	keyPEM, signer, pub := signingKey(t)
	otherPEM, otherSigner, _ := signingKey(t)
	z := zuul.Vars{Change: "7", Patchset: "1", Pipeline: "gate"}
	brReg.Push(t, "myorg/good:latest", image(t, "7", "good", time.Now()))
	brReg.Push(t, "myorg/bad:latest", image(t, "7", "bad", time.Now()))
	images := []zuul.Image{{Repository: "myorg/good", Tags: []string{"latest"}}, {Repository: "myorg/bad", Tags: []string{"latest"}}}
	spec := publish.UploadSpec{Images: images, Target: publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: publish.Credentials{Username: target.Username, Password: target.Password}, Zuul: z, Promote: true, BuildsetRegistry: br, Jobs: 8}
	ctx := context.Background()
	if _, err := publish.Upload(ctx, spec, publish.WithSigning(publish.Signing{Key: keyPEM})); err != nil {
		t.Fatal(err)
	}
	pspec := publish.PromoteSpec{Images: images, Target: spec.Target, Credentials: spec.Credentials, Zuul: z, Jobs: 8}
	verify := func(prov bool) publish.Option {
		return publish.WithVerification(publish.Verification{Key: pub, Provenance: prov, GatePipeline: "gate", KeyParam: "docker_image_verify_key"})
	}
	refused := func(t *testing.T, prov bool, want ...string) {
		t.Helper()
		_, err := publish.Promote(ctx, pspec, verify(prov))
		checkError(t, err, "", append([]string{"nothing was promoted", "docker_images[1] (myorg/bad)"}, want...)...)
		if strings.Contains(err.Error(), "myorg/good") {
			t.Errorf("the good image is blamed: %v", err)
		}
		for _, r := range []string{"myorg/good:latest", "myorg/bad:latest"} {
			if target.Digest(t, r) != "" {
				t.Errorf("%s was promoted", r)
			}
		}
	}
	// A different manifest under the change tag, unsigned...
	tampered := image(t, "7", "tampered", time.Now())
	target.Push(t, "myorg/bad:change_7_latest", tampered)
	t.Run("unsigned", func(t *testing.T) { refused(t, false, "signature check failed", "no signature of") })
	// ...then signed with another key.
	brReg.Push(t, "myorg/bad:latest", tampered)
	bad := spec
	bad.Images = images[1:]
	if _, err := publish.Upload(ctx, bad, publish.WithSigning(publish.Signing{Key: otherPEM})); err != nil {
		t.Fatal(err)
	}
	t.Run("another key", func(t *testing.T) {
		refused(t, false, "signature check failed", "none of the 1 signatures", "verifies with key")
	})

	// Signed with the right key, but the provenance names another change,
	// or is about another image.
	if _, err := publish.Upload(ctx, bad, publish.WithSigning(publish.Signing{Key: keyPEM})); err != nil {
		t.Fatal(err)
	}
	goodDigest := target.Digest(t, "myorg/good:change_7_latest")
	badDigest := target.Digest(t, "myorg/bad:change_7_latest")
	attach(t, target, "myorg/good", goodDigest, signer, provenance(t, goodDigest, "7", "1", "gate", "b1"), true)
	attach(t, target, "myorg/bad", badDigest, signer, provenance(t, badDigest, "8", "1", "gate", "b1"), true)
	t.Run("another change", func(t *testing.T) { refused(t, true, "provenance check failed", `names change "8", patchset "1"`) })
	attach(t, target, "myorg/bad", badDigest, signer, provenance(t, goodDigest, "7", "1", "gate", "b1"), false)
	t.Run("another subject", func(t *testing.T) {
		refused(t, true, "provenance check failed", "signed for another image", "its subjects are")
	})
	attach(t, target, "myorg/bad", badDigest, otherSigner, provenance(t, badDigest, "7", "1", "gate", "b1"), true)
	t.Run("provenance by another key", func(t *testing.T) { refused(t, true, "provenance check failed", "does not verify with the key") })

	// With the right provenance, both are promoted; the check can be
	// limited to some images.
	attach(t, target, "myorg/bad", badDigest, signer, provenance(t, badDigest, "7", "1", "gate", "b2"), true)
	res, err := publish.Promote(ctx, pspec, publish.WithCheckMode(true), publish.WithVerification(publish.Verification{
		Key: pub, Provenance: true, GatePipeline: "gate", Images: []string{"myorg/bad"}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Verified) != 1 || res.Verified[0].Repository != "myorg/bad" || res.Verified[0].ProvenanceBuilds[0] != "b2" {
		t.Errorf("verified %+v", res.Verified)
	}
	if _, err := publish.Promote(ctx, pspec, verify(true)); err != nil {
		t.Fatal(err)
	}
	if target.Digest(t, "myorg/bad:latest") != badDigest {
		t.Error("not promoted")
	}
}

// refuseSignatures is a transport that refuses every signature manifest,
// as a registry that takes neither referrers nor cosign's tags would.
type refuseSignatures struct{ next http.RoundTripper }

func (r refuseSignatures) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") && req.GetBody != nil {
		body, _ := req.GetBody()
		b, _ := io.ReadAll(body)
		if bytes.Contains(b, []byte(sign.MediaTypeSimpleSigning)) {
			msg := `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"artifacts are not accepted"}]}`
			return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(msg)), Request: req}, nil
		}
	}
	return r.next.RoundTrip(req)
}

func TestSigningBadInput(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Distribution(t)
	brReg.Push(t, "myorg/app:latest", image(t, "9", "app", time.Now()))
	keyPEM, _, _ := signingKey(t)
	spec := publish.UploadSpec{Images: []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
		Zuul:        zuul.Vars{Change: "9", Pipeline: "gate"}, Promote: true, BuildsetRegistry: br, Jobs: 8}
	d := publish.DockerSigning{}
	ctx := context.Background()
	for _, tc := range []struct {
		name, key, password string
		wrap                func(http.RoundTripper) http.RoundTripper
		want                []string
	}{
		{name: "garbage key", key: "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
			want: []string{"docker_image_signing_key", "unusable key", "parsing the PRIVATE KEY"}},
		{name: "not PEM", key: "hunter2-secret-key", want: []string{"docker_image_signing_key", "no PEM block"}},
		{name: "password only", password: "pw-secret", want: []string{"docker_image_signing_key_password is set but docker_image_signing_key is empty"}},
		{name: "registry refuses signatures", key: keyPEM, wrap: func(rt http.RoundTripper) http.RoundTripper { return refuseSignatures{rt} },
			want: []string{"no tag was written", "docker_images[0] (myorg/app)", "signing sha256:", "MANIFEST_INVALID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.Key, d.Password = tc.key, tc.password
			opts := []publish.Option{publish.WithSigning(d.Signing())}
			if tc.wrap != nil {
				opts = append(opts, publish.WithTransportWrapper(tc.wrap))
			}
			_, err := publish.Upload(ctx, spec, opts...)
			checkError(t, err, "", append([]string{"nothing was uploaded"}, tc.want...)...)
			for _, secret := range []string{tc.key, tc.password, "bm90IGEga2V5"} {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows the key or password: %v", err)
				}
			}
			if target.Digest(t, "myorg/app:change_9_latest") != "" {
				t.Error("the image was staged unsigned")
			}
		})
	}
}

// TestSigningRefused: a registry with the referrers API that refuses
// signature manifests both as referrers and under cosign's tag fails the
// upload, naming both, with nothing staged.
func TestSigningRefused(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Ours(t)
	brReg.Push(t, "myorg/app:latest", image(t, "9", "app", time.Now()))
	keyPEM, _, _ := signingKey(t)
	spec := publish.UploadSpec{Images: []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
		Zuul:        zuul.Vars{Change: "9", Pipeline: "gate"}, Promote: true, BuildsetRegistry: br, Jobs: 8}
	_, err := publish.Upload(context.Background(), spec, publish.WithSigning(publish.Signing{Key: keyPEM}),
		publish.WithTransportWrapper(func(rt http.RoundTripper) http.RoundTripper { return refuseSignatures{rt} }))
	checkError(t, err, "", "nothing was uploaded", "docker_images[0] (myorg/app)", "both as an OCI 1.1 referrer", "under cosign's tag sha256-")
	if errors.Is(err, publish.ErrNotSigned) {
		t.Errorf("a refused signature is reported as a failed check: %v", err)
	}
	if target.Digest(t, "myorg/app:change_9_latest") != "" {
		t.Error("the image was staged unsigned")
	}
}
