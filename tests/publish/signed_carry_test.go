package publish

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/cosigntest"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/intermediate"
	pub "github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestSignedImageTravels follows an image that cosign signed (an OCI 1.1
// referrer) and attested (cosign's .att tag) in the gate's buildset
// registry: pushed to an intermediate registry without the referrers API
// (Debian's docker-registry), pulled into a later change's buildset
// registry, uploaded to the target and promoted with signature and
// provenance required. cosign verify and verify-attestation accept it at
// each stop, with the key it was signed with.
func TestSignedImageTravels(t *testing.T) {
	t.Parallel()
	br1, ir, br2, target := transfertest.Ours(t), transfertest.Distribution(t), transfertest.Ours(t), transfertest.Ours(t)
	cosign := cosigntest.New(t, br1, ir, br2, target)
	keyFile, pubFile := cosign.KeyPair(t, "cosign")
	ctx := context.Background()

	d := transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", transfertest.Image(t, true, transfertest.Layer(61, 30_000)))
	at := func(r transfertest.Registry, ref string) string { return cosigntest.Alias(r) + "/myorg/app" + ref }
	cosign.Run(t, []string{"COSIGN_EXPERIMENTAL=1"}, "sign", "--key", keyFile, "--tlog-upload=false", "--yes",
		"--registry-referrers-mode=oci-1-1", at(br1, "@"+d))
	predicate := filepath.Join(t.TempDir(), "provenance.json")
	pred, _ := json.Marshal(map[string]any{"builder": map[string]string{"id": "https://zuul.example.org/t/main"},
		"buildType": "https://mobyproject.org/buildkit@v1",
		"invocation": map[string]any{"parameters": map[string]any{"frontend": "dockerfile.v0", "args": map[string]string{
			"label:" + sign.LabelChange: "5", "label:" + sign.LabelPatchset: "2",
			"label:" + sign.LabelPipeline: "gate", "label:" + sign.LabelBuild: "gate-build-uuid"}}}})
	if err := os.WriteFile(predicate, pred, 0o600); err != nil {
		t.Fatal(err)
	}
	cosign.Run(t, nil, "attest", "--key", keyFile, "--type", "slsaprovenance", "--predicate", predicate,
		"--tlog-upload=false", "--yes", at(br1, "@"+d))
	verify := func(ref string) {
		t.Helper()
		cosign.Run(t, nil, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--experimental-oci11", ref)
		cosign.Run(t, nil, "verify-attestation", "--key", pubFile, "--type", "slsaprovenance", "--insecure-ignore-tlog=true", ref)
	}
	verify(at(br1, ":latest"))

	// The gate pushes to the intermediate registry; a later change pulls.
	hostPort := func(r transfertest.Registry) (string, int) {
		i := strings.LastIndex(r.Host, ":")
		p, _ := strconv.Atoi(r.Host[i+1:])
		return r.Host[:i], p
	}
	bs := func(r transfertest.Registry) *zuul.BuildsetRegistry {
		h, p := hostPort(r)
		return &zuul.BuildsetRegistry{Host: h, Port: p, Username: r.Username, Password: r.Password, Cert: string(r.CA)}
	}
	irHost, irPort := hostPort(ir)
	inter := &zuul.IntermediateRegistry{Host: irHost, Port: irPort, Username: ir.Username, Password: ir.Password, Cert: string(ir.CA)}
	regs := func(br *zuul.BuildsetRegistry) intermediate.Registries {
		return intermediate.Registries{BuildsetRegistry: br, IntermediateRegistry: inter, Jobs: 4, LayerJobs: 4, Retries: 1}
	}
	images := []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}}
	pushed, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: zuul.Vars{Build: "0123456789abcdef"}, Registries: regs(bs(br1)), DockerImages: images})
	if err != nil {
		t.Fatal(err)
	}
	verify(at(ir, ":0123456789abcdef_latest"))
	if _, err := intermediate.Pull(ctx, intermediate.PullSpec{Registries: regs(bs(br2)), Artifacts: pushed.Artifacts}); err != nil {
		t.Fatal(err)
	}
	verify(at(br2, ":latest"))

	// Upload from the later buildset registry, promote with both checks.
	z := zuul.Vars{Change: "5", Patchset: "2", Pipeline: "gate"}
	tgt := pub.Target{Registry: target.Host, Cert: string(target.CA)}
	creds := pub.Credentials{Username: target.Username, Password: target.Password}
	if _, err := pub.Upload(ctx, pub.UploadSpec{Images: images, Target: tgt, Credentials: creds, Zuul: z, Promote: true, BuildsetRegistry: bs(br2), Jobs: 4}); err != nil {
		t.Fatal(err)
	}
	res, err := pub.Promote(ctx, pub.PromoteSpec{Images: images, Target: tgt, Credentials: creds, Zuul: z, Jobs: 4},
		pub.WithVerification(pub.DockerVerification{Key: cosigntest.Read(t, pubFile), Provenance: true, GatePipeline: "gate"}.Verification()))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Verified) != 1 || res.Verified[0].ProvenanceBuilds[0] != "gate-build-uuid" {
		t.Errorf("verified %+v", res.Verified)
	}
	verify(at(target, ":latest"))
}
