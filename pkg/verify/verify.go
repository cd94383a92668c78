// Package verify checks an image in a registry against a public key: a
// cosign signature of its digest (an OCI 1.1 referrer or cosign's
// sha256-<hex>.sig tag) and, when asked, a signed SLSA provenance
// attestation naming the Zuul change and build that made it. It reads
// through package transfer and checks with package sign; it knows Zuul
// only as the values a provenance must name (Want).
//
// Promote (package publish) checks the staged images with it before moving
// a tag; intermediate_registry_pull (package intermediate) checks the
// images of changes ahead before copying them into the buildset registry.
//
// It also stores signatures and provenance attestations (Store, in the
// form the registry takes; ProvenanceStatements reads BuildKit's): upload
// signs in the target registry with it, intermediate_registry_push in the
// intermediate registry, so that the checks find what was stored.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// Errors of the checks, for errors.Is; messages start with them.
var (
	// ErrNotSigned is an image without a signature that verifies with the
	// key.
	ErrNotSigned = errors.New("signature check failed")
	// ErrNoProvenance is an image without a signed provenance attestation
	// naming what Want asks for.
	ErrNoProvenance = errors.New("provenance check failed")
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

// Key is a public key images must be signed with, and the name errors
// give it (the parameter, and the key's ID).
type Key struct {
	v    *sign.Verifier
	name string
}

// ParseKey reads a PEM public key (cosign.pub); param names it in errors.
func ParseKey(pemKey, param string) (*Key, error) {
	if strings.TrimSpace(pemKey) == "" {
		return nil, fmt.Errorf("%s is empty: give the public key (PEM, cosign.pub) the images must be signed with", param)
	}
	v, err := sign.ParsePublicKey([]byte(pemKey))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", param, err)
	}
	return &Key{v: v, name: param + " (key " + v.KeyID() + ")"}, nil
}

// ID names the key: the start of its SHA-256.
func (k *Key) ID() string { return k.v.KeyID() }

// Want is what a provenance attestation must name. Change and Patchset
// must match; Pipeline and Build only when set; a build UUID must be
// there in any case.
type Want struct {
	Change, Patchset string
	Pipeline         string
	Build            string
}

func (w *Want) String() string {
	s := fmt.Sprintf("change %s, patchset %s", w.Change, w.Patchset)
	switch {
	case w.Build != "" && w.Pipeline != "":
		s += fmt.Sprintf(", pipeline %s and build %s", w.Pipeline, w.Build)
	case w.Build != "":
		s += " and build " + w.Build
	case w.Pipeline != "":
		s += " and a build of pipeline " + w.Pipeline
	default:
		s += " and a build"
	}
	return s
}

// Result is what Check found.
type Result struct {
	Digest string
	// SignatureForm is where the verified signature was found: FormReferrer
	// or FormTag.
	SignatureForm string
	KeyID         string
	// ProvenanceBuilds are the builds (Zuul build UUIDs) the verified
	// provenance names, one per platform image of an index when the
	// provenance is per platform; empty when none was asked for.
	ProvenanceBuilds []string
}

// Check verifies the manifest dgst (of media type mediaType) in r: a
// signature with the key, then, when want is not nil, a provenance of the
// manifest or (BuildKit's, per platform) of every platform image of an
// index. The error starts with ErrNotSigned or ErrNoProvenance when a check
// failed, and says what was found.
func (k *Key) Check(ctx context.Context, r *transfer.Repository, dgst, mediaType string, want *Want) (Result, error) {
	res := Result{Digest: dgst, KeyID: k.ID(), ProvenanceBuilds: []string{}}
	form, err := Signature(ctx, r, k.v, dgst)
	if err != nil {
		if errors.Is(err, ErrNotSigned) {
			return res, fmt.Errorf("%w (%s): %w", ErrNotSigned, k.name, err)
		}
		return res, fmt.Errorf("checking the signature: %w", err)
	}
	res.SignatureForm = form
	if want == nil {
		return res, nil
	}
	build, reasons, err := k.provenance(ctx, r, dgst, want)
	if err != nil {
		return res, err
	}
	if build != "" {
		res.ProvenanceBuilds = append(res.ProvenanceBuilds, build)
		return res, nil
	}
	if oci.IsIndex(mediaType) {
		m, err := r.Get(ctx, dgst)
		if err != nil {
			return res, err
		}
		children, err := PlatformManifests(m.Body)
		if err != nil {
			return res, err
		}
		var missing []error
		for _, c := range children {
			b, why, err := k.provenance(ctx, r, c.Digest, want)
			if err != nil {
				return res, err
			}
			if b == "" {
				missing = append(missing, fmt.Errorf("platform image %s: %s", c.Digest, describeMissing(why)))
				continue
			}
			res.ProvenanceBuilds = append(res.ProvenanceBuilds, b)
		}
		if len(children) > 0 && len(missing) == 0 {
			return res, nil
		}
		reasons = append(reasons, missing...)
	}
	return res, fmt.Errorf("%w: no provenance attestation signed with %s names %s: %s",
		ErrNoProvenance, k.name, want, describeMissing(reasons))
}

