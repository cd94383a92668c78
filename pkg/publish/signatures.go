package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
)

// Signature storage forms, as results name them (package verify's).
const (
	// FormReferrer is an OCI 1.1 referrer of the image (an artifact
	// manifest with a subject), for registries with the referrers API.
	FormReferrer = verify.FormReferrer
	// FormTag is cosign's tag scheme, sha256-<hex>.sig (or .att), for
	// registries without it.
	FormTag = verify.FormTag
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

// verifySignature looks for a signature of dgst that verifies with v: it
// returns the form it was found in, or an error saying what was found.
func (s *store) verifySignature(ctx context.Context, v *sign.Verifier, dgst string) (string, error) {
	return verify.Signature(ctx, s.r, v, dgst)
}
