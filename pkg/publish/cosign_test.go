package publish_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/cosigntest"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestCosignInterop: what docker_image_upload signs with a key from cosign
// generate-key-pair, cosign verify accepts on the target after promote, on
// both storage forms; what cosign sign and cosign attest make, promote's
// verification accepts.
func TestCosignInterop(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	ours, dist := transfertest.Ours(t), transfertest.Distribution(t)
	cosign := cosigntest.New(t, ours, dist)
	keyFile, pubFile := cosign.KeyPair(t, "cosign")
	key, pub := cosigntest.Read(t, keyFile), cosigntest.Read(t, pubFile)
	if !strings.Contains(key, sign.PEMSigstoreEncrypted) {
		t.Fatalf("cosign.key is not %s", sign.PEMSigstoreEncrypted)
	}
	_, otherPub := cosign.KeyPair(t, "other")
	z := zuul.Vars{Change: "5", Patchset: "2", Pipeline: "gate", Build: "upload-build"}
	ctx := context.Background()
	predicate := filepath.Join(t.TempDir(), "provenance.json")
	pred, _ := json.Marshal(map[string]any{"builder": map[string]string{"id": "https://zuul.example.org/t/main"},
		"buildType": "https://mobyproject.org/buildkit@v1",
		"invocation": map[string]any{"parameters": map[string]any{"frontend": "dockerfile.v0", "args": map[string]string{
			"label:" + sign.LabelChange: "5", "label:" + sign.LabelPatchset: "2",
			"label:" + sign.LabelPipeline: "gate", "label:" + sign.LabelBuild: "gate-build-uuid"}}}})
	if err := os.WriteFile(predicate, pred, 0o600); err != nil {
		t.Fatal(err)
	}

	// cosign's encrypted key without its password, or with another one,
	// fails the upload before anything is sent, naming the parameter and
	// never showing the key.
	brReg.Push(t, "cosign/nopassword:latest", image(t, "5", "nopassword", time.Now()))
	for _, pw := range []string{"", "not-the-password"} {
		_, err := publish.Upload(ctx, publish.UploadSpec{Images: []zuul.Image{{Repository: "cosign/nopassword", Tags: []string{"latest"}}},
			Target: publish.Target{Registry: ours.Host, Cert: string(ours.CA)}, Credentials: publish.Credentials{Username: ours.Username, Password: ours.Password},
			Zuul: z, Promote: true, BuildsetRegistry: br, Jobs: 8},
			publish.WithSigning(publish.DockerSigning{Key: key, Password: pw}.Signing()))
		checkError(t, err, key, "nothing was uploaded", "docker_image_signing_key", "docker_image_signing_key_password")
		if pw != "" && strings.Contains(err.Error(), pw) {
			t.Errorf("the error shows the password: %v", err)
		}
		if ours.Digest(t, "cosign/nopassword:change_5_latest") != "" {
			t.Error("the image was staged unsigned")
		}
	}

	for _, tc := range []struct {
		name   string
		target registry
		form   string
	}{
		{"referrers", ours, publish.FormReferrer},
		{"tag scheme", dist, publish.FormTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "cosign/" + strings.ReplaceAll(tc.name, " ", "")
			brReg.Push(t, repo+"/app:latest", image(t, "5", "app-"+tc.name, time.Now()))
			multiDigest := brReg.Push(t, repo+"/multi:latest", index(t, "5", "multi-"+tc.name, time.Now()))
			images := []zuul.Image{{Repository: repo + "/app", Tags: []string{"latest"}}, {Repository: repo + "/multi", Tags: []string{"latest"}}}
			target := publish.Target{Registry: tc.target.Host, Cert: string(tc.target.CA)}
			creds := publish.Credentials{Username: tc.target.Username, Password: tc.target.Password}
			res, err := publish.Upload(ctx, publish.UploadSpec{Images: images, Target: target, Credentials: creds, Zuul: z,
				Promote: true, BuildsetRegistry: br, Jobs: 8},
				publish.WithSigning(publish.DockerSigning{Key: key, Password: cosigntest.Password}.Signing()))
			if err != nil {
				t.Fatal(err)
			}
			var child string
			for _, s := range res.Signed {
				if s.Form != tc.form {
					t.Errorf("signed %+v, want form %s", s, tc.form)
				}
				if s.Repository == repo+"/multi" && s.Digest != multiDigest {
					child = s.Digest
				}
			}
			// Provenance attached by cosign attest (cosign's .att tag),
			// for the image and for the index itself.
			for _, img := range images {
				d := tc.target.Digest(t, img.Repository+":change_5_latest")
				cosign.Run(t, nil, "attest", "--key", keyFile, "--type", "slsaprovenance", "--predicate", predicate,
					"--tlog-upload=false", "--yes", cosigntest.Alias(tc.target)+"/"+img.Repository+"@"+d)
			}
			pres, err := publish.Promote(ctx, publish.PromoteSpec{Images: images, Target: target, Credentials: creds, Zuul: z, Jobs: 8},
				publish.WithVerification(publish.DockerVerification{Key: pub, Provenance: true, GatePipeline: "gate"}.Verification()))
			if err != nil {
				t.Fatal(err)
			}
			if len(pres.Verified) != 2 || pres.Verified[0].ProvenanceBuilds[0] != "gate-build-uuid" {
				t.Errorf("verified %+v", pres.Verified)
			}

			// cosign verifies the final tags on the target.
			for _, img := range images {
				final := cosigntest.Alias(tc.target) + "/" + img.Repository + ":latest"
				cosign.Run(t, nil, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--experimental-oci11", final)
				if tc.form == publish.FormTag {
					cosign.Run(t, nil, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", final)
				}
				cosign.Run(t, nil, "verify-attestation", "--key", pubFile, "--type", "slsaprovenance", "--insecure-ignore-tlog=true", final)
				// With another key cosign refuses: on the tag form "no
				// matching signatures"; in OCI 1.1 mode a referrer that
				// does not verify sends cosign on to the (absent) tag, and
				// it says "no signatures found".
				out := cosign.Fails(t, "verify", "--key", otherPub, "--insecure-ignore-tlog=true", "--experimental-oci11", final)
				if !strings.Contains(out, "no matching signatures") && !strings.Contains(out, "invalid signature") &&
					!(tc.form == publish.FormReferrer && strings.Contains(out, "no signatures found")) {
					t.Errorf("cosign verify with another key: %s", out)
				}
			}
			// A platform image of the index is signed too.
			cosign.Run(t, nil, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--experimental-oci11",
				cosigntest.Alias(tc.target)+"/"+repo+"/multi@"+child)

			// cosign sign --key: promote's verification accepts it.
			brReg.Push(t, repo+"/bycosign:latest", image(t, "5", "bycosign-"+tc.name, time.Now()))
			byCosign := []zuul.Image{{Repository: repo + "/bycosign", Tags: []string{"latest"}}}
			if _, err := publish.Upload(ctx, publish.UploadSpec{Images: byCosign, Target: target, Credentials: creds, Zuul: z,
				Promote: true, BuildsetRegistry: br, Jobs: 8}); err != nil {
				t.Fatal(err)
			}
			d := tc.target.Digest(t, repo+"/bycosign:change_5_latest")
			args := []string{"sign", "--key", keyFile, "--tlog-upload=false", "--yes"}
			var env []string
			if tc.form == publish.FormReferrer {
				args = append(args, "--registry-referrers-mode=oci-1-1")
				env = []string{"COSIGN_EXPERIMENTAL=1"}
			}
			cosign.Run(t, env, append(args, cosigntest.Alias(tc.target)+"/"+repo+"/bycosign@"+d)...)
			if tc.form == publish.FormReferrer && tc.target.Digest(t, repo+"/bycosign:"+sign.SignatureTag(d)) != "" {
				t.Error("cosign wrote a .sig tag in OCI 1.1 mode")
			}
			pres, err = publish.Promote(ctx, publish.PromoteSpec{Images: byCosign, Target: target, Credentials: creds, Zuul: z, Jobs: 8},
				publish.WithVerification(publish.Verification{Key: pub}))
			if err != nil {
				t.Fatal(err)
			}
			if len(pres.Verified) != 1 || pres.Verified[0].SignatureForm != tc.form {
				t.Errorf("verified %+v, want form %s", pres.Verified, tc.form)
			}

			// A different manifest under the change tag: promote refuses
			// it, and so does cosign.
			tamperedRef := repo + "/bycosign:change_5_latest"
			tc.target.Push(t, tamperedRef, image(t, "5", "tampered-"+tc.name, time.Now()))
			_, err = publish.Promote(ctx, publish.PromoteSpec{Images: byCosign, Target: target, Credentials: creds, Zuul: z, Jobs: 8},
				publish.WithVerification(publish.DockerVerification{Key: pub}.Verification()))
			checkError(t, err, "", "nothing was promoted", "docker_images[0] ("+repo+"/bycosign)", "signature check failed", "no signature of")
			if got := tc.target.Digest(t, repo+"/bycosign:latest"); got != d {
				t.Errorf("the final tag moved to %s", got)
			}
			cosign.Fails(t, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--experimental-oci11", cosigntest.Alias(tc.target)+"/"+tamperedRef)
		})
	}
}
