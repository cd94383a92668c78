package sign_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/secure-systems-lab/go-securesystemslib/encrypted"

	"github.com/imagegate/imagegate/pkg/sign"
)

const password = "correct horse battery staple"

func pkcs8(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// keys are private keys in every format ParsePrivateKey reads, made once
// (RSA generation and scrypt are slow under the race detector).
func keys(t *testing.T) map[string][]byte {
	t.Helper()
	keysOnce.Do(func() { keySet = makeKeys(t) })
	return keySet
}

var (
	keysOnce sync.Once
	keySet   map[string][]byte
)

func makeKeys(t *testing.T) map[string][]byte {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	// Legacy scrypt parameters (cosign's before 2.x) keep the test fast
	// under the race detector; Decrypt reads the parameters from the key.
	enc, err := encrypted.EncryptWithCustomKDFParameters(pkcs8(t, ec), []byte(password), encrypted.Legacy)
	if err != nil {
		t.Fatal(err)
	}
	secDER, _ := x509.MarshalECPrivateKey(ec384)
	return map[string][]byte{
		"cosign encrypted": pem.EncodeToMemory(&pem.Block{Type: sign.PEMSigstoreEncrypted, Bytes: enc}),
		"pkcs8 ecdsa":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(t, ec)}),
		"sec1 p384":        pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: secDER}),
		"pkcs1 rsa":        pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		"pkcs8 ed25519":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(t, ed)}),
	}
}

func TestSignVerifyImage(t *testing.T) {
	t.Parallel()
	dgst := digest.FromString("manifest").String()
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := sign.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(t, otherKey)}), nil)
	for name, k := range keys(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pw := []byte(nil)
			if strings.Contains(name, "encrypted") {
				pw = []byte(password)
			}
			s, err := sign.ParsePrivateKey(k, pw)
			if err != nil {
				t.Fatal(err)
			}
			v, err := sign.ParsePublicKey(s.PublicKeyPEM())
			if err != nil {
				t.Fatal(err)
			}
			sig, err := s.SignImage("registry.example.org/myorg/app", dgst)
			if err != nil {
				t.Fatal(err)
			}
			b := sig.Blob()
			if b.Digest != digest.FromBytes(sig.Payload).String() || b.MediaType != sign.MediaTypeSimpleSigning {
				t.Errorf("blob %+v", b.Descriptor)
			}
			if err := v.VerifyImage(b.Descriptor, sig.Payload, dgst); err != nil {
				t.Errorf("VerifyImage: %v", err)
			}
			if err := v.VerifyImage(b.Descriptor, sig.Payload, digest.FromString("other").String()); !errors.Is(err, sign.ErrSubject) {
				t.Errorf("another digest: %v, want ErrSubject", err)
			}
			if err := other.Verifier().VerifyImage(b.Descriptor, sig.Payload, dgst); !errors.Is(err, sign.ErrBadSignature) {
				t.Errorf("another key: %v, want ErrBadSignature", err)
			}
			tampered := []byte(strings.Replace(string(sig.Payload), "myorg", "evil", 1))
			if err := v.VerifyImage(b.Descriptor, tampered, dgst); !errors.Is(err, sign.ErrBadSignature) {
				t.Errorf("tampered payload: %v, want ErrBadSignature", err)
			}
		})
	}
}

// TestPayload: the payload has cosign's shape.
func TestPayload(t *testing.T) {
	t.Parallel()
	p, err := sign.NewPayload("index.docker.io/myorg/app", "sha256:"+strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"critical":{"identity":{"docker-reference":"index.docker.io/myorg/app"},"image":{"docker-manifest-digest":"sha256:` +
		strings.Repeat("a", 64) + `"},"type":"cosign container image signature"},"optional":null}`
	if string(p) != want {
		t.Errorf("payload\n%s\nwant\n%s", p, want)
	}
	if _, err := sign.NewPayload("x", "latest"); !errors.Is(err, sign.ErrFormat) {
		t.Errorf("a tag as digest: %v", err)
	}
}

func TestBadKeys(t *testing.T) {
	t.Parallel()
	k := keys(t)
	pub, _ := sign.ParsePrivateKey(k["pkcs8 ecdsa"], nil)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, tc := range []struct {
		name     string
		pem      string
		password string
		want     error
		msg      string
	}{
		{"garbage", "not a key", "", sign.ErrKey, "no PEM block"},
		{"encrypted without password", string(k["cosign encrypted"]), "", sign.ErrPassword, "no password was given"},
		{"wrong password", string(k["cosign encrypted"]), "hunter2", sign.ErrPassword, "wrong password"},
		{"public key", string(pub.PublicKeyPEM()), "", sign.ErrKey, "public key"},
		{"truncated", string(k["pkcs8 ecdsa"])[:60] + "\n-----END PRIVATE KEY-----\n", "", sign.ErrKey, ""},
		{"small rsa", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), "", sign.ErrKey, "2048"},
		{"certificate request", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "", sign.ErrKey, "unsupported PEM type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := sign.ParsePrivateKey([]byte(tc.pem), []byte(tc.password))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if tc.password != "" && strings.Contains(err.Error(), tc.password) {
				t.Errorf("the error shows the password: %v", err)
			}
			if strings.Contains(err.Error(), "MII") {
				t.Errorf("the error shows key material: %v", err)
			}
		})
	}
	if _, err := sign.ParsePublicKey(k["pkcs8 ecdsa"]); !errors.Is(err, sign.ErrKey) || !strings.Contains(err.Error(), "private key") {
		t.Errorf("a private key as public key: %v", err)
	}
}

