package publish

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/quay"
)

// tagAPI is a registry's web API for what the distribution API lacks or a
// registry refuses there: tag listings with modification times, and
// deleting one tag. Docker Hub and quay have one; other registries are
// served by the distribution API (DELETE /v2/<name>/manifests/<tag>).
type tagAPI interface {
	// name names the API in messages.
	name() string
	// check proves the credentials before anything is written (Docker
	// Hub's login).
	check(ctx context.Context) error
	// checkRepository proves, before anything is written, that tags of
	// repo can be deleted (quay: the token's repo:write scope).
	checkRepository(ctx context.Context, repo string) error
	tags(ctx context.Context, repo string) ([]apiTag, error)
	// deleteTag deletes one tag; a missing tag matches oci.ErrNotFound.
	deleteTag(ctx context.Context, repo, tag string) error
}

// apiTag is one tag of a web API's listing.
type apiTag struct {
	Name, Digest string
	// Updated is when the tag last moved; zero when unknown.
	Updated time.Time
}

// hubAPI is Docker Hub's web API.
type hubAPI struct{ c *dockerhub.Client }

func (h hubAPI) name() string                                  { return "Docker Hub" }
func (h hubAPI) check(ctx context.Context) error               { return h.c.Login(ctx) }
func (h hubAPI) checkRepository(context.Context, string) error { return nil }
func (h hubAPI) deleteTag(ctx context.Context, repo, tag string) error {
	return h.c.DeleteTag(ctx, repo, tag)
}

func (h hubAPI) tags(ctx context.Context, repo string) ([]apiTag, error) {
	tags, err := h.c.Tags(ctx, repo)
	out := make([]apiTag, 0, len(tags))
	for _, t := range tags {
		out = append(out, apiTag{Name: t.Name, Digest: t.Digest, Updated: t.LastUpdated})
	}
	return out, err
}

// quayAPI is quay's web API, with an application token.
type quayAPI struct {
	c *quay.Client
	// what names the token's entry in messages.
	what string
}

func (q quayAPI) name() string                { return "quay" }
func (q quayAPI) check(context.Context) error { return nil }
func (q quayAPI) deleteTag(ctx context.Context, repo, tag string) error {
	return q.c.DeleteTag(ctx, repo, tag)
}

// checkRepository deletes a tag that cannot exist: quay checks the token's
// scope before it looks for the tag, so 404 proves repo:write and 403
// its absence, with nothing deleted either way.
func (q quayAPI) checkRepository(ctx context.Context, repo string) error {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	err := q.c.DeleteTag(ctx, repo, "imagegate-scope-probe-"+hex.EncodeToString(b))
	switch {
	case err == nil, errors.Is(err, oci.ErrNotFound):
		return nil
	case errors.Is(err, oci.ErrForbidden), errors.Is(err, oci.ErrUnauthorized):
		return fmt.Errorf("%s may not delete tags of %s on %s, so staging tags could not be removed "+
			"(give a token of an application with the repo:write scope, \"Read/Write to any accessible repositories\"): %w",
			q.what, repo, q.c.URL(), err)
	}
	return fmt.Errorf("checking that %s may delete tags of %s: %w", q.what, repo, err)
}

func (q quayAPI) tags(ctx context.Context, repo string) ([]apiTag, error) {
	tags, err := q.c.Tags(ctx, repo)
	out := make([]apiTag, 0, len(tags))
	for _, t := range tags {
		out = append(out, apiTag{Name: t.Name, Digest: t.Digest, Updated: t.LastModified})
	}
	return out, err
}
