package registry

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// uploadState is the registry's state of an upload session, saved by the
// driver with every chunk: the running digest, serialised, so any replica
// can take the session over.
type uploadState struct {
	Algorithm digest.Algorithm `json:"alg"`
	Hash      []byte           `json:"hash"`
}

// uploadAlgorithm is the digest computed while a session receives data.
// Clients announce the digest only when they close the session; one that
// closes with another algorithm (sha512) is served by reading the blob
// back once (see putUpload).
const uploadAlgorithm = digest.SHA256

func marshalHash(alg digest.Algorithm, h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("%s state cannot be saved", alg)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("saving %s state: %w", alg, err)
	}
	return json.Marshal(uploadState{Algorithm: alg, Hash: b})
}

func unmarshalHash(state []byte) (digest.Algorithm, hash.Hash, error) {
	var st uploadState
	if err := json.Unmarshal(state, &st); err != nil {
		return "", nil, fmt.Errorf("reading upload state: %w", err)
	}
	if st.Algorithm != digest.SHA256 && st.Algorithm != digest.SHA512 {
		return "", nil, fmt.Errorf("reading upload state: algorithm %q", st.Algorithm)
	}
	h := st.Algorithm.Hash()
	if u, ok := h.(encoding.BinaryUnmarshaler); !ok {
		return "", nil, fmt.Errorf("%s state cannot be restored", st.Algorithm)
	} else if err := u.UnmarshalBinary(st.Hash); err != nil {
		return "", nil, fmt.Errorf("restoring %s state: %w", st.Algorithm, err)
	}
	return st.Algorithm, h, nil
}

// startUpload serves POST /v2/<name>/blobs/uploads/ (spec § "Pushing
// blobs", "Mounting a blob from another repository"): with mount, a
// cross-repository mount (or, without from, an anonymous mount of any blob
// the registry holds); with digest, a monolithic upload of the body;
// otherwise (and when a mount is not possible) a new session.
func (rg *Registry) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		dg, err := parseDigest(m)
		if err != nil {
			return err
		}
		ok, err := rg.mount(ctx, rt.name, q.Get("from"), dg)
		if err != nil {
			return err
		}
		if ok {
			return blobCreated(w, rt.name, dg)
		}
	}
	if ds := q.Get("digest"); ds != "" {
		dg, err := parseDigest(ds)
		if err != nil {
			return err
		}
		size := r.ContentLength
		err = rg.driver.PutBlob(ctx, dg, size, newVerifier(requestBody(r), dg, size))
		if err != nil {
			return uploadError("storing blob", err)
		}
		if err := rg.driver.PutEntry(ctx, rt.name, storage.Blobs, dg.String(), nil); err != nil {
			return storageError("linking blob", err)
		}
		return blobCreated(w, rt.name, dg)
	}
	state, err := marshalHash(uploadAlgorithm, uploadAlgorithm.Hash())
	if err != nil {
		return err
	}
	up, err := rg.driver.NewUpload(ctx, rt.name, state)
	if err != nil {
		return storageError("creating upload", err)
	}
	if m, ok := rg.driver.(storage.ChunkMinLengther); ok && m.ChunkMinLength() > 0 {
		w.Header().Set("OCI-Chunk-Min-Length", strconv.FormatInt(m.ChunkMinLength(), 10))
	}
	return uploadProgress(w, rt.name, up, http.StatusAccepted)
}

// mount links blob dg into repository name when from holds it (or, when
// from is empty, when the registry holds it at all), and reports whether it
// did.
func (rg *Registry) mount(ctx context.Context, name, from string, dg digest.Digest) (bool, error) {
	if from != "" {
		if storage.ValidateRepository(from) != nil {
			return false, nil
		}
		_, err := rg.driver.GetEntry(ctx, from, storage.Blobs, dg.String())
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, storageError("mounting blob", err)
		}
	}
	if _, err := rg.driver.StatBlob(ctx, dg); errors.Is(err, storage.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, storageError("mounting blob", err)
	}
	if err := rg.driver.PutEntry(ctx, name, storage.Blobs, dg.String(), nil); err != nil {
		return false, storageError("mounting blob", err)
	}
	return true, nil
}

// session returns upload id of repository name, or BLOB_UPLOAD_UNKNOWN.
func (rg *Registry) session(ctx context.Context, name, id string) (storage.Upload, error) {
	up, err := rg.driver.GetUpload(ctx, id)
	if errors.Is(err, storage.ErrUploadUnknown) || (err == nil && up.Repository != name) {
		return storage.Upload{}, uploadUnknown(id)
	} else if err != nil {
		return storage.Upload{}, storageError("reading upload", err)
	}
	return up, nil
}

// getUpload serves GET /v2/<name>/blobs/uploads/<id>: where the session
// stands (204 with Range), so a client can resume after a 416.
func (rg *Registry) getUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	up, err := rg.session(r.Context(), rt.name, rt.ref)
	if err != nil {
		return err
	}
	return uploadProgress(w, rt.name, up, http.StatusNoContent)
}

