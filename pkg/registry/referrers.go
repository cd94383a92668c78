package registry

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// listReferrers serves GET /v2/<name>/referrers/<digest> (spec § "Listing
// Referrers"): an OCI index of the manifests of the repository whose
// subject is the digest (the subject itself need not exist), filtered by
// artifactType when asked, with OCI-Filters-Applied saying so. A referrer
// record whose manifest has been deleted is skipped, so the list is right
// even after a crash in the middle of a delete.
func (rg *Registry) listReferrers(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	subject, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	filter := r.URL.Query().Get("artifactType")
	table := storage.Referrers(subject)
	entries, err := rg.driver.ListEntries(ctx, rt.name, table, "", -1)
	if err != nil {
		return storageError("listing referrers", err)
	}
	manifests := []descriptor{}
	for _, e := range entries {
		v, err := rg.driver.GetEntry(ctx, rt.name, table, e.Key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return storageError("listing referrers", err)
		}
		if _, err := rg.driver.GetEntry(ctx, rt.name, storage.Manifests, e.Key); errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return storageError("listing referrers", err)
		}
		var d descriptor
		if err := json.Unmarshal(v, &d); err != nil {
			rg.log.WarnContext(ctx, "skipping an unreadable referrer record", "repository", rt.name, "key", e.Key, "error", err)
			continue
		}
		if filter != "" && d.ArtifactType != filter {
			continue
		}
		manifests = append(manifests, d)
	}
	if filter != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, oci.MediaTypeOCIIndex, struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{2, oci.MediaTypeOCIIndex, manifests})
}
