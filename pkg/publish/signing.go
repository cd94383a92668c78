package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
)

// Errors of signature and provenance checks, for errors.Is.
var (
	// ErrNotSigned is an image without a signature that verifies with the
	// configured public key.
	ErrNotSigned = verify.ErrNotSigned
	// ErrNoProvenance is an image without a signed provenance attestation
	// naming the change and its gate build.
	ErrNoProvenance = verify.ErrNoProvenance
)

// Signing is a private key Upload signs every staged image with (see
// WithSigning): Key is its PEM (cosign's encrypted format, or unencrypted
// PKCS #8, SEC 1 or PKCS #1), Password the encrypted key's. KeyParam and
// PasswordParam name them in errors (the module parameters).
type Signing struct {
	Key, Password           string
	KeyParam, PasswordParam string
}

// DockerSigning is the signing parameters of docker_image_upload.
type DockerSigning struct {
	// Key is the private key (PEM) every uploaded image is signed with;
	// empty uploads unsigned images.
	Key      string `ansible:"docker_image_signing_key,no_log"`
	Password string `ansible:"docker_image_signing_key_password,no_log"`
}

// Signing is the Signing the parameters ask for.
func (d DockerSigning) Signing() Signing {
	return Signing{Key: d.Key, Password: d.Password, KeyParam: "docker_image_signing_key", PasswordParam: "docker_image_signing_key_password"}
}

// ContainerSigning is the signing parameters of container_image_upload,
// as DockerSigning's for the container-image family.
type ContainerSigning struct {
	// Key is the private key (PEM) every uploaded image is signed with;
	// empty uploads unsigned images.
	Key      string `ansible:"container_image_signing_key,no_log"`
	Password string `ansible:"container_image_signing_key_password,no_log"`
}

// Signing is the Signing the parameters ask for.
func (c ContainerSigning) Signing() Signing {
	return Signing{Key: c.Key, Password: c.Password, KeyParam: "container_image_signing_key", PasswordParam: "container_image_signing_key_password"}
}

// WithSigning makes Upload (and UploadContainer) sign every image it stages with the key
// (cosign's formats, see package sign) before its tag is written; a
// Signing with an empty Key signs nothing. The default signs nothing.
func WithSigning(s Signing) Option { return func(o *options) { o.signing = s } }

// Verification is what Promote requires of every staged image before it
// promotes any (see WithVerification). Key is the public key (PEM); an
// empty Key checks nothing. Provenance also requires a signed SLSA
// provenance attestation naming zuul.change, zuul.patchset and a build of
// GatePipeline. Images limits the checks to these repositories (as
// docker_images names them); empty checks every image. The Param fields
// name the parameters in errors.
type Verification struct {
	Key          string
	Provenance   bool
	Images       []string
	GatePipeline string

	KeyParam, ImagesParam string
}

// DockerVerification is the verification parameters of
// docker_image_promote.
type DockerVerification struct {
	// Key is the public key (PEM, cosign.pub) whose signature every
	// promoted image must carry; empty checks nothing.
	Key string `ansible:"docker_image_verify_key"`
	// Provenance also requires a provenance attestation signed with Key
	// naming the change, its patchset and a build of GatePipeline.
	Provenance bool `ansible:"docker_image_verify_provenance" default:"false"`
	// Images limits the checks to these repositories; empty checks all.
	Images []string `ansible:"docker_image_verify_images"`
	// GatePipeline is the pipeline the provenance's build must be of.
	GatePipeline string `ansible:"docker_image_verify_pipeline" default:"gate"`
}

// Verification is the Verification the parameters ask for.
func (d DockerVerification) Verification() Verification {
	return Verification{Key: d.Key, Provenance: d.Provenance, Images: d.Images, GatePipeline: d.GatePipeline,
		KeyParam: "docker_image_verify_key", ImagesParam: "docker_image_verify_images"}
}

// ContainerVerification is the verification parameters of
// container_image_promote, as DockerVerification's for the
// container-image family.
type ContainerVerification struct {
	// Key is the public key (PEM, cosign.pub) whose signature every
	// promoted image must carry; empty checks nothing.
	Key string `ansible:"container_image_verify_key"`
	// Provenance also requires a provenance attestation signed with Key
	// naming the change, its patchset and a build of GatePipeline.
	Provenance bool `ansible:"container_image_verify_provenance" default:"false"`
	// Images limits the checks to these repositories (as container_images
	// names them); empty checks all.
	Images []string `ansible:"container_image_verify_images"`
	// GatePipeline is the pipeline the provenance's build must be of.
	GatePipeline string `ansible:"container_image_verify_pipeline" default:"gate"`
}

// Verification is the Verification the parameters ask for.
func (c ContainerVerification) Verification() Verification {
	return Verification{Key: c.Key, Provenance: c.Provenance, Images: c.Images, GatePipeline: c.GatePipeline,
		KeyParam: "container_image_verify_key", ImagesParam: "container_image_verify_images"}
}

// WithVerification makes Promote (and ContainerPromote) check every image (or those named)
// before promoting any: an image that fails stops the whole promote. The
// default checks nothing.
func WithVerification(v Verification) Option { return func(o *options) { o.verify = v } }