// patchUpload serves PATCH /v2/<name>/blobs/uploads/<id> (spec § "Pushing
// a blob in chunks"): a chunk at Content-Range, which must start where the
// session ends (416 otherwise), or, without Content-Range, a stream
// appended at the end.
func (rg *Registry) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	up, err := rg.session(ctx, rt.name, rt.ref)
	if err != nil {
		return err
	}
	if up, err = rg.appendChunk(ctx, r, rt.name, up); err != nil {
		return err
	}
	return uploadProgress(w, rt.name, up, http.StatusAccepted)
}

// appendChunk appends the request body to the session, hashing it on the
// way; the driver saves the new hash state with the new size.
func (rg *Registry) appendChunk(ctx context.Context, r *http.Request, name string, up storage.Upload) (storage.Upload, error) {
	offset, length := up.Size, r.ContentLength
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, err := parseContentRange(cr)
		if err != nil {
			return up, err
		}
		if start != up.Size {
			return up, rangeError(name, up, fmt.Sprintf("chunk starts at byte %d, the upload holds %d bytes: chunks must be sent in order", start, up.Size))
		}
		if length >= 0 && length != end-start+1 {
			return up, newError(oci.CodeSizeInvalid, "Content-Range %q covers %d bytes, Content-Length is %d", cr, end-start+1, length)
		}
		offset, length = start, end-start+1
	}
	if r.ContentLength == 0 {
		return up, nil
	}
	alg, h, err := unmarshalHash(up.State)
	if err != nil {
		return up, err
	}
	body := io.TeeReader(requestBody(r), h)
	next, err := rg.driver.AppendUpload(ctx, up.ID, offset, length, body, func(int64) ([]byte, error) {
		return marshalHash(alg, h)
	})
	if errors.Is(err, storage.ErrRangeInvalid) && next.Size != offset {
		return next, rangeError(name, next, fmt.Sprintf("chunk starts at byte %d, the upload holds %d bytes: chunks must be sent in order", offset, next.Size))
	}
	if err != nil {
		return up, uploadError("storing chunk", err)
	}
	return next, nil
}

// putUpload serves PUT /v2/<name>/blobs/uploads/<id>?digest=<digest>: the
// optional last chunk, then the digest check and the commit. A digest
// mismatch cancels the session: nothing is stored under the wrong digest.
func (rg *Registry) putUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	ds := r.URL.Query().Get("digest")
	if ds == "" {
		return newError(oci.CodeDigestInvalid, "the digest query parameter is required to close an upload")
	}
	dg, err := parseDigest(ds)
	if err != nil {
		return err
	}
	up, err := rg.session(ctx, rt.name, rt.ref)
	if err != nil {
		return err
	}
	if up, err = rg.appendChunk(ctx, r, rt.name, up); err != nil {
		return err
	}
	alg, h, err := unmarshalHash(up.State)
	if err != nil {
		return err
	}
	computed := digest.NewDigest(alg, h)
	if dg.Algorithm() == alg && computed != dg {
		if err := rg.driver.AbortUpload(ctx, up.ID); err != nil && !errors.Is(err, storage.ErrUploadUnknown) {
			rg.log.WarnContext(ctx, "cancelling upload after a digest mismatch failed", "upload", up.ID, "error", err)
		}
		return newError(oci.CodeDigestInvalid, "the uploaded content has digest %s, not %s", computed, dg).
			WithDetail(map[string]string{"digest": dg.String()})
	}
	err = rg.driver.CommitUpload(ctx, up.ID, up.Size, computed)
	switch {
	case errors.Is(err, storage.ErrUploadUnknown):
		return uploadUnknown(up.ID)
	case errors.Is(err, storage.ErrRangeInvalid):
		return newError(oci.CodeBlobUploadInvalid, "the upload received more data while it was being closed")
	case err != nil:
		return storageError("committing upload", err)
	}
	if computed != dg {
		// The client named the content in another algorithm than the one
		// computed on the way in: hash it again while copying it under
		// that name. On a mismatch the copy is dropped; the blob under the
		// computed digest is in no repository and is left to garbage
		// collection.
		rc, err := rg.driver.OpenBlob(ctx, computed, 0, -1)
		if err != nil {
			return storageError("reading committed upload", err)
		}
		err = rg.driver.PutBlob(ctx, dg, up.Size, newVerifier(rc, dg, up.Size))
		rc.Close()
		if err != nil {
			return uploadError("storing blob", err)
		}
	}
	if err := rg.driver.PutEntry(ctx, rt.name, storage.Blobs, dg.String(), nil); err != nil {
		return storageError("linking blob", err)
	}
	return blobCreated(w, rt.name, dg)
}

