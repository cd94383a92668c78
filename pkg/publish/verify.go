package publish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Verified is one staged image Promote checked before promoting it.
type Verified struct {
	// Repository is the image's repository as given in docker_images.
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	// SignatureForm is where the verified signature was found:
	// "referrer" or "tag".
	SignatureForm string `json:"signature_form"`
	// KeyID names the public key (the start of its SHA-256).
	KeyID string `json:"key_id"`
	// ProvenanceBuilds are the gate builds the verified provenance names
	// (Zuul build UUIDs), one per platform image of an index when the
	// provenance is per platform; empty when provenance was not required.
	ProvenanceBuilds []string `json:"provenance_builds"`
}

// verifier is a Verification checked and ready.
type verifier struct {
	v       *sign.Verifier
	spec    Verification
	zuul    zuul.Vars
	images  map[string]bool // repositories to check; nil: all
	keyName string
}

// newVerifier checks the Verification against the images; nil when there
// is nothing to check.
func newVerifier(vs Verification, z zuul.Vars, images []zuul.Image) (*verifier, error) {
	if vs.Key == "" {
		if vs.Provenance || len(vs.Images) > 0 {
			return nil, fmt.Errorf("%s is empty: give the public key (PEM, cosign.pub) the images must be signed with", vs.KeyParam)
		}
		return nil, nil
	}
	v, err := sign.ParsePublicKey([]byte(vs.Key))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vs.KeyParam, err)
	}
	vf := &verifier{v: v, spec: vs, zuul: z, keyName: vs.KeyParam + " (key " + v.KeyID() + ")"}
	if vs.Provenance {
		if z.Change == "" || z.Patchset == "" {
			return nil, errors.New("provenance verification needs zuul.change and zuul.patchset: promote runs for a change")
		}
		if vs.GatePipeline == "" {
			return nil, errors.New("the gate pipeline the provenance must name is empty")
		}
	}
	if len(vs.Images) > 0 {
		vf.images = map[string]bool{}
		for _, r := range vs.Images {
			if !slices.ContainsFunc(images, func(i zuul.Image) bool { return i.Repository == r }) {
				return nil, fmt.Errorf("%s names %q, which is not a repository of docker_images", vs.ImagesParam, r)
			}
			vf.images[r] = true
		}
	}
	return vf, nil
}

// verify checks every staged image (every distinct digest) before anything
// is written; the error names each image that failed and which check.
func (p *promoter) verify(ctx context.Context) error {
	vf := p.verifier
	var results []Verified
	err := p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		if vf.images != nil && !vf.images[ip.img.Repository] {
			return nil
		}
		named, err := name.NewRepository(p.t.name + "/" + ip.repo)
		if err != nil {
			return err
		}
		st := &store{r: ip.r, ref: named.Name()}
		done := map[string]bool{}
		var errs []error
		for _, tp := range ip.tags {
			if done[tp.digest] {
				continue
			}
			done[tp.digest] = true
			where := fmt.Sprintf("%s[%d] (%s), %s (%s)", p.param, ip.index, ip.img.Repository, p.t.ref(ip.repo, tp.staging), tp.digest)
			if tp.already {
				where = fmt.Sprintf("%s[%d] (%s), %s (%s)", p.param, ip.index, ip.img.Repository, p.t.ref(ip.repo, tp.tag), tp.digest)
			}
			r, err := vf.check(ctx, st, tp)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			r.Repository = ip.img.Repository
			p.mu.Lock()
			results = append(results, r)
			p.mu.Unlock()
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	slices.SortFunc(results, func(a, b Verified) int { return strings.Compare(a.Repository+a.Digest, b.Repository+b.Digest) })
	p.res.Verified = append(p.res.Verified, results...)
	return nil
}

// check verifies one staged manifest: its signature, then its provenance.
func (vf *verifier) check(ctx context.Context, st *store, tp *tagPlan) (Verified, error) {
	r := Verified{Digest: tp.digest, KeyID: vf.v.KeyID(), ProvenanceBuilds: []string{}}
	form, err := st.verifySignature(ctx, vf.v, tp.digest)
	if err != nil {
		if errors.Is(err, ErrNotSigned) {
			return r, fmt.Errorf("%w (%s): %w", ErrNotSigned, vf.keyName, err)
		}
		return r, fmt.Errorf("checking the signature: %w", err)
	}
	r.SignatureForm = form
	if !vf.spec.Provenance {
		return r, nil
	}
	// Provenance of the manifest itself, or (BuildKit's, per platform)
	// of every platform image of an index.
	build, reasons, err := vf.provenance(ctx, st, tp.digest)
	if err != nil {
		return r, err
	}
	if build != "" {
		r.ProvenanceBuilds = append(r.ProvenanceBuilds, build)
		return r, nil
	}
	if oci.IsIndex(tp.mediaType) {
		m, err := st.r.Get(ctx, tp.digest)
		if err != nil {
			return r, err
		}
		children, err := platformManifests(m.Body)
		if err != nil {
			return r, err
		}
		var missing []error
		for _, c := range children {
			b, why, err := vf.provenance(ctx, st, c.Digest)
			if err != nil {
				return r, err
			}
			if b == "" {
				missing = append(missing, fmt.Errorf("platform image %s: %s", c.Digest, describeMissing(why)))
				continue
			}
			r.ProvenanceBuilds = append(r.ProvenanceBuilds, b)
		}
		if len(children) > 0 && len(missing) == 0 {
			return r, nil
		}
		reasons = append(reasons, missing...)
	}
	return r, fmt.Errorf("%w: no provenance attestation signed with %s names change %s, patchset %s and a build of pipeline %s: %s",
		ErrNoProvenance, vf.keyName, vf.zuul.Change, vf.zuul.Patchset, vf.spec.GatePipeline, describeMissing(reasons))
}

// provenance returns the build UUID of a matching provenance of dgst, or
// "" and why none matched.
func (vf *verifier) provenance(ctx context.Context, st *store, dgst string) (string, []error, error) {
	builds, reasons, err := st.provenance(ctx, vf.v, dgst)
	if err != nil {
		return "", nil, fmt.Errorf("reading the attestations of %s: %w", dgst, err)
	}
	for _, b := range builds {
		switch {
		case b.Change != vf.zuul.Change || b.Patchset != vf.zuul.Patchset:
			reasons = append(reasons, fmt.Errorf("a provenance names change %q, patchset %q", b.Change, b.Patchset))
		case b.Pipeline != vf.spec.GatePipeline:
			reasons = append(reasons, fmt.Errorf("a provenance names pipeline %q", b.Pipeline))
		case b.Build == "":
			reasons = append(reasons, errors.New("a provenance names no build"))
		default:
			return b.Build, nil, nil
		}
	}
	return "", reasons, nil
}

func describeMissing(reasons []error) string {
	if len(reasons) == 0 {
		return "no signed SLSA provenance attestation found"
	}
	var s []string
	for _, e := range dedupe(reasons) {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}
