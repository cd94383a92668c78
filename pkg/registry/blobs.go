package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// getBlob serves GET and HEAD /v2/<name>/blobs/<digest> (spec § "Pulling
// blobs", "Range request support"): the blob if the repository holds it
// (as a blob or as a manifest), with Docker-Content-Digest on both methods
// and a single byte range (206, or 416 when unsatisfiable) on GET. With
// WithBlobRedirect, a GET the store can answer as the registry would is
// redirected there instead (redirectBlob).
func (rg *Registry) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	dg, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	ctx := r.Context()
	err = rg.requireBlob(ctx, rt.name, dg, true)
	size := int64(0)
	if err == nil {
		size, err = rg.driver.StatBlob(ctx, dg)
		if errors.Is(err, storage.ErrNotFound) {
			err = blobUnknown(dg)
		}
	}
	// In a repository of an upstream namespace, a missing blob is pulled
	// through (proxy.go): HEAD too, since a client that finds a blob by
	// HEAD then refers to it (a push's manifest) or GETs it.
	if ns, upRepo := rg.proxy.lookup(rt.name); ns != nil && oci.HasCode(err, oci.CodeBlobUnknown) {
		if err = rg.pullBlob(ctx, ns, upRepo, rt.name, dg); err == nil {
			size, err = rg.driver.StatBlob(ctx, dg)
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(dg)
	} else if err != nil {
		return storageError("reading blob", err)
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", dg.String())
	if r.Method == http.MethodHead {
		setBlobHeaders(h, dg)
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	offset, length, status := int64(0), size, http.StatusOK
	contentRange, rangeIgnored := "", false
	if rh := r.Header.Get("Range"); rh != "" && ifRangeMatches(r, dg) {
		start, end, ok, err := parseRange(rh, size)
		if err != nil {
			return err
		}
		if ok {
			offset, length, status = start, end-start+1, http.StatusPartialContent
			contentRange = fmt.Sprintf("bytes %d-%d/%d", start, end, size)
		}
		rangeIgnored = !ok
	}
	// The store sees the request's Range and If-Range again, and judges
	// them by its own rules: redirect only when it will answer as the
	// registry would (no If-Range, which names the registry's ETag, not
	// the store's; no range the registry ignores).
	if rg.blobURLs != nil && r.Header.Get("If-Range") == "" && !rangeIgnored {
		return rg.redirectBlob(w, r, dg)
	}
	setBlobHeaders(h, dg)
	if contentRange != "" {
		h.Set("Content-Range", contentRange)
	}
	rc, err := rg.driver.OpenBlob(ctx, dg, offset, length)
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(dg)
	} else if err != nil {
		return storageError("reading blob", err)
	}
	defer rc.Close()
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if n, err := io.Copy(w, rc); err != nil {
		// The status is sent: all that is left is to log and cut the
		// connection short, which the client sees as a short body.
		rg.log.WarnContext(ctx, "sending blob failed", "digest", dg, "sent", n, "size", length, "error", err)
	}
	return nil
}

// setBlobHeaders sets the headers describing a blob's content.
func setBlobHeaders(h http.Header, dg digest.Digest) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", `"`+dg.String()+`"`)
	// A blob never changes under its digest.
	h.Set("Cache-Control", "max-age=31536000, immutable")
}

// redirectBlob answers a blob GET with 307 Temporary Redirect to the
// store's URL for the blob (the distribution spec lets a blob GET redirect
// and asks clients to follow). A 307 makes the client repeat the request
// as it was, Range included, so the store answers ranges itself. The
// redirect must not be cached, as its URL expires, and the URL is never
// logged: it is a capability to read the blob.
func (rg *Registry) redirectBlob(w http.ResponseWriter, r *http.Request, dg digest.Digest) error {
	u, err := rg.blobURLs.BlobURL(r.Context(), dg, http.MethodGet)
	if err != nil {
		return storageError("redirecting to blob", err)
	}
	h := w.Header()
	h.Set("Location", u)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
	return nil
}

// ifRangeMatches implements If-Range for the blob's only validator, its
// digest ETag: a range applies unless If-Range names another entity.
func ifRangeMatches(r *http.Request, dg digest.Digest) bool {
	ir := r.Header.Get("If-Range")
	return ir == "" || ir == `"`+dg.String()+`"`
}

// parseRange parses a single-range "bytes=" Range header (RFC 9110
// §14.1.2) against a blob of size bytes and returns the inclusive range.
// ok is false when the header is to be ignored (not bytes, several ranges:
// the whole blob is sent). An unsatisfiable or malformed range is a 416.
func parseRange(h string, size int64) (start, end int64, ok bool, err error) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	unsatisfiable := newError(oci.CodeSizeInvalid, "range %q is not satisfiable for a blob of %d bytes", h, size).
		WithStatus(http.StatusRequestedRangeNotSatisfiable).WithHeader("Content-Range", fmt.Sprintf("bytes */%d", size))
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, unsatisfiable
	}
	if first == "" { // suffix: the last n bytes
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n <= 0 || size == 0 {
			return 0, 0, false, unsatisfiable
		}
		return max(size-n, 0), size - 1, true, nil
	}
	start, perr := strconv.ParseInt(first, 10, 64)
	if perr != nil || start < 0 || start >= size {
		return 0, 0, false, unsatisfiable
	}
	end = size - 1
	if last != "" {
		e, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || e < start {
			return 0, 0, false, unsatisfiable
		}
		end = min(e, size-1)
	}
	return start, end, true, nil
}

// deleteBlob serves DELETE /v2/<name>/blobs/<digest> (spec § "Deleting
// Blobs"): it removes the blob from the repository; the content itself is
// left to garbage collection, as other repositories may hold it.
func (rg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	dg, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	err = rg.driver.DeleteEntry(r.Context(), rt.name, storage.Blobs, dg.String())
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(dg)
	} else if err != nil {
		return storageError("deleting blob", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// requireBlob checks that repository name holds blob dg, as a blob or, when
// manifestsToo, as a manifest.
func (rg *Registry) requireBlob(ctx context.Context, name string, dg digest.Digest, manifestsToo bool) error {
	_, err := rg.driver.GetEntry(ctx, name, storage.Blobs, dg.String())
	if errors.Is(err, storage.ErrNotFound) && manifestsToo {
		_, err = rg.driver.GetEntry(ctx, name, storage.Manifests, dg.String())
	}
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(dg)
	} else if err != nil {
		return storageError("reading blob", err)
	}
	return nil
}

func blobUnknown(dg digest.Digest) error {
	return newError(oci.CodeBlobUnknown, "blob %s is unknown to this repository", dg).WithDetail(map[string]string{"digest": dg.String()})
}
