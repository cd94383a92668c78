package publish

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/ocilayout"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// BuildKit's attestation manifests (BuildKit docs, "Attestation storage"):
// an index lists, beside each platform image, a manifest annotated with
// these keys whose layers are in-toto statements, each annotated with its
// predicate type.
const (
	annotationRefType         = "vnd.docker.reference.type"
	annotationRefDigest       = "vnd.docker.reference.digest"
	refTypeAttestation        = "attestation-manifest"
	annotationInTotoPredicate = "in-toto.io/predicate-type"
	// maxStatement bounds a statement read whole (mode=max provenance of a
	// long Dockerfile is some hundred kB).
	maxStatement = 16 << 20
)

// attestJob is one provenance statement to sign for one platform image.
type attestJob struct {
	where, repository string
	st                *store
	subject           transfer.Descriptor
	statement         []byte
}

// provenanceStatements reads, from the source, the SLSA provenance
// statements BuildKit stored in an index's attestation manifests, one job
// per statement, each about its platform image. A statement that is not
// about the image its attestation manifest names is an error: signing it
// would vouch for another image.
func provenanceStatements(ctx context.Context, client *transfer.Client, source *uploadSource, src string,
	index []byte, base attestJob) ([]attestJob, error) {
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
	var out []attestJob
	for _, m := range idx.Manifests {
		if m.Annotations[annotationRefType] != refTypeAttestation {
			continue
		}
		subject, ok := images[m.Annotations[annotationRefDigest]]
		if !ok {
			return nil, fmt.Errorf("attestation manifest %s names image %q, which the index does not list", m.Digest, m.Annotations[annotationRefDigest])
		}
		am, err := source.manifest(ctx, client, src, m.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading attestation manifest %s: %w", m.Digest, err)
		}
		parsed, err := sign.ParseManifest(am.Body)
		if err != nil {
			return nil, fmt.Errorf("attestation manifest %s: %w", m.Digest, err)
		}
		for _, l := range parsed.Layers {
			pt := l.Annotations[annotationInTotoPredicate]
			if l.MediaType != sign.PayloadTypeInToto || (pt != sign.PredicateSLSAv02 && pt != sign.PredicateSLSAv1) {
				continue
			}
			body, err := source.blob(ctx, client, src, l.Digest, l.Size)
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
			j := base
			j.subject, j.statement = subject, body
			out = append(out, j)
		}
	}
	return out, nil
}

// blob reads a small blob of the image an upload's source names, from the
// buildset registry or the image layout, checked against its digest.
func (s *uploadSource) blob(ctx context.Context, client *transfer.Client, source, dgst string, size int64) ([]byte, error) {
	if size > maxStatement {
		return nil, fmt.Errorf("blob %s: %d bytes, more than a statement may have (%d)", dgst, size, maxStatement)
	}
	if s.br != nil {
		host := s.br.Address()
		r, err := client.Repository(ctx, host, sourceRepo(source, host), false)
		if err != nil {
			return nil, err
		}
		return r.Blob(ctx, dgst)
	}
	l, err := ocilayout.Open(s.layout)
	if err != nil {
		return nil, err
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, err
	}
	f, err := l.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStatement+1))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); d.Algorithm() != digest.SHA256 || hex.EncodeToString(sum[:]) != d.Encoded() {
		return nil, fmt.Errorf("blob %s in the image layout %s does not match its digest", dgst, s.layout)
	}
	return b, nil
}

// attestOne signs one provenance statement into a DSSE envelope (as cosign
// attest --key does) and stores it beside the image's signatures, in the
// same form: an OCI 1.1 referrer (artifactType application/vnd.in-toto+json)
// or cosign's sha256-<hex>.att tag. An envelope of the same statement
// signed with the key already there is kept, and nothing is added.
func attestOne(ctx context.Context, st *store, signer *sign.Signer, j attestJob, check bool) (form string, changed bool, err error) {
	if form, ok, err := st.hasAttestation(ctx, signer.Verifier(), j.subject.Digest, j.statement); err != nil {
		return "", false, err
	} else if ok {
		return form, false, nil
	}
	form, err = st.sigForm(ctx, j.subject.Digest)
	if err != nil {
		return "", false, err
	}
	if check {
		return form, true, nil
	}
	env, err := signer.Attest(j.statement)
	if err != nil {
		return "", false, err
	}
	var refErr error
	if form == FormReferrer {
		ok, err := putReferrer(ctx, st, j.subject, sign.ArtifactTypeInToto, env)
		if err == nil && ok {
			return FormReferrer, true, nil
		}
		refErr = err
	}
	tag := sign.AttestationTag(j.subject.Digest)
	if err := putSigTag(ctx, st, env, tag); err != nil {
		if refErr != nil {
			return "", false, fmt.Errorf("the registry refused the attestation both as an OCI 1.1 referrer (%w) and under cosign's tag %s (%w)", refErr, tag, err)
		}
		return "", false, fmt.Errorf("storing the attestation under cosign's tag %s: %w", tag, err)
	}
	return FormTag, true, nil
}

// hasAttestation reports whether an envelope of statement, signed with v's
// key, is stored for dgst, and in which form.
func (s *store) hasAttestation(ctx context.Context, v *sign.Verifier, dgst string, statement []byte) (string, bool, error) {
	cands, err := s.candidates(ctx, dgst, true)
	if err != nil {
		return "", false, err
	}
	for _, c := range cands {
		for _, l := range c.m.Layers {
			if l.MediaType != sign.MediaTypeDSSE {
				continue
			}
			b, err := s.r.Blob(ctx, l.Digest)
			if err != nil {
				return "", false, err
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
				return c.form, true, nil
			} else if !errors.Is(err, sign.ErrBadSignature) {
				return "", false, err
			}
		}
	}
	return "", false, nil
}
