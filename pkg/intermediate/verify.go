package intermediate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// PullVerification is Pull's opt-in check of the images of changes ahead
// (issue 16), promote's checks where they enter the buildset: with Key,
// every container_image artifact's image in the intermediate registry must
// carry a signature that verifies with it; with Provenance also a signed
// SLSA provenance naming the artifact's change and patchset and the build
// that pushed it (the <build> of its <build>_<tag>), of Pipeline when set.
type PullVerification struct {
	// Key is the public key (PEM, cosign.pub); empty checks nothing.
	Key        string `ansible:"verify_key"`
	Provenance bool   `ansible:"verify_provenance" default:"false"`
	// Pipeline is the pipeline the provenance's build must be of; empty
	// accepts any.
	Pipeline string `ansible:"verify_pipeline"`
}

// Verified is one image of a change ahead Pull checked before copying it.
type Verified struct {
	// Name is the artifact's name; Change, Patchset and Job the change
	// ahead and the job that returned it, as zuul.artifacts gives them.
	Name     string `json:"name"`
	Change   string `json:"change"`
	Patchset string `json:"patchset"`
	Job      string `json:"job"`
	// Source is the intermediate registry reference checked; Digest what
	// it pointed to, the digest then copied.
	Source        string `json:"source"`
	Digest        string `json:"digest"`
	SignatureForm string `json:"signature_form"`
	KeyID         string `json:"key_id"`
	// ProvenanceBuilds are the builds the verified provenance names (one
	// per platform image when it is per platform); empty without
	// verify_provenance.
	ProvenanceBuilds []string `json:"provenance_builds"`
}

// entry is one artifact Pull copies.
type entry struct {
	idx int
	art zuul.Artifact
	img zuul.ContainerImage
	dst string
}

// key parses the verification parameters; nil when nothing is asked.
func (v PullVerification) key() (*verify.Key, error) {
	if v.Key == "" && !v.Provenance && v.Pipeline == "" {
		return nil, nil
	}
	k, err := verify.ParseKey(v.Key, "verify_key")
	if err != nil {
		if v.Key == "" {
			return nil, fmt.Errorf("verify_provenance and verify_pipeline need verify_key: %w", err)
		}
		return nil, err
	}
	return k, nil
}

// artifactWho names an artifact with the change ahead and the job that
// returned it.
func artifactWho(i int, a zuul.Artifact) string {
	var who []string
	if a.Change != "" {
		who = append(who, "change "+a.Change)
	}
	if a.Patchset != "" {
		who = append(who, "patchset "+a.Patchset)
	}
	if a.Job != "" {
		who = append(who, "job "+a.Job)
	}
	if len(who) == 0 {
		return artifactLabel(i, a)
	}
	return artifactLabel(i, a) + " (" + strings.Join(who, ", ") + ")"
}

// want is what the provenance of entry e must name.
func (v PullVerification) want(e *entry) (*verify.Want, error) {
	if !v.Provenance {
		return nil, nil
	}
	a := e.art
	if a.Change == "" || a.Patchset == "" {
		return nil, fmt.Errorf("%s: verify_provenance needs the change and patchset of the change ahead, and the artifact has none (Zuul adds them to zuul.artifacts)", artifactWho(e.idx, a))
	}
	// The intermediate tag is <build>_<tag>: the build that pushed it.
	build := ""
	if ref, err := transfer.ParseReference(e.img.Ref); err == nil {
		if b, ok := strings.CutSuffix(ref.Identifier(), "_"+e.img.Tag); ok {
			build = b
		}
	}
	return &verify.Want{Change: a.Change, Patchset: a.Patchset, Pipeline: v.Pipeline, Build: build}, nil
}

// verify checks every entry's image where it lies in the intermediate
// registry and points the entry's copy at the digest checked, so a tag
// moved since is not what gets copied. Nothing is copied unless all pass;
// the error names each failing artifact, its image and the check.
func (spec PullSpec) verify(ctx context.Context, br *zuul.BuildsetRegistry, o options, key *verify.Key, entries []entry) ([]Verified, error) {
	wants := make([]*verify.Want, len(entries))
	for i := range entries {
		w, err := spec.PullVerification.want(&entries[i])
		if err != nil {
			return nil, err
		}
		wants[i] = w
	}
	c, err := spec.client(br, o)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make([]Verified, len(entries))
	errs := make([]error, len(entries))
	var mu sync.Mutex
	repos := map[string]*transfer.Repository{}
	repo := func(ctx context.Context, host, name string) (*transfer.Repository, error) {
		mu.Lock()
		defer mu.Unlock()
		if r := repos[host+"/"+name]; r != nil {
			return r, nil
		}
		r, err := c.Repository(ctx, host, name, false)
		if err == nil {
			repos[host+"/"+name] = r
		}
		return r, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(spec.Jobs)
	for i := range entries {
		e := &entries[i]
		g.Go(func() error {
			where := artifactWho(e.idx, e.art) + ", " + e.img.Ref
			ref, err := transfer.ParseReference(e.img.Ref)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", where, err)
				return nil
			}
			host, name := ref.Context().RegistryStr(), ref.Context().RepositoryStr()
			r, err := repo(gctx, host, name)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", where, err)
				return nil
			}
			d, err := r.Head(gctx, ref.Identifier())
			if err != nil {
				if errors.Is(err, oci.ErrNotFound) {
					err = fmt.Errorf("%w (the intermediate registry does not have it: pruned, or the artifact's url is wrong)", err)
				}
				errs[i] = fmt.Errorf("%s: %w", where, err)
				return nil
			}
			where += " (" + d.Digest + ")"
			res, err := key.Check(gctx, r, d.Digest, d.MediaType, wants[i])
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", where, err)
				return nil
			}
			out[i] = Verified{Name: e.art.Name, Change: e.art.Change, Patchset: e.art.Patchset, Job: e.art.Job,
				Source: e.img.Ref, Digest: d.Digest, SignatureForm: res.SignatureForm, KeyID: res.KeyID,
				ProvenanceBuilds: res.ProvenanceBuilds}
			e.img.Ref = ref.Context().Name() + "@" + d.Digest
			return nil
		})
	}
	_ = g.Wait() // every goroutine records its error and returns nil
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return nil, fmt.Errorf("%d of %d images of changes ahead failed verification with %s; nothing was copied: %w",
			len(failed), len(entries), "verify_key (key "+key.ID()+")", errors.Join(failed...))
	}
	slices.SortFunc(out, func(a, b Verified) int { return strings.Compare(a.Name+a.Digest, b.Name+b.Digest) })
	return out, nil
}
