package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// The signing half: storing a signature or a provenance attestation of
// one digest in a repository, in the form its registry takes. Upload
// (package publish) signs in the target registry with it;
// intermediate_registry_push (package intermediate) in the intermediate
// registry, so that Check finds what was stored.

// Store is one repository's signature storage: the form its registry
// takes, found once (Form) and kept for the repository's other digests.
// It is safe for concurrent use.
type Store struct {
	r *transfer.Repository
	// ref is the repository as signatures name it (docker-reference):
	// registry/name as go-containerregistry spells it.
	ref string

	once sync.Once
	form string
	err  error
}

// NewStore is the signature storage of r, whose signatures name the image
// ref (registry/repository).
func NewStore(r *transfer.Repository, ref string) *Store { return &Store{r: r, ref: ref} }

// Repository is the repository the store writes to.
func (s *Store) Repository() *transfer.Repository { return s.r }

// Form detects whether the registry serves the referrers API: 200 to
// GET /v2/<name>/referrers/<digest> is a yes (FormReferrer), 404 a no
// (FormTag) (distribution-spec v1.1, "Listing Referrers"); anything else
// (401, 403, 5xx) is an error. Putting a referrer then confirms it: a
// registry that does not answer with OCI-Subject gets the tag scheme
// instead.
func (s *Store) Form(ctx context.Context, dgst string) (string, error) {
	s.once.Do(func() {
		_, err := s.r.Referrers(ctx, dgst, sign.ArtifactTypeSignature)
		switch {
		case err == nil:
			s.form = FormReferrer
		case errors.Is(err, oci.ErrNotFound):
			s.form = FormTag
		default:
			s.err = fmt.Errorf("probing the referrers API: %w", err)
		}
	})
	return s.form, s.err
}

// Sign signs the manifest desc with signer, as cosign sign --key does,
// unless a signature with the key is already there (signing again changes
// nothing): as an OCI 1.1 referrer where the registry takes one, else
// under cosign's sha256-<hex>.sig tag, keeping the signatures already
// there. In check mode it only reads. form is where the signature is (or
// would be).
func (s *Store) Sign(ctx context.Context, signer *sign.Signer, desc transfer.Descriptor, check bool) (form string, changed bool, err error) {
	if form, err := Signature(ctx, s.r, signer.Verifier(), desc.Digest); err == nil {
		return form, false, nil
	} else if !errors.Is(err, ErrNotSigned) {
		return "", false, err
	}
	form, err = s.Form(ctx, desc.Digest)
	if err != nil {
		return "", false, err
	}
	if check {
		return form, true, nil
	}
	sig, err := signer.SignImage(s.ref, desc.Digest)
	if err != nil {
		return "", false, err
	}
	var refErr error
	if form == FormReferrer {
		ok, err := s.putReferrer(ctx, desc, sign.ArtifactTypeSignature, sig.Blob())
		if err == nil && ok {
			return FormReferrer, true, nil
		}
		// A registry that refuses the referrer (or stores it without
		// indexing it) may still take cosign's tag.
		refErr = err
	}
	tag := sign.SignatureTag(desc.Digest)
	if err := s.putSigTag(ctx, sig.Blob(), tag); err != nil {
		if refErr != nil {
			return "", false, fmt.Errorf("the registry refused the signature both as an OCI 1.1 referrer (%w) and under cosign's tag %s (%w)", refErr, tag, err)
		}
		return "", false, fmt.Errorf("storing the signature under cosign's tag %s: %w", tag, err)
	}
	return FormTag, true, nil
}

