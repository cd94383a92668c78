package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// maxPageSize caps n on list endpoints, so one request cannot ask the
// store for an unbounded listing.
const maxPageSize = 10000

// page is a parsed n/last pagination request.
type page struct {
	n     int // -1 when not given
	last  string
	given bool
}

// parsePage reads n and last (spec § "Listing Tags"). Without n, everything
// after last is returned.
func parsePage(r *http.Request) (page, error) {
	q := r.URL.Query()
	p := page{n: -1, last: q.Get("last")}
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, newError(oci.CodeUnsupported, "n must be a non-negative integer, not %q", s).WithStatus(http.StatusBadRequest)
		}
		p.n, p.given = min(n, maxPageSize), true
	}
	return p, nil
}

// limit is the number of items to fetch: one more than the page, to know
// whether a next page exists.
func (p page) limit() int {
	if p.n < 0 {
		return -1
	}
	return p.n + 1
}

// link sets the Link header (RFC 8288, rel="next") when items holds more
// than a page, and returns the page.
func (p page) link(w http.ResponseWriter, path string, items []string) []string {
	if p.n < 0 || len(items) <= p.n {
		return items
	}
	items = items[:p.n]
	if p.n > 0 {
		q := url.Values{"n": {strconv.Itoa(p.n)}, "last": {items[len(items)-1]}}
		w.Header().Set("Link", oci.Link(path+"?"+q.Encode(), "next"))
	}
	return items
}

// listTags serves GET /v2/<name>/tags/list (spec § "Listing Tags"): tags in
// byte order, n/last pagination with a Link header, 404 NAME_UNKNOWN for a
// repository that holds nothing.
func (rg *Registry) listTags(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	p, err := parsePage(r)
	if err != nil {
		return err
	}
	tags := []string{}
	if p.n != 0 {
		entries, err := rg.driver.ListEntries(ctx, rt.name, storage.Tags, p.last, p.limit())
		if err != nil {
			return storageError("listing tags", err)
		}
		for _, e := range entries {
			tags = append(tags, e.Key)
		}
	}
	if len(tags) == 0 && p.last == "" {
		exists, err := rg.repositoryExists(ctx, rt.name)
		if err != nil {
			return err
		}
		if !exists {
			return newError(oci.CodeNameUnknown, "repository %s is unknown", rt.name).WithDetail(map[string]string{"name": rt.name})
		}
	}
	tags = p.link(w, "/v2/"+rt.name+"/tags/list", tags)
	return writeJSON(w, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, tags})
}

// repositoryExists reports whether repository name holds any tag, manifest
// or blob.
func (rg *Registry) repositoryExists(ctx context.Context, name string) (bool, error) {
	for _, t := range []storage.Table{storage.Tags, storage.Manifests, storage.Blobs} {
		entries, err := rg.driver.ListEntries(ctx, name, t, "", 1)
		if err != nil {
			return false, storageError("reading repository", err)
		}
		if len(entries) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// serveCatalog serves GET /v2/_catalog: repositories holding manifests, in
// byte order, with n/last pagination.
func (rg *Registry) serveCatalog(w http.ResponseWriter, r *http.Request, _ route) error {
	p, err := parsePage(r)
	if err != nil {
		return err
	}
	repos := []string{}
	if p.n != 0 {
		names, err := rg.driver.Repositories(r.Context(), p.last, p.limit())
		if err != nil {
			return storageError("listing repositories", err)
		}
		repos = append(repos, names...)
	}
	repos = p.link(w, "/v2/_catalog", repos)
	return writeJSON(w, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

// writeJSON writes v as a 200 response.
func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return errors.Join(errors.New("encoding response"), err)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}
