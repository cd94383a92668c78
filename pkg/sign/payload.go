package sign

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// SignatureType is the critical.type of cosign's simple-signing payload.
const SignatureType = "cosign container image signature"

// Payload is cosign's simple-signing payload for a container image (the
// "simple signing" format of containers/image, which cosign signs): the
// manifest digest is what cosign verify checks against the image; the
// docker-reference names the repository.
type Payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// NewPayload is the payload cosign sign writes for the manifest digest of
// repository (registry/name, as go-containerregistry names it:
// index.docker.io/library/app on Docker Hub).
func NewPayload(repository, digest string) ([]byte, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	var p Payload
	p.Critical.Identity.DockerReference = repository
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = SignatureType
	return json.Marshal(p)
}

// Signature is one image signature: the payload and its signature, as
// cosign stores them (a layer whose blob is the payload, annotated with the
// base64 signature).
type Signature struct {
	Payload   []byte
	Signature []byte
}

// SignImage signs the simple-signing payload of digest in repository.
func (s *Signer) SignImage(repository, digest string) (*Signature, error) {
	p, err := NewPayload(repository, digest)
	if err != nil {
		return nil, err
	}
	sig, err := s.Sign(p)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", digest, err)
	}
	return &Signature{Payload: p, Signature: sig}, nil
}

// Layer is the manifest layer that carries the signature (its blob is
// Blob).
func (s *Signature) Layer() Descriptor {
	d := describe(MediaTypeSimpleSigning, s.Payload)
	d.Annotations = map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(s.Signature)}
	return d
}

// Blob is the layer with its content, the payload.
func (s *Signature) Blob() Blob { return Blob{Descriptor: s.Layer(), Data: s.Payload} }

// VerifyImage checks one signature layer of a signature manifest: the
// payload (the layer's blob) is cosign's simple-signing payload for
// digest, and the layer's signature annotation verifies over it with v's
// key. Errors match ErrBadSignature, ErrSubject or ErrFormat.
func (v *Verifier) VerifyImage(layer Descriptor, payload []byte, digest string) error {
	b64, ok := layer.Annotations[AnnotationSignature]
	if !ok || b64 == "" {
		return fmt.Errorf("%w: layer %s has no %s annotation", ErrFormat, layer.Digest, AnnotationSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%w: the signature annotation of layer %s is not base64", ErrFormat, layer.Digest)
	}
	if err := v.Verify(payload, sig); err != nil {
		return err
	}
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("%w: the signed payload %s is not a simple-signing payload: %v", ErrFormat, layer.Digest, err)
	}
	if p.Critical.Type != SignatureType {
		return fmt.Errorf("%w: the signed payload %s has type %q, not %q", ErrFormat, layer.Digest, p.Critical.Type, SignatureType)
	}
	if p.Critical.Image.DockerManifestDigest != digest {
		return fmt.Errorf("%w: the signed payload names %s", ErrSubject, p.Critical.Image.DockerManifestDigest)
	}
	return nil
}