// provenance returns the build UUID of a provenance of dgst matching want,
// or "" and why none matched.
func (k *Key) provenance(ctx context.Context, r *transfer.Repository, dgst string, want *Want) (string, []error, error) {
	builds, reasons, err := provenance(ctx, r, k.v, dgst)
	if err != nil {
		return "", nil, fmt.Errorf("reading the attestations of %s: %w", dgst, err)
	}
	for _, b := range builds {
		switch {
		case b.Change != want.Change || b.Patchset != want.Patchset:
			reasons = append(reasons, fmt.Errorf("a provenance names change %q, patchset %q", b.Change, b.Patchset))
		case want.Pipeline != "" && b.Pipeline != want.Pipeline:
			reasons = append(reasons, fmt.Errorf("a provenance names pipeline %q", b.Pipeline))
		case b.Build == "":
			reasons = append(reasons, errors.New("a provenance names no build"))
		case want.Build != "" && b.Build != want.Build:
			reasons = append(reasons, fmt.Errorf("a provenance names build %q", b.Build))
		default:
			return b.Build, nil, nil
		}
	}
	return "", reasons, nil
}

// Candidate is a manifest that may hold signatures or attestations of an
// image, and where it was found (FormReferrer, FormTag).
type Candidate struct {
	Form     string
	Manifest *sign.Manifest
}

// Candidates lists the manifests holding signatures (att false) or
// attestations (att true) of dgst: its referrers of the right artifact type,
// when the registry serves the API, and cosign's tag.
func Candidates(ctx context.Context, r *transfer.Repository, dgst string, att bool) ([]Candidate, error) {
	var out []Candidate
	artifactType := sign.ArtifactTypeSignature
	if att {
		artifactType = "" // cosign writes in-toto referrers; BuildKit's differ: read all, keep DSSE layers
	}
	refs, err := r.Referrers(ctx, dgst, artifactType)
	switch {
	case err == nil:
		for _, ref := range refs {
			if att && ref.ArtifactType == sign.ArtifactTypeSignature {
				continue
			}
			tm, err := r.Get(ctx, ref.Digest)
			if err != nil {
				return nil, err
			}
			m, err := sign.ParseManifest(tm.Body)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.Ref(ref.Digest), err)
			}
			out = append(out, Candidate{Form: FormReferrer, Manifest: m})
		}
	case errors.Is(err, oci.ErrNotFound):
	default:
		return nil, fmt.Errorf("listing referrers: %w", err)
	}
	tag := sign.SignatureTag(dgst)
	if att {
		tag = sign.AttestationTag(dgst)
	}
	tm, err := r.Get(ctx, tag)
	switch {
	case err == nil:
		m, err := sign.ParseManifest(tm.Body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Ref(tag), err)
		}
		out = append(out, Candidate{Form: FormTag, Manifest: m})
	case errors.Is(err, oci.ErrNotFound):
	default:
		return nil, err
	}
	return out, nil
}

// Signature looks for a signature of dgst in r that verifies with v: it
// returns the form it was found in, or an error (ErrNotSigned when none
// verifies) saying what was found.
func Signature(ctx context.Context, r *transfer.Repository, v *sign.Verifier, dgst string) (string, error) {
	cands, err := Candidates(ctx, r, dgst, false)
	if err != nil {
		return "", err
	}
	var reasons []error
	for _, c := range cands {
		for _, l := range c.Manifest.Layers {
			if l.MediaType != sign.MediaTypeSimpleSigning {
				continue
			}
			payload, err := r.Blob(ctx, l.Digest)
			if err != nil {
				return "", err
			}
			err = v.VerifyImage(l, payload, dgst)
			if err == nil {
				return c.Form, nil
			}
			reasons = append(reasons, err)
		}
	}
	if len(reasons) == 0 {
		return "", fmt.Errorf("%w: no signature of %s found (no referrer of type %s, no tag %s)",
			ErrNotSigned, dgst, sign.ArtifactTypeSignature, sign.SignatureTag(dgst))
	}
	return "", fmt.Errorf("%w: none of the %d signatures of %s verifies with key %s: %w",
		ErrNotSigned, len(reasons), dgst, v.KeyID(), errors.Join(Dedupe(reasons)...))
}

// provenance looks for SLSA provenance attestations of dgst signed with
// v's key and returns the Zuul builds they name (with the reasons the
// others were rejected).
func provenance(ctx context.Context, r *transfer.Repository, v *sign.Verifier, dgst string) ([]sign.ZuulBuild, []error, error) {
	cands, err := Candidates(ctx, r, dgst, true)
	if err != nil {
		return nil, nil, err
	}
	var builds []sign.ZuulBuild
	var reasons []error
	for _, c := range cands {
		for _, l := range c.Manifest.Layers {
			if l.MediaType != sign.MediaTypeDSSE {
				continue
			}
			env, err := r.Blob(ctx, l.Digest)
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

func describeMissing(reasons []error) string {
	if len(reasons) == 0 {
		return "no signed SLSA provenance attestation found"
	}
	var s []string
	for _, e := range Dedupe(reasons) {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}

// Dedupe drops repeated messages.
func Dedupe(errs []error) []error {
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

// PlatformManifests lists the platform images of an index (BuildKit's
// attestation manifests, platform unknown/unknown, are not images).
func PlatformManifests(body []byte) ([]transfer.Descriptor, error) {
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
