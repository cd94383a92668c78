package publish_test

import (
	"context"
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

// TestContainerSigning: container_image_upload signs what it stages in
// each image's registry (a referrer on imagegate's registry, cosign's tag on
// Debian's docker-registry), container_image_promote verifies every
// registry's images before writing any, and refuses a tampered change tag
// with nothing promoted; bad keys, a bad image list and a registry that
// refuses signatures fail naming the parameter or the image, with nothing
// staged and no key in the message.
func TestContainerSigning(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	ours, dist := transfertest.Ours(t), transfertest.Distribution(t)
	keyPEM, _, pub := signingKey(t)
	_, _, otherPub := signingKey(t)
	ctx := context.Background()
	creds := publish.ContainerCredentials{
		"a.example.org": {Username: ours.Username, Password: ours.Password, Repository: "^a.example.org/",
			RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + ours.Host, Cert: string(ours.CA)}},
		"b.example.org": {Username: dist.Username, Password: dist.Password, Repository: "^b.example.org/",
			RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + dist.Host, Cert: string(dist.CA)}},
	}
	images := func(change string) []zuul.Image {
		return []zuul.Image{{Repository: "a.example.org/myorg/app", Registry: "a.example.org", Tags: []string{"latest"}},
			{Repository: "b.example.org/myorg/lib", Registry: "b.example.org", Tags: []string{"latest"}}}
	}
	push := func(change string) (string, string) {
		return brReg.Push(t, "a.example.org/myorg/app:latest", image(t, change, "app-"+change, time.Now())),
			brReg.Push(t, "b.example.org/myorg/lib:latest", index(t, change, "lib-"+change, time.Now()))
	}
	upload := func(change string, opts ...publish.Option) (*publish.ContainerUploadResult, error) {
		return publish.UploadContainer(ctx, publish.ContainerUploadSpec{Images: images(change), Credentials: creds,
			Zuul: zuul.Vars{Change: change, Patchset: "1", Pipeline: "gate"}, Promote: true, Method: publish.MethodTag,
			BuildsetRegistry: br, Jobs: 8}, opts...)
	}
	promote := func(change string, v publish.ContainerVerification, opts ...publish.Option) (*publish.ContainerPromoteResult, error) {
		if v.GatePipeline == "" {
			v.GatePipeline = "gate"
		}
		return publish.ContainerPromote(ctx, publish.ContainerPromoteSpec{Images: images(change), Credentials: creds,
			Zuul: zuul.Vars{Change: change, Patchset: "1", Pipeline: "promote"}, Method: publish.MethodTag, Jobs: 8},
			append(opts, publish.WithVerification(v.Verification()))...)
	}
	signing := publish.WithSigning(publish.ContainerSigning{Key: keyPEM}.Signing())

	appDigest, libDigest := push("21")
	res, err := upload("21", signing)
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string]string{}
	for _, s := range res.Signed {
		forms[s.Repository+"@"+s.Digest] = s.Form
	}
	if len(res.Signed) != 4 || forms["a.example.org/myorg/app@"+appDigest] != publish.FormReferrer ||
		forms["b.example.org/myorg/lib@"+libDigest] != publish.FormTag {
		t.Errorf("signed %+v", res.Signed)
	}
	// Another key: refused, nothing promoted.
	_, err = promote("21", publish.ContainerVerification{Key: otherPub})
	checkError(t, err, "", "nothing was promoted", "container_images[0] (a.example.org/myorg/app)",
		"container_images[1] (b.example.org/myorg/lib)", "signature check failed", "container_image_verify_key")
	if ours.Digest(t, "myorg/app:latest") != "" || dist.Digest(t, "myorg/lib:latest") != "" {
		t.Fatal("promoted with a failed check")
	}
	pres, err := promote("21", publish.ContainerVerification{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	if len(pres.Verified) != 2 || pres.Verified[0].SignatureForm != publish.FormReferrer || pres.Verified[1].SignatureForm != publish.FormTag {
		t.Errorf("verified %+v", pres.Verified)
	}
	if ours.Digest(t, "myorg/app:latest") != appDigest || dist.Digest(t, "myorg/lib:latest") != libDigest {
		t.Error("not promoted")
	}

	// The next change: its lib's change tag replaced by another image.
	push("22")
	if _, err := upload("22", signing); err != nil {
		t.Fatal(err)
	}
	dist.Push(t, "myorg/lib:change_22_latest", image(t, "22", "tampered", time.Now()))
	_, err = promote("22", publish.ContainerVerification{Key: pub})
	checkError(t, err, "", "nothing was promoted", "container_images[1] (b.example.org/myorg/lib)", "signature check failed", "no signature of")
	if strings.Contains(err.Error(), "container_images[0]") {
		t.Errorf("the good image is blamed: %v", err)
	}
	if ours.Digest(t, "myorg/app:latest") != appDigest || dist.Digest(t, "myorg/lib:latest") != libDigest {
		t.Error("a final tag moved")
	}
	// Checking only the app (in the other registry) lets the promote
	// through.
	if _, err := promote("22", publish.ContainerVerification{Key: pub, Images: []string{"a.example.org/myorg/app"}}, publish.WithCheckMode(true)); err != nil {
		t.Errorf("checking the app only: %v", err)
	}

	t.Run("bad input", func(t *testing.T) {
		push("23")
		for _, tc := range []struct {
			name string
			opts []publish.Option
			want []string
		}{
			{"garbage key", []publish.Option{publish.WithSigning(publish.ContainerSigning{Key: "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"}.Signing())},
				[]string{"container_image_signing_key", "unusable key"}},
			{"password only", []publish.Option{publish.WithSigning(publish.ContainerSigning{Password: "pw-secret"}.Signing())},
				[]string{"container_image_signing_key_password is set but container_image_signing_key is empty"}},
			{"registry refuses signatures", []publish.Option{signing,
				publish.WithTransportWrapper(func(rt http.RoundTripper) http.RoundTripper { return refuseSignatures{rt} })},
				[]string{"no tag was written", "container_images[0] (a.example.org/myorg/app)", "both as an OCI 1.1 referrer", "container_images[1] (b.example.org/myorg/lib)", "MANIFEST_INVALID"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := upload("23", tc.opts...)
				checkError(t, err, keyPEM, append([]string{"nothing was uploaded"}, tc.want...)...)
				for _, s := range []string{"bm90IGEga2V5", "pw-secret"} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("the error shows the key or password: %v", err)
					}
				}
				if ours.Digest(t, "myorg/app:change_23_latest") != "" || dist.Digest(t, "myorg/lib:change_23_latest") != "" {
					t.Error("staged unsigned")
				}
			})
		}
		_, err := promote("21", publish.ContainerVerification{Key: pub, Images: []string{"a.example.org/myorg/nope"}})
		checkError(t, err, "", "container_image_verify_images names \"a.example.org/myorg/nope\", which is not a repository of container_images")
		_, err = promote("21", publish.ContainerVerification{Key: "not a key"})
		checkError(t, err, "", "nothing was promoted", "container_image_verify_key")
	})
}