// Attest signs statement (an in-toto statement about subject) into a DSSE
// envelope, as cosign attest --key does, and stores it under cosign's
// sha256-<hex>.att tag, which cosign verify-attestation reads (cosign 2.x
// reads key-signed attestations only there), and, when the registry serves
// the referrers API, also as an OCI 1.1 referrer of the image
// (artifactType application/vnd.in-toto+json), beside the signature, where
// referrer-aware tools and copies find it. The form reported is the
// signature's. A place that already holds the same statement signed with
// the key is left alone; in check mode it only reads.
func (s *Store) Attest(ctx context.Context, signer *sign.Signer, subject transfer.Descriptor, statement []byte, check bool) (form string, changed bool, err error) {
	have, err := s.attestationForms(ctx, signer.Verifier(), subject.Digest, statement)
	if err != nil {
		return "", false, err
	}
	form, err = s.Form(ctx, subject.Digest)
	if err != nil {
		return "", false, err
	}
	want := []string{FormTag}
	if form == FormReferrer {
		want = append(want, FormReferrer)
	}
	var todo []string
	for _, f := range want {
		if !have[f] {
			todo = append(todo, f)
		}
	}
	if len(todo) == 0 || check {
		return form, len(todo) > 0, nil
	}
	env, err := signer.Attest(statement)
	if err != nil {
		return "", false, err
	}
	for _, f := range todo {
		switch f {
		case FormReferrer:
			ok, err := s.putReferrer(ctx, subject, sign.ArtifactTypeInToto, env)
			if err != nil {
				return "", false, fmt.Errorf("storing the attestation as an OCI 1.1 referrer: %w", err)
			}
			if !ok {
				// Stored without its subject being indexed: the
				// tag is where it is found.
				form = FormTag
			}
		case FormTag:
			tag := sign.AttestationTag(subject.Digest)
			if err := s.putSigTag(ctx, env, tag); err != nil {
				return "", false, fmt.Errorf("storing the attestation under cosign's tag %s: %w", tag, err)
			}
		}
	}
	return form, true, nil
}

// attestationForms reports where an envelope of statement, signed with v's
// key, is stored for dgst: FormReferrer, FormTag.
func (s *Store) attestationForms(ctx context.Context, v *sign.Verifier, dgst string, statement []byte) (map[string]bool, error) {
	cands, err := Candidates(ctx, s.r, dgst, true)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, c := range cands {
		for _, l := range c.Manifest.Layers {
			if l.MediaType != sign.MediaTypeDSSE || have[c.Form] {
				continue
			}
			b, err := s.r.Blob(ctx, l.Digest)
			if err != nil {
				return nil, err
			}
			var env sign.Envelope
			if json.Unmarshal(b, &env) != nil {
				continue
			}
			payload, err := base64.StdEncoding.DecodeString(env.Payload)
			if err != nil || !bytes.Equal(payload, statement) {
				continue
			}
			if _, err := v.VerifyAttestation(b, dgst); err == nil {
				have[c.Form] = true
			} else if !errors.Is(err, sign.ErrBadSignature) {
				return nil, err
			}
		}
	}
	return have, nil
}

// pushBlobs stores the blobs a signature manifest refers to.
func (s *Store) pushBlobs(ctx context.Context, blobs []sign.Blob) error {
	for _, b := range blobs {
		if _, err := s.r.PushBlob(ctx, b.Data); err != nil {
			return err
		}
	}
	return nil
}

// putReferrer stores layer (a signature, or an attestation's envelope) as
// an OCI 1.1 referrer of desc with artifactType; ok is false when the
// registry stored it without recognising the subject (no OCI-Subject
// answer): it has no referrers API after all, and the tag scheme is used.
func (s *Store) putReferrer(ctx context.Context, desc transfer.Descriptor, artifactType string, layer sign.Blob) (ok bool, err error) {
	subject := sign.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	if subject.Size == 0 {
		d, err := s.r.Head(ctx, desc.Digest)
		if err != nil && !errors.Is(err, oci.ErrNotFound) {
			return false, err
		}
		subject.Size = d.Size
	}
	enc, err := sign.ReferrerManifest(artifactType, subject, []sign.Blob{layer})
	if err != nil {
		return false, err
	}
	if err := s.pushBlobs(ctx, enc.Blobs); err != nil {
		return false, err
	}
	got, err := s.r.PutSubject(ctx, enc.Digest, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body})
	if err != nil {
		return false, err
	}
	return got == desc.Digest, nil
}

