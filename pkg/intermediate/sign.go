package intermediate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
)

// PushSigning is Push's signing key (issue 16): with Key, every image
// pushed is signed in the intermediate registry before its <build>_<tag>
// tag is written, with its BuildKit provenance attested, so that a later
// Pull with PullVerification's key accepts it.
type PushSigning struct {
	// Key is the private key (PEM: cosign's encrypted format, or
	// unencrypted PKCS #8, SEC 1 or PKCS #1); empty signs nothing.
	Key      string `ansible:"signing_key,no_log"`
	Password string `ansible:"signing_key_password,no_log"`
}

// signer parses the key, hiding it and its password from output; nil when
// no key was given.
func (s PushSigning) signer(redact func(string)) (*sign.Signer, error) {
	if s.Key == "" {
		if s.Password != "" {
			return nil, errors.New("signing_key_password is set but signing_key is empty: give the private key too")
		}
		return nil, nil
	}
	redact(s.Key)
	if s.Password != "" {
		redact(s.Password)
	}
	k, err := sign.ParsePrivateKey([]byte(s.Key), []byte(s.Password))
	if errors.Is(err, sign.ErrPassword) {
		return nil, fmt.Errorf("signing_key: %w: give the key's password in signing_key_password", err)
	}
	if err != nil {
		return nil, fmt.Errorf("signing_key: %w: give a private key in PEM, as cosign generate-key-pair writes it (cosign.key)", err)
	}
	return k, nil
}

// SignedImage is one manifest Push signed, or found signed with its key,
// in the intermediate registry; or one platform image whose provenance it
// attested.
type SignedImage struct {
	// Repository is the image's repository as given in docker_images.
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	// Form is how the signature is stored: "referrer" (an OCI 1.1
	// referrer) or "tag" (cosign's sha256-<hex>.sig tag).
	Form string `json:"form"`
	// Changed is false when it was already there.
	Changed bool `json:"changed"`
}

// signTask is one manifest to sign, or one statement to attest.
type signTask struct {
	where, repository string
	st                *verify.Store
	desc              transfer.Descriptor
	statement         []byte // an attestation when set
}

// signPushes signs, in the intermediate registry, every manifest the push
// is about to tag (each image or index and each platform image of an
// index, as cosign sign --recursive does) and attests each platform
// image's BuildKit provenance, read from the buildset registry, as upload
// does in the target registry. plan holds the planned copies (their
// digests); nothing is written in check mode.
func signPushes(ctx context.Context, c *transfer.Client, signer *sign.Signer, jobs []transfer.Job, plan []transfer.Result,
	images []Image, labels []string, limit int, check bool) (signed, attested []SignedImage, err error) {
	stores := map[string]*verify.Store{}
	seen := map[string]bool{}
	var tasks []signTask
	var errs []error
	for i, j := range jobs {
		src, err := transfer.ParseReference(j.Src)
		if err != nil {
			return nil, nil, err
		}
		dst, err := transfer.ParseReference(j.Dst)
		if err != nil {
			return nil, nil, err
		}
		key := dst.Context().Name()
		st := stores[key]
		if st == nil {
			r, err := c.Repository(ctx, dst.Context().RegistryStr(), dst.Context().RepositoryStr(), true)
			if err != nil {
				return nil, nil, err
			}
			named, err := name.NewRepository(key)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", labels[i], err)
			}
			st = verify.NewStore(r, named.Name())
			stores[key] = st
		}
		dgst := plan[i].Digest
		if seen[key+"@"+dgst] {
			continue
		}
		seen[key+"@"+dgst] = true
		// The subject and its platform images come from the buildset
		// registry: the intermediate registry has nothing yet.
		sr, err := c.Repository(ctx, src.Context().RegistryStr(), src.Context().RepositoryStr(), false)
		if err != nil {
			return nil, nil, err
		}
		m, err := sr.Get(ctx, dgst)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: reading %s to sign it: %w", labels[i], dgst, err))
			continue
		}
		repo := images[i].Repository
		tasks = append(tasks, signTask{where: labels[i], repository: repo, st: st,
			desc: transfer.Descriptor{Digest: dgst, MediaType: m.MediaType, Size: int64(len(m.Body))}})
		if !oci.IsIndex(m.MediaType) {
			continue
		}
		children, err := verify.PlatformManifests(m.Body)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", labels[i], err))
			continue
		}
		for _, ch := range children {
			if !seen[key+"@"+ch.Digest] {
				seen[key+"@"+ch.Digest] = true
				tasks = append(tasks, signTask{where: labels[i], repository: repo, st: st, desc: ch})
			}
		}
		stmts, err := verify.ProvenanceStatements(ctx, m.Body,
			func(ctx context.Context, dgst string) ([]byte, error) {
				m, err := sr.Get(ctx, dgst)
				if err != nil {
					return nil, err
				}
				return m.Body, nil
			},
			func(ctx context.Context, dgst string, _ int64) ([]byte, error) { return sr.Blob(ctx, dgst) })
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", labels[i], err))
			continue
		}
		for _, s := range stmts {
			tasks = append(tasks, signTask{where: labels[i], repository: repo, st: st, desc: s.Subject, statement: s.Body})
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	out := make([]SignedImage, len(tasks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	var mu sync.Mutex
	for i, t := range tasks {
		g.Go(func() error {
			var form string
			var changed bool
			var err error
			what := "signing"
			if t.statement != nil {
				what = "attesting the provenance of"
				form, changed, err = t.st.Attest(gctx, signer, t.desc, t.statement, check)
			} else {
				form, changed, err = t.st.Sign(gctx, signer, t.desc, check)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %s %s: %w", t.where, what, t.desc.Digest, err))
				mu.Unlock()
				return nil
			}
			out[i] = SignedImage{Repository: t.repository, Digest: t.desc.Digest, Form: form, Changed: changed}
			return nil
		})
	}
	_ = g.Wait() // every task records its error and returns nil
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, nil, errors.Join(errs...)
	}
	signed, attested = []SignedImage{}, []SignedImage{}
	for i, t := range tasks {
		if t.statement != nil {
			attested = append(attested, out[i])
		} else {
			signed = append(signed, out[i])
		}
	}
	return signed, attested, nil
}
