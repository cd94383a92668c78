package publish_test

import (
	"context"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestUploadCarriesAttestations: provenance attached in the buildset
// registry (as the build attaches it, an OCI 1.1 referrer) reaches the
// target at upload, beside the upload's signature, and promote's
// provenance check finds it there: as the same referrer on a registry
// with the referrers API, in cosign's .att tag on Debian's docker-registry.
// An upload run again carries nothing more.
func TestUploadCarriesAttestations(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	keyPEM, signer, pub := signingKey(t)
	z := zuul.Vars{Change: "11", Patchset: "3", Pipeline: "gate"}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		target registry
	}{
		{"referrers", transfertest.Ours(t)},
		{"tag scheme", transfertest.Distribution(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "carry/" + map[bool]string{true: "ours", false: "dist"}[tc.name == "referrers"]
			d := brReg.Push(t, repo+":latest", image(t, "11", "carry-"+tc.name, time.Now()))
			attach(t, brReg, repo, d, signer, provenance(t, d, "11", "3", "gate", "build-at-build"), true)
			images := []zuul.Image{{Repository: repo, Tags: []string{"latest"}}}
			spec := publish.UploadSpec{Images: images, Target: publish.Target{Registry: tc.target.Host, Cert: string(tc.target.CA)},
				Credentials: publish.Credentials{Username: tc.target.Username, Password: tc.target.Password},
				Zuul:        z, Promote: true, BuildsetRegistry: br, Jobs: 8}
			if _, err := publish.Upload(ctx, spec, publish.WithSigning(publish.Signing{Key: keyPEM})); err != nil {
				t.Fatal(err)
			}
			att := tc.target.Digest(t, repo+":"+sign.AttestationTag(d))
			if (tc.name == "referrers") == (att != "") {
				t.Errorf("cosign's .att tag on the target: %q", att)
			}
			again, err := publish.Upload(ctx, spec, publish.WithSigning(publish.Signing{Key: keyPEM}))
			if err != nil || again.Changed {
				t.Errorf("second upload: changed %v, %v", again.Changed, err)
			}
			res, err := publish.Promote(ctx, publish.PromoteSpec{Images: images, Target: spec.Target, Credentials: spec.Credentials, Zuul: z, Jobs: 8},
				publish.WithVerification(publish.Verification{Key: pub, Provenance: true, GatePipeline: "gate"}))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Verified) != 1 || len(res.Verified[0].ProvenanceBuilds) != 1 || res.Verified[0].ProvenanceBuilds[0] != "build-at-build" {
				t.Errorf("verified %+v", res.Verified)
			}
			if tc.target.Digest(t, repo+":latest") != d {
				t.Error("not promoted")
			}
		})
	}
}
