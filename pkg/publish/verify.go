package publish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/pkg/verify"
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
	key    *verify.Key
	want   *verify.Want    // nil: no provenance asked for
	images map[string]bool // repositories to check; nil: all
}

// newVerifier checks the Verification against the images; nil when there
// is nothing to check.
func newVerifier(vs Verification, z zuul.Vars, images []zuul.Image) (*verifier, error) {
	if vs.Key == "" && !vs.Provenance && len(vs.Images) == 0 {
		return nil, nil
	}
	key, err := verify.ParseKey(vs.Key, vs.KeyParam)
	if err != nil {
		return nil, err
	}
	vf := &verifier{key: key}
	if vs.Provenance {
		if z.Change == "" || z.Patchset == "" {
			return nil, errors.New("provenance verification needs zuul.change and zuul.patchset: promote runs for a change")
		}
		if vs.GatePipeline == "" {
			return nil, errors.New("the gate pipeline the provenance must name is empty")
		}
		vf.want = &verify.Want{Change: z.Change, Patchset: z.Patchset, Pipeline: vs.GatePipeline}
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
		st := verify.NewStore(ip.r, named.Name())
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
	r, err := vf.key.Check(ctx, st.Repository(), tp.digest, tp.mediaType, vf.want)
	return Verified{Digest: r.Digest, SignatureForm: r.SignatureForm, KeyID: r.KeyID, ProvenanceBuilds: r.ProvenanceBuilds}, err
}
