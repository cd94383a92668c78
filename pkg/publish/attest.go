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
	"github.com/imagegate/imagegate/pkg/verify"
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
// attest --key does) and stores it under cosign's sha256-<hex>.att tag,
// which cosign verify-attestation reads (cosign 2.x reads key-signed
// attestations only there), and, when the registry serves the referrers
// API, also as an OCI 1.1 referrer of the image (artifactType
// application/vnd.in-toto+json), beside the signature, where referrer-aware
// tools and copies find it. The form reported is the signature's. A place
// that already holds the same statement signed with the key is left alone.
func attestOne(ctx context.Context, st *store, signer *sign.Signer, j attestJob, check bool) (form string, changed bool, err error) {
	have, err := st.attestationForms(ctx, signer.Verifier(), j.subject.Digest, j.statement)
	if err != nil {
		return "", false, err
	}
	form, err = st.sigForm(ctx, j.subject.Digest)
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
	env, err := signer.Attest(j.statement)
	if err != nil {
		return "", false, err
	}
	for _, f := range todo {
		switch f {
		case FormReferrer:
			ok, err := putReferrer(ctx, st, j.subject, sign.ArtifactTypeInToto, env)
			if err != nil {
				return "", false, fmt.Errorf("storing the attestation as an OCI 1.1 referrer: %w", err)
			}
			if !ok {
				// Stored without its subject being indexed: the
				// tag is where it is found.
				form = FormTag
			}
		case FormTag:
			tag := sign.AttestationTag(j.subject.Digest)
			if err := putSigTag(ctx, st, env, tag); err != nil {
				return "", false, fmt.Errorf("storing the attestation under cosign's tag %s: %w", tag, err)
			}
		}
	}
	return form, true, nil
}

// attestationForms reports where an envelope of statement, signed with v's
// key, is stored for dgst: FormReferrer, FormTag.
func (s *store) attestationForms(ctx context.Context, v *sign.Verifier, dgst string, statement []byte) (map[string]bool, error) {
	cands, err := verify.Candidates(ctx, s.r, dgst, true)
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
