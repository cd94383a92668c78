package publish

import "github.com/imagegate/imagegate/pkg/verify"

// Signature storage forms, as results name them (package verify's).
const (
	// FormReferrer is an OCI 1.1 referrer of the image (an artifact
	// manifest with a subject), for registries with the referrers API.
	FormReferrer = verify.FormReferrer
	// FormTag is cosign's tag scheme, sha256-<hex>.sig (or .att), for
	// registries without it.
	FormTag = verify.FormTag
)

// store is one target repository's signature storage (package verify's):
// the form its registry takes, found once and kept for the repository's
// other digests.
type store = verify.Store
