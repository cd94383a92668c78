package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// signImages is how many images the signing benchmark stages and promotes;
// every other one is a two-platform index (three manifests to sign).
const signImages = 10

// BenchmarkSigning measures what signing adds to docker_image_upload and
// what verification adds to docker_image_promote, beside the same flow
// without them, on imagegate's registry (signatures as OCI 1.1 referrers)
// and on Debian's docker-registry 2.8 (cosign's .sig tags): the same images
// are uploaded to two sets of repositories; the second set is uploaded
// again without the key (the copies are no-ops) and with it, the
// difference being what signing costs; then the first set is promoted
// without checks and the second with the signature and provenance checks. The goal is under 0.5 s per image each way.
func BenchmarkSigning(b *testing.B) {
	brReg := registrytest.New(b)
	br := &zuul.BuildsetRegistry{Host: "127.0.0.1", Port: brReg.Port, Username: brReg.Username, Password: brReg.Password, Cert: string(brReg.CAPEM)}
	src := transfertest.Registry{Host: brReg.Host, Username: brReg.Username, Password: brReg.Password, CA: brReg.CAPEM}
	for i := 0; i < signImages; i++ {
		var content remote.Taggable = promoteImage(b, i, "amd64")
		if i%2 == 1 {
			content = testenv.ChangeIndex(b, "42", time.Now(), func(arch string) [][]byte { return promoteLayersOf(i, arch) })
		}
		src.Push(b, signRepo("", i)+":latest", content)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	signer, err := sign.ParsePrivateKey([]byte(keyPEM), nil)
	if err != nil {
		b.Fatal(err)
	}
	z := zuul.Vars{Change: "42", Patchset: "1", Pipeline: "gate", Build: "upload"}
	ctx := context.Background()

	rows := [][]string{{"registry (signature form)", "step", "without", "with", "added", "added per image"}}
	for _, target := range []struct {
		name string
		reg  func(testing.TB) transfertest.Registry
	}{
		{"imagegate (referrers)", transfertest.Ours},
		{"docker-registry 2.8 (.sig tags)", transfertest.Distribution},
	} {
		dst := target.reg(b)
		base := publish.Target{Registry: dst.Host, Cert: string(dst.CA)}
		creds := publish.Credentials{Username: dst.Username, Password: dst.Password}
		images := func(prefix string) []zuul.Image {
			var out []zuul.Image
			for i := 0; i < signImages; i++ {
				out = append(out, zuul.Image{Repository: signRepo(prefix, i), Tags: []string{"latest"}})
			}
			return out
		}
		upload := func(prefix string, opts ...publish.Option) time.Duration {
			// The buildset registry holds myorg/...; the target gets
			// <prefix>/myorg/...: copy under both names first.
			spec := publish.UploadSpec{Images: images(prefix), Target: base, Credentials: creds, Zuul: z, Promote: true, BuildsetRegistry: br, Jobs: 8}
			start := time.Now()
			if _, err := publish.Upload(ctx, spec, opts...); err != nil {
				b.Fatalf("upload %s: %v", prefix, err)
			}
			return time.Since(start)
		}
		for i := 0; i < signImages; i++ {
			for _, p := range []string{"plain", "signed"} {
				if _, err := remoteCopy(src, signRepo("", i), signRepo(p, i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		// Signing's cost alone: the copies of a second upload are no-ops,
		// so a second run with the key costs the no-op run plus the
		// signatures.
		b.ResetTimer()
		plain := upload("plain")
		upload("signed")
		noop := upload("signed")
		signRun := upload("signed", publish.WithSigning(publish.Signing{Key: keyPEM}))
		b.StopTimer()
		added := signRun - noop
		signed := plain + added
		rows = append(rows, []string{target.name, fmt.Sprintf("upload %d images", signImages), Seconds(plain), Seconds(signed),
			Seconds(added), Seconds(added / signImages)})
		// Provenance as the build side will attach it.
		for i := 0; i < signImages; i++ {
			attachProvenance(b, dst, signRepo("signed", i), signer, z)
		}
		promote := func(prefix string, opts ...publish.Option) time.Duration {
			spec := publish.PromoteSpec{Images: images(prefix), Target: base, Credentials: creds, Zuul: z, Jobs: 8}
			start := time.Now()
			if _, err := publish.Promote(ctx, spec, opts...); err != nil {
				b.Fatalf("promote %s: %v", prefix, err)
			}
			return time.Since(start)
		}
		b.StartTimer()
		pPlain := promote("plain")
		pVerified := promote("signed", publish.WithVerification(publish.Verification{
			Key: string(signer.PublicKeyPEM()), Provenance: true, GatePipeline: "gate"}))
		b.StopTimer()
		rows = append(rows, []string{"", fmt.Sprintf("promote %d images", signImages), Seconds(pPlain), Seconds(pVerified),
			Seconds(pVerified - pPlain), Seconds((pVerified - pPlain) / signImages)})
		key := strings.Fields(target.name)[0]
		b.ReportMetric(added.Seconds()/signImages, key+"_sign_s/image")
		b.ReportMetric((pVerified-pPlain).Seconds()/signImages, key+"_verify_s/image")
	}
	Table(fmt.Sprintf("signing at upload, signature and provenance checks at promote (%d images, %d of them two-platform indexes; key ECDSA P-256)",
		signImages, signImages/2), rows)
}

func signRepo(prefix string, i int) string {
	if prefix == "" {
		return fmt.Sprintf("myorg/signed%02d", i)
	}
	return fmt.Sprintf("%s/myorg/signed%02d", prefix, i)
}

// remoteCopy copies repo:latest to another repository of the same
// registry, so that each set of uploads has its own buildset images.
func remoteCopy(r transfertest.Registry, from, to string) (*transfer.Result, error) {
	c, err := transfer.New(transfer.WithEndpoint(r.Endpoint()))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Copy(context.Background(), r.Host+"/"+from+":latest", r.Host+"/"+to+":latest")
}

// attachProvenance stores a signed SLSA provenance of the staged image of
// repo under cosign's .att tag, as the build side will.
func attachProvenance(b *testing.B, r transfertest.Registry, repo string, s *sign.Signer, z zuul.Vars) {
	b.Helper()
	ctx := context.Background()
	c, err := transfer.New(transfer.WithEndpoint(r.Endpoint()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rp, err := c.Repository(ctx, r.Host, repo, true)
	if err != nil {
		b.Fatal(err)
	}
	d, err := rp.Head(ctx, "change_42_latest")
	if err != nil {
		b.Fatal(err)
	}
	st, _ := json.Marshal(map[string]any{
		"_type": sign.StatementV01, "predicateType": sign.PredicateSLSAv02,
		"subject": []map[string]any{{"name": repo, "digest": map[string]string{"sha256": strings.TrimPrefix(d.Digest, "sha256:")}}},
		"predicate": map[string]any{"invocation": map[string]any{"parameters": map[string]any{"args": map[string]string{
			"label:" + sign.LabelChange: z.Change, "label:" + sign.LabelPatchset: z.Patchset,
			"label:" + sign.LabelPipeline: "gate", "label:" + sign.LabelBuild: "build-uuid"}}}},
	})
	layer, err := s.Attest(st)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := sign.TagManifest(nil, []sign.Blob{layer})
	if err != nil {
		b.Fatal(err)
	}
	for _, bl := range enc.Blobs {
		if _, err := rp.PushBlob(ctx, bl.Data); err != nil {
			b.Fatal(err)
		}
	}
	if err := rp.Put(ctx, sign.AttestationTag(d.Digest), &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body}); err != nil {
		b.Fatal(err)
	}
}