// signReferrer stores a signature of dgst with s as an OCI 1.1 referrer in
// reg's repo.
func signReferrer(t *testing.T, reg registry, repo, dgst string, s *sign.Signer) {
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
	d, err := r.Head(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.SignImage(reg.Host+"/"+repo, dgst)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := sign.ReferrerManifest(sign.ArtifactTypeSignature, sign.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, []sign.Blob{sig.Blob()})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range enc.Blobs {
		if _, err := r.PushBlob(ctx, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := r.PutSubject(ctx, enc.Digest, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body}); err != nil || got != dgst {
		t.Fatalf("storing the signature: OCI-Subject %q, %v", got, err)
	}
}

// TestContainerPromoteIntermediateVerified: the intermediate-registry
// method checks the gate build's image where it lies, in the intermediate
// registry (signature and provenance, as referrers there), before copying
// anything; the copy carries both to a target without the referrers API,
// as cosign's .sig and .att tags.
func TestContainerPromoteIntermediateVerified(t *testing.T) {
	t.Parallel()
	ir, dst := transfertest.Ours(t), transfertest.Distribution(t)
	api := newBuildsAPI(t)
	_, signer, pub := signingKey(t)
	_, _, otherPub := signingKey(t)
	d := ir.Push(t, "quay.io/myorg/app:gateuuid_latest", index(t, "12", "gated", time.Now()))
	signReferrer(t, ir, "quay.io/myorg/app", d, signer)
	attach(t, ir, "quay.io/myorg/app", d, signer, provenance(t, d, "12", "3", "gate", "gateuuid"), true)
	irHost, irPort := splitHostPort(t, ir.Host)
	api.set(gateBuild("gateuuid", "2026-01-01T11:00:00", "SUCCESS",
		zuul.NewContainerImageArtifact(irHost, irPort, "quay.io/myorg/app", "latest", "gateuuid_latest")))
	spec := publish.ContainerPromoteSpec{
		Images: []zuul.Image{{Repository: "quay.io/myorg/app", Registry: "quay.io", Tags: []string{"latest"}}},
		Credentials: publish.ContainerCredentials{
			"quay.io": {Username: dst.Username, Password: dst.Password, Repository: "^quay.io/myorg/",
				RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + dst.Host, Cert: string(dst.CA)}},
			ir.Host: {Username: ir.Username, Password: ir.Password, RegistryEndpoint: publish.RegistryEndpoint{Cert: string(ir.CA)}},
		},
		Zuul:   zuul.Vars{Change: "12", Patchset: "3", Pipeline: "promote"},
		Method: publish.MethodIntermediateRegistry, API: api.srv.URL + "/api/tenant/example", APICert: api.cert(),
		Pipeline: "gate", Job: "app-upload", Jobs: 8,
	}
	ctx := context.Background()
	verify := func(key string) publish.Option {
		return publish.WithVerification(publish.ContainerVerification{Key: key, Provenance: true, GatePipeline: "gate"}.Verification())
	}
	_, err := publish.ContainerPromote(ctx, spec, verify(otherPub))
	checkError(t, err, "", "nothing was promoted", "container_images[0] (quay.io/myorg/app)", ir.Host+"/quay.io/myorg/app", "signature check failed")
	if dst.Digest(t, "myorg/app:latest") != "" {
		t.Fatal("promoted with a failed check")
	}
	res, err := publish.ContainerPromote(ctx, spec, verify(pub))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Verified) != 1 || res.Verified[0].ProvenanceBuilds[0] != "gateuuid" || res.Verified[0].SignatureForm != publish.FormReferrer {
		t.Errorf("verified %+v", res.Verified)
	}
	if dst.Digest(t, "myorg/app:latest") != d {
		t.Fatal("not promoted")
	}
	for _, tag := range []string{sign.SignatureTag(d), sign.AttestationTag(d)} {
		if dst.Digest(t, "myorg/app:"+tag) == "" {
			t.Errorf("%s was not carried to the target", tag)
		}
	}
}