// deleteUpload serves DELETE /v2/<name>/blobs/uploads/<id>: cancel.
func (rg *Registry) deleteUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if _, err := rg.session(ctx, rt.name, rt.ref); err != nil {
		return err
	}
	err := rg.driver.AbortUpload(ctx, rt.ref)
	if errors.Is(err, storage.ErrUploadUnknown) {
		return uploadUnknown(rt.ref)
	} else if err != nil {
		return storageError("cancelling upload", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func uploadLocation(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }

// uploadRange is the Range header value of a session: the inclusive range
// received, "0-0" when empty (as every registry answers).
func uploadRange(size int64) string {
	if size == 0 {
		return "0-0"
	}
	return "0-" + strconv.FormatInt(size-1, 10)
}

func uploadProgress(w http.ResponseWriter, name string, up storage.Upload, status int) error {
	h := w.Header()
	h.Set("Location", uploadLocation(name, up.ID))
	h.Set("Range", uploadRange(up.Size))
	h.Set("Docker-Upload-UUID", up.ID)
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
	return nil
}

func blobCreated(w http.ResponseWriter, name string, dg digest.Digest) error {
	h := w.Header()
	h.Set("Location", "/v2/"+name+"/blobs/"+dg.String())
	h.Set("Docker-Content-Digest", dg.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func uploadUnknown(id string) error {
	return newError(oci.CodeBlobUploadUnknown, "upload %s is unknown: it was never started, or was completed or cancelled", id)
}

// rangeError is the 416 answer to an out-of-order chunk, with the headers
// a client needs to resume.
func rangeError(name string, up storage.Upload, msg string) error {
	return newError(oci.CodeBlobUploadInvalid, "%s", msg).WithStatus(http.StatusRequestedRangeNotSatisfiable).
		WithHeader("Location", uploadLocation(name, up.ID)).
		WithHeader("Range", uploadRange(up.Size)).
		WithHeader("Docker-Upload-UUID", up.ID)
}

// parseContentRange parses a chunk's Content-Range: "<start>-<end>"
// (inclusive) as the spec writes it, also accepting the RFC 9110 form
// "bytes <start>-<end>/<total>".
func parseContentRange(v string) (start, end int64, err error) {
	s := strings.TrimSpace(v)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "bytes "), "bytes=")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, b, ok := strings.Cut(s, "-")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, newError(oci.CodeBlobUploadInvalid, "invalid Content-Range %q: want <start>-<end>, inclusive", v).
			WithStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	return start, end, nil
}

// Client-side failures while reading an upload's body.
var (
	errDigestMismatch = errors.New("content does not match its digest")
	errSizeMismatch   = errors.New("content length does not match")
)

// clientError marks a failure to read the request body (the client went
// away, or sent less than announced), as opposed to a storage failure.
type clientError struct{ err error }

func (e *clientError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &clientError{err}
	}
	return n, err
}

func requestBody(r *http.Request) io.Reader { return bodyReader{r.Body} }

// verifier passes content through, hashing it, and fails instead of
// returning io.EOF when the content does not match the expected digest or
// size, so a driver's PutBlob never commits it.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	want digest.Digest
	size int64
	n    int64
}

func newVerifier(r io.Reader, want digest.Digest, size int64) *verifier {
	return &verifier{r: r, h: want.Algorithm().Hash(), want: want, size: size}
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		return n, fmt.Errorf("%w: more than %d bytes", errSizeMismatch, v.size)
	}
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("%w: %d bytes, expected %d", errSizeMismatch, v.n, v.size)
		}
		if got := digest.NewDigest(v.want.Algorithm(), v.h); got != v.want {
			return n, fmt.Errorf("%w: got %s, expected %s", errDigestMismatch, got, v.want)
		}
	}
	return n, err
}

// uploadError maps a failure to store uploaded content to its spec error.
func uploadError(op string, err error) error {
	var ce *clientError
	switch {
	case errors.Is(err, errDigestMismatch):
		return newError(oci.CodeDigestInvalid, "%v", unwrapTo(err, errDigestMismatch))
	case errors.Is(err, errSizeMismatch):
		return newError(oci.CodeSizeInvalid, "%v", unwrapTo(err, errSizeMismatch))
	case errors.As(err, &ce):
		return newError(oci.CodeBlobUploadInvalid, "%v", ce)
	case errors.Is(err, storage.ErrUploadUnknown):
		return newError(oci.CodeBlobUploadUnknown, "the upload is unknown: it was completed or cancelled")
	case errors.Is(err, storage.ErrRangeInvalid):
		return newError(oci.CodeSizeInvalid, "the body's length does not match Content-Length or Content-Range")
	}
	return storageError(op, err)
}

// unwrapTo returns the innermost error in err's chain that still wraps
// target, so the message given to the client names the content problem
// without the storage layer's wrapping (which may contain paths).
func unwrapTo(err, target error) error {
	last := err
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.Is(e, target) {
			last = e
		} else {
			break
		}
	}
	return last
}