// signer parses the signing key; nil when none was given.
func (s Signing) signer(redact func(string)) (*sign.Signer, error) {
	if s.Key == "" {
		if s.Password != "" {
			return nil, fmt.Errorf("%s is set but %s is empty: give the private key too", s.PasswordParam, s.KeyParam)
		}
		return nil, nil
	}
	redact(s.Key)
	if s.Password != "" {
		redact(s.Password)
	}
	k, err := sign.ParsePrivateKey([]byte(s.Key), []byte(s.Password))
	if errors.Is(err, sign.ErrPassword) {
		return nil, fmt.Errorf("%s: %w: give the key's password in %s", s.KeyParam, err, s.PasswordParam)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: give a private key in PEM, as cosign generate-key-pair writes it (cosign.key)", s.KeyParam, err)
	}
	return k, nil
}

// SignedImage is one manifest Upload signed, or found signed with its key.
type SignedImage struct {
	// Repository is the image's repository as given in docker_images.
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	// Form is how the signature is stored: "referrer" (an OCI 1.1
	// referrer) or "tag" (cosign's sha256-<hex>.sig tag).
	Form string `json:"form"`
	// Changed is false when a signature with the key was already there.
	Changed bool `json:"changed"`
}

// signJob is one manifest to sign.
type signJob struct {
	where, repository string // for messages and results
	st                *store
	desc              transfer.Descriptor
}

// signUploads signs every manifest the upload is about to tag, before any
// tag is written: each image or index, and each platform image of an
// index (what cosign sign --recursive signs), so that cosign verify of the
// staged tag, of the final tag after promote (the same digest), or of one
// platform's digest finds a signature. Only reads happen in check mode.
// targetOf names each planned tag's target registry and repository there.
func signUploads(ctx context.Context, client *transfer.Client, targetOf func(UploadedTag) (*target, string), source *uploadSource, signer *sign.Signer,
	plan []UploadedTag, results []Result, jobs int, check bool) (signed, attested []SignedImage, err error) {
	repos := map[string]*store{}
	var todo []signJob
	var attest []attestJob
	seen := map[string]bool{}
	var errs []error
	for i, u := range plan {
		t, repo := targetOf(u)
		repo = t.host + "/" + repo // the key of repos and seen
		st := repos[repo]
		if st == nil {
			r, err := client.Repository(ctx, t.host, strings.TrimPrefix(repo, t.host+"/"), true)
			if err != nil {
				return nil, nil, err
			}
			named, err := name.NewRepository(t.name + "/" + strings.TrimPrefix(repo, t.host+"/"))
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", u.where(), err)
			}
			st = verify.NewStore(r, named.Name())
			repos[repo] = st
		}
		r := results[i]
		if seen[repo+"@"+r.Digest] {
			continue
		}
		seen[repo+"@"+r.Digest] = true
		param := u.param
		if param == "" {
			param = "docker_images"
		}
		where := fmt.Sprintf("%s[%d] (%s)", param, u.index, u.Repository)
		// The subject's size, and an index's platform images, come from
		// the source: the target has nothing yet.
		m, err := source.manifest(ctx, client, u.Source, r.Digest)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: reading %s to sign it: %w", where, r.Digest, err))
			continue
		}
		todo = append(todo, signJob{where: where, repository: u.Repository, st: st,
			desc: transfer.Descriptor{Digest: r.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}})
		if !oci.IsIndex(m.MediaType) {
			continue
		}
		children, err := verify.PlatformManifests(m.Body)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		for _, c := range children {
			if !seen[repo+"@"+c.Digest] {
				seen[repo+"@"+c.Digest] = true
				todo = append(todo, signJob{where: where, repository: u.Repository, st: st, desc: c})
			}
		}
		// BuildKit's provenance of each platform image, signed as
		// cosign attest signs it and stored beside its signature.
		atts, err := provenanceStatements(ctx, client, source, u.Source, m.Body, attestJob{where: where, repository: u.Repository, st: st})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		attest = append(attest, atts...)
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	out := make([]SignedImage, len(todo))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	var mu sync.Mutex
	for i, j := range todo {
		g.Go(func() error {
			form, changed, err := signOne(gctx, j.st, signer, j.desc, check)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: signing %s: %w", j.where, j.desc.Digest, err))
				mu.Unlock()
				return nil
			}
			out[i] = SignedImage{Repository: j.repository, Digest: j.desc.Digest, Form: form, Changed: changed}
			return nil
		})
	}
	atts := make([]SignedImage, len(attest))
	for i, j := range attest {
		g.Go(func() error {
			form, changed, err := attestOne(gctx, j.st, signer, j, check)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: attesting the provenance of %s: %w", j.where, j.subject.Digest, err))
				mu.Unlock()
				return nil
			}
			atts[i] = SignedImage{Repository: j.repository, Digest: j.subject.Digest, Form: form, Changed: changed}
			return nil
		})
	}
	_ = g.Wait()
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, nil, errors.Join(errs...)
	}
	return out, atts, nil
}

// sourceRepo is the repository of a buildset registry reference host/repo:tag.
func sourceRepo(ref, host string) string {
	r := strings.TrimPrefix(ref, host+"/")
	if i := strings.LastIndex(r, ":"); i > 0 {
		r = r[:i]
	}
	return r
}

// signOne signs one manifest unless a signature with the key is already
// there (an upload run again changes nothing).
func signOne(ctx context.Context, st *store, signer *sign.Signer, desc transfer.Descriptor, check bool) (form string, changed bool, err error) {
	return st.Sign(ctx, signer, desc, check)
}
