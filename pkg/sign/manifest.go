package sign

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Media types and annotations of cosign's registry formats.
const (
	// MediaTypeSimpleSigning is a layer holding a simple-signing payload.
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// ArtifactTypeSignature is the artifactType (and config media type) of
	// cosign's OCI 1.1 signature manifests; cosign verify
	// --experimental-oci11 asks the referrers API for it.
	ArtifactTypeSignature = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// MediaTypeDSSE is a layer holding a DSSE envelope (cosign attest).
	MediaTypeDSSE = "application/vnd.dsse.envelope.v1+json"
	// ArtifactTypeInToto is the artifactType of attestation referrers
	// cosign writes (and of BuildKit's attestation layers).
	ArtifactTypeInToto = "application/vnd.in-toto+json"
	// AnnotationSignature holds a layer's base64 signature.
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationPredicateType names an attestation layer's predicate.
	AnnotationPredicateType = "predicateType"
	mediaTypeImageConfig    = "application/vnd.oci.image.config.v1+json"
)

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Blob is a blob to push before a manifest that refers to it.
type Blob struct {
	Descriptor
	Data []byte
}

// Manifest is the OCI image manifest of a signature or attestation.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// ParseManifest decodes a signature or attestation manifest.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: decoding a signature manifest: %v", ErrFormat, err)
	}
	return &m, nil
}

func describe(mediaType string, b []byte) Descriptor {
	return Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b).String(), Size: int64(len(b))}
}

// Encoded is a manifest ready to push: its bytes, digest, and the blobs it
// refers to (config and layers).
type Encoded struct {
	Body   []byte
	Digest string
	Blobs  []Blob
}

// imageConfig is the image configuration cosign's signature images carry
// (go-containerregistry's empty image with the layers appended): layers
// are stored uncompressed, so each diff ID is its digest.
func imageConfig(layers []Descriptor) []byte {
	ids := make([]string, len(layers))
	for i, l := range layers {
		ids[i] = l.Digest
	}
	b, _ := json.Marshal(struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		Config struct{} `json:"config"`
	}{RootFS: struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}{"layers", ids}})
	return b
}

func encode(m Manifest, blobs []Blob) (*Encoded, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Encoded{Body: b, Digest: digest.FromBytes(b).String(), Blobs: blobs}, nil
}

// TagManifest is cosign's tag-scheme manifest (the image under
// sha256-<hex>.sig or .att): an OCI image manifest whose layers are the
// signatures (or attestations) of one image. layers are the layers already
// under the tag, kept, followed by add; blobs are the new ones' and the
// config.
func TagManifest(layers []Descriptor, add []Blob) (*Encoded, error) {
	all := append([]Descriptor{}, layers...)
	var blobs []Blob
	for _, b := range add {
		all = append(all, b.Descriptor)
		blobs = append(blobs, Blob{Descriptor: b.Descriptor, Data: b.Data})
	}
	cfg := imageConfig(all)
	cd := describe(mediaTypeImageConfig, cfg)
	blobs = append(blobs, Blob{Descriptor: cd, Data: cfg})
	return encode(Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeOCIManifest, Config: cd, Layers: all}, blobs)
}

// ReferrerManifest is an OCI 1.1 referrer of subject carrying layers, as
// cosign writes with --registry-referrers-mode=oci-1-1: for signatures
// (artifactType ArtifactTypeSignature) the config is the signature image's
// configuration with the artifact type as its media type; for
// attestations (ArtifactTypeInToto) the empty config
// (application/vnd.oci.empty.v1+json, "{}").
func ReferrerManifest(artifactType string, subject Descriptor, add []Blob) (*Encoded, error) {
	var layers []Descriptor
	var blobs []Blob
	for _, b := range add {
		layers = append(layers, b.Descriptor)
		blobs = append(blobs, b)
	}
	var cd Descriptor
	if artifactType == ArtifactTypeSignature {
		cfg := imageConfig(layers)
		cd = describe(artifactType, cfg)
		blobs = append(blobs, Blob{Descriptor: cd, Data: cfg})
	} else {
		cfg := []byte("{}")
		cd = describe("application/vnd.oci.empty.v1+json", cfg)
		blobs = append(blobs, Blob{Descriptor: cd, Data: cfg})
	}
	s := Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	return encode(Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeOCIManifest, ArtifactType: artifactType,
		Config: cd, Layers: layers, Subject: &s}, blobs)
}

// SignatureTag is cosign's tag for the signatures of digest:
// sha256-<hex>.sig.
func SignatureTag(dgst string) string { return tagFor(dgst, "sig") }

// AttestationTag is cosign's tag for the attestations of digest:
// sha256-<hex>.att.
func AttestationTag(dgst string) string { return tagFor(dgst, "att") }

func tagFor(dgst, suffix string) string {
	return strings.Replace(dgst, ":", "-", 1) + "." + suffix
}

func checkDigest(d string) error {
	if _, err := digest.Parse(d); err != nil {
		return fmt.Errorf("%w: %q is not a digest", ErrFormat, d)
	}
	return nil
}