// putSigTag adds layer to cosign's tag (sha256-<hex>.sig or .att),
// keeping the signatures already there.
func (s *Store) putSigTag(ctx context.Context, layer sign.Blob, tag string) error {
	var layers []sign.Descriptor
	old, err := s.r.Get(ctx, tag)
	switch {
	case err == nil:
		m, err := sign.ParseManifest(old.Body)
		if err != nil {
			return err
		}
		layers = m.Layers
	case errors.Is(err, oci.ErrNotFound):
	default:
		return err
	}
	enc, err := sign.TagManifest(layers, []sign.Blob{layer})
	if err != nil {
		return err
	}
	if err := s.pushBlobs(ctx, enc.Blobs); err != nil {
		return err
	}
	return s.r.Put(ctx, tag, &transfer.Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body})
}

// BuildKit's attestation manifests (BuildKit docs, "Attestation storage"):
// an index lists, beside each platform image, a manifest annotated with
// these keys whose layers are in-toto statements, each annotated with its
// predicate type.
const (
	annotationRefType         = "vnd.docker.reference.type"
	annotationRefDigest       = "vnd.docker.reference.digest"
	refTypeAttestation        = "attestation-manifest"
	annotationInTotoPredicate = "in-toto.io/predicate-type"
	// MaxStatement bounds a statement read whole (mode=max provenance of
	// a long Dockerfile is some hundred kB).
	MaxStatement = 16 << 20
)

// Statement is one SLSA provenance statement BuildKit stored for one
// platform image of an index.
type Statement struct {
	Subject transfer.Descriptor
	Body    []byte
}

// ProvenanceStatements reads the SLSA provenance statements BuildKit
// stored in an index's attestation manifests, each about its platform
// image; manifest and blob read the index's manifests and blobs (blob is
// never asked for more than MaxStatement bytes) from wherever the index
// is. A statement that is not about the image its attestation manifest
// names is an error (sign.ErrSubject): signing it would vouch for another
// image.
func ProvenanceStatements(ctx context.Context, index []byte,
	manifest func(ctx context.Context, dgst string) ([]byte, error),
	blob func(ctx context.Context, dgst string, size int64) ([]byte, error)) ([]Statement, error) {
	var idx struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Size        int64             `json:"size"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(index, &idx); err != nil {
		return nil, fmt.Errorf("decoding the index: %w", err)
	}
	images := map[string]transfer.Descriptor{}
	for _, m := range idx.Manifests {
		images[m.Digest] = transfer.Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: m.Size}
	}
	var out []Statement
	for _, m := range idx.Manifests {
		if m.Annotations[annotationRefType] != refTypeAttestation {
			continue
		}
		subject, ok := images[m.Annotations[annotationRefDigest]]
		if !ok {
			return nil, fmt.Errorf("attestation manifest %s names image %q, which the index does not list", m.Digest, m.Annotations[annotationRefDigest])
		}
		am, err := manifest(ctx, m.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading attestation manifest %s: %w", m.Digest, err)
		}
		parsed, err := sign.ParseManifest(am)
		if err != nil {
			return nil, fmt.Errorf("attestation manifest %s: %w", m.Digest, err)
		}
		for _, l := range parsed.Layers {
			pt := l.Annotations[annotationInTotoPredicate]
			if l.MediaType != sign.PayloadTypeInToto || (pt != sign.PredicateSLSAv02 && pt != sign.PredicateSLSAv1) {
				continue
			}
			if l.Size > MaxStatement {
				return nil, fmt.Errorf("reading the provenance of %s (%s): blob %s: %d bytes, more than a statement may have (%d)",
					subject.Digest, l.Digest, l.Digest, l.Size, MaxStatement)
			}
			body, err := blob(ctx, l.Digest, l.Size)
			if err != nil {
				return nil, fmt.Errorf("reading the provenance of %s (%s): %w", subject.Digest, l.Digest, err)
			}
			var stmt sign.Statement
			if err := json.Unmarshal(body, &stmt); err != nil {
				return nil, fmt.Errorf("the provenance of %s (%s) is not an in-toto statement: %w", subject.Digest, l.Digest, err)
			}
			if !stmt.About(subject.Digest) {
				return nil, fmt.Errorf("the provenance %s in attestation manifest %s is not about image %s, which the index says it attests: %w",
					l.Digest, m.Digest, subject.Digest, sign.ErrSubject)
			}
			out = append(out, Statement{Subject: subject, Body: body})
		}
	}
	return out, nil
}
