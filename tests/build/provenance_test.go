package build

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// buildkitProvenance is what this test reads of BuildKit's SLSA v1
// provenance statement.
type buildkitProvenance struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			ExternalParameters struct {
				Request struct {
					Args map[string]string `json:"args"`
				} `json:"request"`
			} `json:"externalParameters"`
			ResolvedDependencies []struct {
				URI    string            `json:"uri"`
				Digest map[string]string `json:"digest"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
	} `json:"predicate"`
}

// TestProvenanceThroughPromote is provenance end to end with real parts: a
// gate build through buildkitd from a speculative base image in the
// buildset registry, the provenance statement BuildKit wrote into the
// pushed index (the Zuul build, the context digest, the base image's
// digest), the upload signing it with the job's key on registries with
// and without the referrers API, cosign verify-attestation accepting it,
// and promote's provenance check passing for this change and refusing an
// image built for another.
func TestProvenanceThroughPromote(t *testing.T) {
	t.Parallel()
	cosign := os.Getenv("COSIGN")
	if cosign == "" {
		t.Fatal("COSIGN is not set: run make deps and the tests through make (or export the variables of tests/setup/deps.sh --print)")
	}
	ctx := context.Background()
	b := newBuildsetReg(t) // myorg/base:latest, the change ahead's image
	baseRef, _ := name.ParseReference(b.Host + "/myorg/base:latest")
	baseDesc, err := remote.Head(baseRef, b.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	os.MkdirAll(work, 0o755)
	os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM myorg/base\nCOPY msg /msg\n"), 0o644)
	os.WriteFile(filepath.Join(work, "msg"), []byte("gated\n"), 0o644)
	node := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))

	images := []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}, Provenance: true}}
	gate := zuul.Vars{Change: "42", Patchset: "3", Pipeline: "gate", Build: "0f1e2d3c4b5a69788796a5b4c3d2e1f0", Job: "myorg-build-app",
		Project: zuul.Project{Name: "org/app", SrcDir: work}}
	buildFor := func(z zuul.Vars) string {
		t.Helper()
		res, err := build.Build(ctx, build.Request{Images: images, Zuul: z, WorkDir: work, Home: home, Registry: b.br,
			BuildkitAddr: node.Addr, DockerHost: "none"})
		if err != nil {
			t.Fatalf("build for change %s: %v", z.Change, err)
		}
		return res.Images[0].Digest
	}
	built := buildFor(gate)

	// The pushed index: the image and its attestation manifest.
	ref, _ := name.ParseReference(b.Host + "/myorg/app@" + built)
	idx, err := remote.Index(ref, b.opts()...)
	if err != nil {
		t.Fatalf("the build pushed no index: %v", err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Manifests[1].Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
		t.Fatalf("index %+v: want an image and its attestation manifest", im.Manifests)
	}
	platformImage := im.Manifests[0].Digest
	att, err := idx.Image(im.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	var prov buildkitProvenance
	layers, _ := att.Layers()
	for _, l := range layers {
		mt, _ := l.MediaType()
		if mt != "application/vnd.in-toto+json" {
			continue
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(rc).Decode(&prov)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if prov.PredicateType != "https://slsa.dev/provenance/v1" || len(prov.Subject) == 0 {
		t.Fatalf("provenance %+v: want SLSA v1 about %s", prov, platformImage)
	}
	for _, s := range prov.Subject {
		if s.Digest["sha256"] != platformImage.Hex {
			t.Errorf("provenance subject %v: want %s", s.Digest, platformImage)
		}
	}
	args := prov.Predicate.BuildDefinition.ExternalParameters.Request.Args
	contextDigest, err := build.ContextDigest(ctx, work, filepath.Join(work, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"label:org.zuul-ci.change": "42", "label:org.zuul-ci.patchset": "3",
		"label:org.zuul-ci.pipeline": "gate", "label:org.zuul-ci.build": gate.Build, "label:org.zuul-ci.project": "org/app",
		"label:org.zuul-ci.job": "myorg-build-app", "label:" + build.LabelContextDigest: contextDigest} {
		if args[k] != want {
			t.Errorf("provenance args[%s] = %q, want %q", k, args[k], want)
		}
	}
	baseRecorded := false
	for _, m := range prov.Predicate.BuildDefinition.ResolvedDependencies {
		if strings.Contains(m.URI, "myorg/base") && m.Digest["sha256"] == baseDesc.Digest.Hex {
			baseRecorded = true
		}
	}
	if !baseRecorded {
		t.Errorf("the resolved dependencies %+v do not record the speculative base image myorg/base@%s",
			prov.Predicate.BuildDefinition.ResolvedDependencies, baseDesc.Digest)
	}

	// Upload with signing, promote with the provenance check.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubFile := filepath.Join(t.TempDir(), "cosign.pub")
	os.WriteFile(pubFile, pubPEM, 0o644)
	signing := publish.WithSigning(publish.Signing{Key: keyPEM, KeyParam: "docker_image_signing_key"})
	verify := publish.WithVerification(publish.Verification{Key: string(pubPEM), Provenance: true, GatePipeline: "gate",
		KeyParam: "docker_image_verify_key"})

	for _, tc := range []struct {
		name   string
		target func(testing.TB) transfertest.Registry
		form   string
	}{
		{"referrers", transfertest.Ours, publish.FormReferrer},
		{"tag scheme", transfertest.Distribution, publish.FormTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target(t)
			spec := publish.UploadSpec{Images: images, Target: publish.Target{Registry: target.Host, Cert: string(target.CA)},
				Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
				Zuul:        gate, Promote: true, BuildsetRegistry: b.br, Jobs: 4}
			up, err := publish.Upload(ctx, spec, signing)
			if err != nil {
				t.Fatal(err)
			}
			if len(up.Attested) != 1 || up.Attested[0].Digest != platformImage.String() || up.Attested[0].Form != tc.form || !up.Attested[0].Changed {
				t.Fatalf("attested %+v: want the provenance of %s as a %s", up.Attested, platformImage, tc.form)
			}
			if again, err := publish.Upload(ctx, spec, signing); err != nil || again.Changed {
				t.Fatalf("second upload: changed %v, %v", again != nil && again.Changed, err)
			}
			cosignVerifyAttestation(t, cosign, target, pubFile, target.Host+"/myorg/app@"+platformImage.String())

			pspec := publish.PromoteSpec{Images: images, Target: spec.Target, Credentials: spec.Credentials, Zuul: gate, Jobs: 4}
			pres, err := publish.Promote(ctx, pspec, verify)
			if err != nil {
				t.Fatalf("promote of the gate build: %v", err)
			}
			if len(pres.Verified) != 1 || len(pres.Verified[0].ProvenanceBuilds) != 1 || pres.Verified[0].ProvenanceBuilds[0] != gate.Build {
				t.Errorf("verified %+v: want the provenance of build %s", pres.Verified, gate.Build)
			}
		})
	}

	// An image built for another change, staged under this one: promote
	// refuses it and names the provenance check.
	other := gate
	other.Change, other.Build = "43", "aaaabbbbccccddddeeeeffff00001111"
	buildFor(other)
	target := transfertest.Ours(t)
	spec := publish.UploadSpec{Images: images, Target: publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: publish.Credentials{Username: target.Username, Password: target.Password},
		Zuul:        gate, Promote: true, BuildsetRegistry: b.br, Jobs: 4}
	if _, err := publish.Upload(ctx, spec, signing); err != nil {
		t.Fatal(err)
	}
	pspec := publish.PromoteSpec{Images: images, Target: spec.Target, Credentials: spec.Credentials, Zuul: gate, Jobs: 4}
	_, err = publish.Promote(ctx, pspec, verify)
	if !errors.Is(err, publish.ErrNoProvenance) || !strings.Contains(err.Error(), `change "43"`) {
		t.Fatalf("promote of another change's image: %v; want the provenance check to fail naming change 43", err)
	}
	if d := target.Digest(t, "myorg/app:latest"); d != "" {
		t.Errorf("the refused image was promoted: latest is %s", d)
	}
}

// cosignVerifyAttestation runs cosign verify-attestation --type
// slsaprovenance1 (SLSA provenance v1) on ref, trusting the registry's CA and logging in with a
// docker config of its own.
func cosignVerifyAttestation(t *testing.T, cosign string, reg transfertest.Registry, pubFile, ref string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.crt"), reg.CA, 0o644)
	auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.Host: map[string]string{"auth": auth}}})
	os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600)
	cmd := exec.Command(cosign, "verify-attestation", "--key", pubFile, "--type", "slsaprovenance1",
		"--insecure-ignore-tlog=true", "--experimental-oci11", ref)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dir, "SSL_CERT_FILE="+filepath.Join(dir, "ca.crt"), "HOME="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cosign verify-attestation %s: %v\n%s%s", ref, err, out, stderr.String())
	}
	// cosign prints each verified envelope: its statement must be the
	// SLSA v1 provenance of the image.
	found := false
	for _, line := range strings.Split(string(out), "\n") {
		var env struct{ Payload string }
		if json.Unmarshal([]byte(line), &env) != nil || env.Payload == "" {
			continue
		}
		body, _ := base64.StdEncoding.DecodeString(env.Payload)
		var st struct{ PredicateType string }
		if json.Unmarshal(body, &st) == nil && st.PredicateType == "https://slsa.dev/provenance/v1" {
			found = true
		}
	}
	if !found {
		t.Errorf("cosign verify-attestation printed no SLSA v1 provenance:\n%s", out)
	}
}