func TestManifests(t *testing.T) {
	t.Parallel()
	s, _ := sign.ParsePrivateKey(keys(t)["pkcs8 ecdsa"], nil)
	dgst := digest.FromString("image").String()
	sig, _ := s.SignImage("r/x", dgst)
	subject := sign.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: dgst, Size: 5}
	enc, err := sign.ReferrerManifest(sign.ArtifactTypeSignature, subject, []sign.Blob{sig.Blob()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := sign.ParseManifest(enc.Body)
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != sign.ArtifactTypeSignature || m.Config.MediaType != sign.ArtifactTypeSignature ||
		m.Subject == nil || m.Subject.Digest != dgst || len(m.Layers) != 1 || m.Layers[0].Annotations[sign.AnnotationSignature] == "" {
		t.Errorf("referrer manifest %s", enc.Body)
	}
	if len(enc.Blobs) != 2 || enc.Digest != digest.FromBytes(enc.Body).String() {
		t.Errorf("blobs %d, digest %s", len(enc.Blobs), enc.Digest)
	}
	// The tag scheme keeps the signatures already there.
	sig2, _ := s.SignImage("r/x", dgst)
	enc2, err := sign.TagManifest(m.Layers, []sign.Blob{sig2.Blob()})
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := sign.ParseManifest(enc2.Body)
	if len(m2.Layers) != 2 || m2.Subject != nil || m2.ArtifactType != "" || m2.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("tag manifest %s", enc2.Body)
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	for _, b := range enc2.Blobs {
		if b.Digest == m2.Config.Digest {
			_ = json.Unmarshal(b.Data, &cfg)
		}
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != sig2.Blob().Digest {
		t.Errorf("config diff ids %v", cfg.RootFS.DiffIDs)
	}
	if got := sign.SignatureTag(dgst); got != strings.Replace(dgst, ":", "-", 1)+".sig" {
		t.Errorf("SignatureTag = %s", got)
	}
}

func statement(t *testing.T, predicateType, dgst string, predicate any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"_type": sign.StatementV01, "predicateType": predicateType,
		"subject":   []map[string]any{{"name": "r/x", "digest": map[string]string{"sha256": strings.TrimPrefix(dgst, "sha256:")}}},
		"predicate": predicate,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAttestations(t *testing.T) {
	t.Parallel()
	s, _ := sign.ParsePrivateKey(keys(t)["pkcs8 ecdsa"], nil)
	other, _ := sign.ParsePrivateKey(keys(t)["pkcs1 rsa"], nil)
	dgst := digest.FromString("image").String()
	args := map[string]any{"label:" + sign.LabelChange: "42", "label:" + sign.LabelPatchset: "3",
		"label:" + sign.LabelPipeline: "gate", "label:" + sign.LabelBuild: "b1d"}
	for _, tc := range []struct {
		name, predicateType string
		predicate           any
	}{
		{"slsa v0.2", sign.PredicateSLSAv02, map[string]any{"invocation": map[string]any{"parameters": map[string]any{"args": args}}}},
		{"slsa v1", sign.PredicateSLSAv1, map[string]any{"buildDefinition": map[string]any{"externalParameters": map[string]any{"request": map[string]any{"args": args}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := s.Attest(statement(t, tc.predicateType, dgst, tc.predicate))
			if err != nil {
				t.Fatal(err)
			}
			if b.MediaType != sign.MediaTypeDSSE || b.Annotations[sign.AnnotationPredicateType] != tc.predicateType {
				t.Errorf("layer %+v", b.Descriptor)
			}
			st, err := s.Verifier().VerifyAttestation(b.Data, dgst)
			if err != nil {
				t.Fatal(err)
			}
			zb, ok, err := sign.Provenance(st)
			if err != nil || !ok {
				t.Fatalf("Provenance: %v %v", ok, err)
			}
			if want := (sign.ZuulBuild{Change: "42", Patchset: "3", Pipeline: "gate", Build: "b1d"}); zb != want {
				t.Errorf("zuul build %+v, want %+v", zb, want)
			}
			if _, err := s.Verifier().VerifyAttestation(b.Data, digest.FromString("other").String()); !errors.Is(err, sign.ErrSubject) {
				t.Errorf("another subject: %v", err)
			}
			if _, err := other.Verifier().VerifyAttestation(b.Data, dgst); !errors.Is(err, sign.ErrBadSignature) {
				t.Errorf("another key: %v", err)
			}
		})
	}
	st := &sign.Statement{PredicateType: "https://spdx.dev/Document"}
	if _, ok, _ := sign.Provenance(st); ok {
		t.Error("an SBOM is provenance")
	}
}
