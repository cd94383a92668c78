package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
)

// WithReferrers makes every copy carry what refers to the manifests it
// copies (the image or index, and each manifest of an index): their OCI
// 1.1 referrers (signatures, attestations, SBOMs) and cosign's tags
// (sha256-<hex>.sig, .att, .sbom). They are copied once the image is in
// place, even when the target tag was already up to date, so signatures
// added since a first copy follow on the next.
//
// Referrers keep their bytes, and so their digest and subject, where the
// target serves the referrers API (GET /v2/<name>/referrers/<digest>
// answering 200, and the OCI-Subject header on the put). Where it does
// not, a cosign signature referrer joins the target's sha256-<hex>.sig tag
// and an attestation its .att tag (the forms cosign reads there), and any
// other referrer is stored by digest and listed in the referrers tag
// schema's index under sha256-<hex> (distribution-spec v1.1). A cosign tag
// the target lacks is copied byte for byte; one it has with other content
// gets the union of both sides' layers. Nothing is carried in Plan or
// from an image layout. A source without the referrers API (404, or 405)
// has no referrers to carry; any other failure fails the copy (StepReferrers).
func WithReferrers() Option {
	return func(c *Client) error {
		c.referrers = true
		return nil
	}
}

// cosignSuffixes are the tags cosign keeps beside an image's digest.
var cosignSuffixes = []string{"sig", "att", "sbom"}

// carryReferrers copies the referrers and cosign tags of m and of its
// children from sc to dc; it returns how many manifests it wrote.
func (s *session) carryReferrers(ctx context.Context, sc *Repository, dc *Repository, m *manifest) (int, error) {
	digests := []digest.Digest{m.digest}
	for _, c := range m.children {
		digests = append(digests, c.Digest)
	}
	n := 0
	for _, d := range digests {
		// Once per target repository and digest: tags of one image
		// share its referrers.
		v, leader, err := s.once(ctx, "referrers "+oci.CanonicalHost(dc.host)+"/"+dc.name+"@"+d.String(), func() (string, error) {
			k, err := s.carryDigest(ctx, sc, dc, d)
			return fmt.Sprint(k), err
		})
		if err != nil {
			return n, err
		}
		if leader {
			var k int
			fmt.Sscan(v, &k)
			n += k
		}
	}
	return n, nil
}

// carryDigest carries what refers to one digest.
func (s *session) carryDigest(ctx context.Context, sc, dc *Repository, d digest.Digest) (int, error) {
	n := 0
	refs, err := sc.Referrers(ctx, d.String(), "")
	switch {
	case noReferrersAPI(err):
	case err != nil:
		return n, s.fail(sc.Ref(d.String()), StepReferrers, d.String(), err)
	}
	for _, ref := range refs {
		wrote, err := s.carryReferrer(ctx, sc, dc, d, ref)
		if err != nil {
			return n, s.fail(sc.Ref(ref.Digest), StepReferrers, ref.Digest, fmt.Errorf("carrying referrer of %s: %w", d, err))
		}
		if wrote {
			n++
		}
	}
	for _, suffix := range cosignSuffixes {
		tag := strings.Replace(d.String(), ":", "-", 1) + "." + suffix
		wrote, err := s.carryCosignTag(ctx, sc, dc, tag, nil)
		if err != nil {
			return n, s.fail(sc.Ref(tag), StepReferrers, d.String(), err)
		}
		if wrote {
			n++
		}
	}
	return n, nil
}

// noReferrersAPI is the answer of a registry without the referrers API:
// 404 as the distribution spec says, or 405 (UNSUPPORTED) as some
// registries answer an unknown route.
func noReferrersAPI(err error) bool {
	return errors.Is(err, oci.ErrNotFound) || errors.Is(err, oci.ErrUnsupported)
}

// referrersAPI reports whether dc's registry serves the referrers API,
// asked once per target repository.
func (s *session) referrersAPI(ctx context.Context, dc *Repository, d digest.Digest) (bool, error) {
	v, _, err := s.once(ctx, "referrers api "+oci.CanonicalHost(dc.host)+"/"+dc.name, func() (string, error) {
		_, err := dc.Referrers(ctx, d.String(), "")
		switch {
		case err == nil:
			return "yes", nil
		case noReferrersAPI(err):
			return "no", nil
		default:
			return "", fmt.Errorf("probing the referrers API of the target: %w", err)
		}
	})
	return v == "yes", err
}

