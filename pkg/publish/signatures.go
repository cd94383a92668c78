package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// Signature storage forms, as results name them.
const (
	// FormReferrer is an OCI 1.1 referrer of the image (an artifact
	// manifest with a subject), for registries with the referrers API.
	FormReferrer = "referrer"
	// FormTag is cosign's tag scheme, sha256-<hex>.sig (or .att), for
	// registries without it.
	FormTag = "tag"
)

// store is one target repository's signature storage: the form its
// registry takes, found once (sigForm) and kept for the repository's other
// digests.
type store struct {
	r *transfer.Repository
	// ref is the repository as signatures name it (docker-reference):
	// registry/name as go-containerregistry spells it.
	ref string

	once sync.Once
	form string
	err  error
}

// sigForm detects whether the registry serves the referrers API: 200 to
// GET /v2/<name>/referrers/<digest> is a yes, 404 a no (distribution-spec
// v1.1, "Listing Referrers"); anything else (401, 403, 5xx) is an error.
// Putting a referrer then confirms it: a registry that does not answer
// with OCI-Subject gets the tag scheme instead (putReferrer).
func (s *store) sigForm(ctx context.Context, dgst string) (string, error) {
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

// candidate is a manifest that may hold signatures or attestations of an
// image, and where it was found.
type candidate struct {
	form   string
	digest string // of the candidate manifest
	m      *sign.Manifest
}

// candidates lists the manifests holding signatures (att false) or
// attestations (att true) of dgst: its referrers of the right artifact type,
// when the registry serves the API, and cosign's tag.
func (s *store) candidates(ctx context.Context, dgst string, att bool) ([]candidate, error) {
	var out []candidate
	artifactType := sign.ArtifactTypeSignature
	if att {
		artifactType = "" // cosign writes in-toto referrers; BuildKit's differ: read all, keep DSSE layers
	}
	refs, err := s.r.Referrers(ctx, dgst, artifactType)
	switch {
	case err == nil:
		for _, ref := range refs {
			if att && ref.ArtifactType == sign.ArtifactTypeSignature {
				continue
			}
			m, err := s.manifest(ctx, ref.Digest)
			if err != nil {
				return nil, err
			}
			out = append(out, candidate{form: FormReferrer, digest: ref.Digest, m: m})
		}
	case errors.Is(err, oci.ErrNotFound):
	default:
		return nil, fmt.Errorf("listing referrers: %w", err)
	}
	tag := sign.SignatureTag(dgst)
	if att {
		tag = sign.AttestationTag(dgst)
	}
	tm, err := s.r.Get(ctx, tag)
	switch {
	case err == nil:
		m, err := sign.ParseManifest(tm.Body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.r.Ref(tag), err)
		}
		out = append(out, candidate{form: FormTag, digest: tm.Digest, m: m})
	case errors.Is(err, oci.ErrNotFound):
	default:
		return nil, err
	}
	return out, nil
}

func (s *store) manifest(ctx context.Context, dgst string) (*sign.Manifest, error) {
	tm, err := s.r.Get(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return sign.ParseManifest(tm.Body)
}

// verifySignature looks for a signature of dgst that verifies with v: it
// returns the form it was found in, or an error saying what was found.
func (s *store) verifySignature(ctx context.Context, v *sign.Verifier, dgst string) (string, error) {
	cands, err := s.candidates(ctx, dgst, false)
	if err != nil {
		return "", err
	}
	var reasons []error
	for _, c := range cands {
		for _, l := range c.m.Layers {
			if l.MediaType != sign.MediaTypeSimpleSigning {
				continue
			}
			payload, err := s.r.Blob(ctx, l.Digest)
			if err != nil {
				return "", err
			}
			err = v.VerifyImage(l, payload, dgst)
			if err == nil {
				return c.form, nil
			}
			reasons = append(reasons, err)
		}
	}
	if len(reasons) == 0 {
		return "", fmt.Errorf("%w: no signature of %s found (no referrer of type %s, no tag %s)",
			ErrNotSigned, dgst, sign.ArtifactTypeSignature, sign.SignatureTag(dgst))
	}
	return "", fmt.Errorf("%w: none of the %d signatures of %s verifies with key %s: %w",
		ErrNotSigned, len(reasons), dgst, v.KeyID(), errors.Join(dedupe(reasons)...))
}

// provenance looks for an SLSA provenance attestation of dgst signed with
// v's key and returns the Zuul builds they name (with the reasons the
// others were rejected).
func (s *store) provenance(ctx context.Context, v *sign.Verifier, dgst string) ([]sign.ZuulBuild, []error, error) {
	cands, err := s.candidates(ctx, dgst, true)
	if err != nil {
		return nil, nil, err
	}
	var builds []sign.ZuulBuild
	var reasons []error
	for _, c := range cands {
		for _, l := range c.m.Layers {
			if l.MediaType != sign.MediaTypeDSSE {
				continue
			}
			env, err := s.r.Blob(ctx, l.Digest)
			if err != nil {
				return nil, nil, err
			}
			st, err := v.VerifyAttestation(env, dgst)
			if err != nil {
				reasons = append(reasons, fmt.Errorf("attestation %s: %w", l.Digest, err))
				continue
			}
			zb, ok, err := sign.Provenance(st)
			switch {
			case err != nil:
				reasons = append(reasons, fmt.Errorf("attestation %s: %w", l.Digest, err))
			case ok:
				builds = append(builds, zb)
			}
		}
	}
	return builds, reasons, nil
}

// dedupe drops repeated messages.
func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

// platformManifests lists the platform images of an index (BuildKit's
// attestation manifests, platform unknown/unknown, are not images).
func platformManifests(body []byte) ([]transfer.Descriptor, error) {
	var idx struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Size        int64             `json:"size"`
			Annotations map[string]string `json:"annotations"`
			Platform    *struct {
				OS string `json:"os"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("decoding the index: %w", err)
	}
	var out []transfer.Descriptor
	for _, m := range idx.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" || (m.Platform != nil && m.Platform.OS == "unknown") {
			continue
		}
		out = append(out, transfer.Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: m.Size})
	}
	return out, nil
}