// carryReferrer copies one referrer of subject; wrote is false when the
// target had it.
func (s *session) carryReferrer(ctx context.Context, sc, dc *Repository, subject digest.Digest, ref Referrer) (wrote bool, err error) {
	rd, err := digest.Parse(ref.Digest)
	if err != nil {
		return false, fmt.Errorf("%w: referrer digest %q: %v", ErrUnsupportedManifest, ref.Digest, err)
	}
	api, err := s.referrersAPI(ctx, dc, subject)
	if err != nil {
		return false, err
	}
	if api {
		if cur, err := dc.headDigest(ctx, ref.Digest); err != nil {
			return false, err
		} else if cur == rd {
			return false, nil
		}
	}
	rm, err := sc.getManifest(ctx, ref.Digest)
	if err != nil {
		return false, err
	}
	var cnt counters
	if err := s.copyContent(ctx, sc, dc, rm, &cnt, 1); err != nil {
		return false, err
	}
	if api {
		got, err := dc.PutSubject(ctx, ref.Digest, &Manifest{MediaType: rm.mediaType, Digest: ref.Digest, Body: rm.raw})
		if err != nil {
			return false, err
		}
		if got == subject.String() {
			return true, nil
		}
		// Stored, but the registry did not index the subject: fall back.
	}
	sm, err := sign.ParseManifest(rm.raw)
	if err != nil {
		return false, err
	}
	kind := ""
	switch {
	case ref.ArtifactType == sign.ArtifactTypeSignature || sm.ArtifactType == sign.ArtifactTypeSignature:
		kind = "sig"
	case hasLayer(sm, sign.MediaTypeDSSE):
		kind = "att"
	}
	if kind != "" {
		return s.carryCosignTag(ctx, sc, dc, strings.Replace(subject.String(), ":", "-", 1)+"."+kind, sm.Layers)
	}
	if !api {
		cur, err := dc.headDigest(ctx, ref.Digest)
		if err != nil {
			return false, err
		}
		if cur != rd {
			if err := dc.putManifest(ctx, ref.Digest, rm); err != nil {
				return false, err
			}
			wrote = true
		}
	}
	added, err := addToReferrersTag(ctx, dc, subject, ref, rm)
	return wrote || added, err
}

func hasLayer(m *sign.Manifest, mediaType string) bool {
	for _, l := range m.Layers {
		if l.MediaType == mediaType {
			return true
		}
	}
	return false
}

// carryCosignTag copies cosign's tag from sc to dc, or, with layers (a
// referrer's, whose blobs are already on dc), adds those layers to dc's
// tag. A tag dc lacks is copied byte for byte; one it has gets the union.
func (s *session) carryCosignTag(ctx context.Context, sc, dc *Repository, tag string, layers []sign.Descriptor) (bool, error) {
	var src *manifest
	if layers == nil {
		var err error
		src, err = sc.getManifest(ctx, tag)
		if errors.Is(err, oci.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		sm, err := sign.ParseManifest(src.raw)
		if err != nil {
			return false, err
		}
		layers = sm.Layers
	}
	cur, err := dc.Get(ctx, tag)
	var have []sign.Descriptor
	switch {
	case errors.Is(err, oci.ErrNotFound):
	case err != nil:
		return false, err
	case src != nil && cur.Digest == src.digest.String():
		return false, nil
	default:
		cm, err := sign.ParseManifest(cur.Body)
		if err != nil {
			return false, fmt.Errorf("%s: %w", dc.Ref(tag), err)
		}
		have = cm.Layers
	}
	if have == nil && src != nil {
		var cnt counters
		if err := s.copyContent(ctx, sc, dc, src, &cnt, 1); err != nil {
			return false, err
		}
		return true, dc.putManifest(ctx, tag, src)
	}
	merged, added := mergeLayers(have, layers)
	if !added {
		return false, nil
	}
	if src != nil {
		var cnt counters
		if err := s.copyContent(ctx, sc, dc, src, &cnt, 1); err != nil {
			return false, err
		}
	}
	enc, err := sign.TagManifest(merged, nil)
	if err != nil {
		return false, err
	}
	for _, b := range enc.Blobs {
		if _, err := dc.PushBlob(ctx, b.Data); err != nil {
			return false, err
		}
	}
	return true, dc.Put(ctx, tag, &Manifest{MediaType: oci.MediaTypeOCIManifest, Digest: enc.Digest, Body: enc.Body})
}

// mergeLayers appends the layers of add that have is missing.
func mergeLayers(have, add []sign.Descriptor) ([]sign.Descriptor, bool) {
	seen := map[string]bool{}
	for _, l := range have {
		seen[l.Digest] = true
	}
	out := append([]sign.Descriptor{}, have...)
	added := false
	for _, l := range add {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			out = append(out, l)
			added = true
		}
	}
	return out, added
}

// addToReferrersTag lists ref in the referrers tag schema's index of
// subject (tag sha256-<hex>), for a registry without the referrers API.
func addToReferrersTag(ctx context.Context, dc *Repository, subject digest.Digest, ref Referrer, rm *manifest) (bool, error) {
	tag := strings.Replace(subject.String(), ":", "-", 1)
	idx := struct {
		SchemaVersion int        `json:"schemaVersion"`
		MediaType     string     `json:"mediaType"`
		Manifests     []Referrer `json:"manifests"`
	}{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex}
	cur, err := dc.Get(ctx, tag)
	switch {
	case errors.Is(err, oci.ErrNotFound):
	case err != nil:
		return false, err
	default:
		if err := json.Unmarshal(cur.Body, &idx); err != nil {
			return false, fmt.Errorf("%s: decoding the referrers index: %w", dc.Ref(tag), err)
		}
	}
	for _, m := range idx.Manifests {
		if m.Digest == ref.Digest {
			return false, nil
		}
	}
	ref.MediaType, ref.Size = rm.mediaType, int64(len(rm.raw))
	idx.Manifests = append(idx.Manifests, ref)
	body, err := json.Marshal(idx)
	if err != nil {
		return false, err
	}
	return true, dc.Put(ctx, tag, &Manifest{MediaType: oci.MediaTypeOCIIndex, Digest: digest.FromBytes(body).String(), Body: body})
}
