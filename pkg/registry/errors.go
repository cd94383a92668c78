package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// errorCodes is the one table of codes: the HTTP status each is answered
// with by default, and its message.
var errorCodes = map[oci.ErrorCode]struct {
	status  int
	message string
}{
	oci.CodeBlobUnknown:         {http.StatusNotFound, "blob unknown to registry"},
	oci.CodeBlobUploadInvalid:   {http.StatusBadRequest, "blob upload invalid"},
	oci.CodeBlobUploadUnknown:   {http.StatusNotFound, "blob upload unknown to registry"},
	oci.CodeDigestInvalid:       {http.StatusBadRequest, "provided digest did not match uploaded content"},
	oci.CodeManifestBlobUnknown: {http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"},
	oci.CodeManifestInvalid:     {http.StatusBadRequest, "manifest invalid"},
	oci.CodeManifestUnknown:     {http.StatusNotFound, "manifest unknown to registry"},
	oci.CodeNameInvalid:         {http.StatusBadRequest, "invalid repository name"},
	oci.CodeNameUnknown:         {http.StatusNotFound, "repository name not known to registry"},
	oci.CodeSizeInvalid:         {http.StatusBadRequest, "provided length did not match content length"},
	oci.CodeUnauthorized:        {http.StatusUnauthorized, "authentication required"},
	oci.CodeDenied:              {http.StatusForbidden, "requested access to the resource is denied"},
	oci.CodeUnsupported:         {http.StatusMethodNotAllowed, "the operation is unsupported"},
	oci.CodeTooManyRequests:     {http.StatusTooManyRequests, "too many requests"},
	oci.CodeUnknown:             {http.StatusInternalServerError, "unknown error"},
	oci.CodeUnavailable:         {http.StatusServiceUnavailable, "service unavailable"},
}

// newError returns a protocol error: code with its status from errorCodes
// and a message built from format (the code's own message when format is
// empty). Handlers return it; writeError turns any error into the spec's
// JSON envelope.
func newError(code oci.ErrorCode, format string, args ...any) *oci.Error {
	c := errorCodes[code]
	msg := c.message
	if format != "" {
		msg = fmt.Sprintf(format, args...)
	}
	return &oci.Error{StatusCode: c.status, Errors: []oci.Diagnostic{{Code: code, Message: msg}}}
}

// storageError turns an unexpected storage failure into a spec error the
// client can retry: 503 with Retry-After; a full store (storage.ErrNoSpace)
// into a final 507 that says so. The cause goes to the log only (it may
// name server paths).
func storageError(op string, err error) error {
	var e *oci.Error
	if errors.As(err, &e) {
		return err
	}
	se := newError(oci.CodeUnavailable, "storage failed while %s; retry later", op).WithHeader("Retry-After", "1")
	se.Err = fmt.Errorf("%s: %w", op, err)
	if errors.Is(err, storage.ErrNoSpace) {
		// A full store is not transient: no Retry-After, and a status
		// no client retries on its own (RFC 4918 §11.5, 507 Insufficient
		// Storage) with DENIED, which docker and containers/image treat
		// as final too. The message says why.
		se = newError(oci.CodeDenied, "no space left on the registry's storage while %s: free space or raise the quota of the registry's store, then push again", op).
			WithStatus(http.StatusInsufficientStorage)
		se.Err = fmt.Errorf("%s: %w", op, err)
	}
	if errors.Is(err, storage.ErrInvalid) {
		se = newError(oci.CodeNameInvalid, "%s: invalid name", op)
		se.Err = err
	}
	return se
}

// writeError writes err as the spec's error envelope
// {"errors":[{"code","message","detail"}]}. Errors that are not *oci.Error are
// internal failures: 500 UNKNOWN, with the cause logged and not sent.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var e *oci.Error
	if !errors.As(err, &e) {
		e = newError(oci.CodeUnknown, "internal error")
		e.Err = err
	}
	if e.StatusCode >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", e.StatusCode, "code", e.Code(), "error", err)
	} else {
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", e.StatusCode, "code", e.Code(), "error", err)
	}
	// A handler may have set the headers of the entity it meant to send
	// before failing; they do not describe the error.
	for _, k := range []string{"Docker-Content-Digest", "ETag", "Cache-Control", "Accept-Ranges", "Content-Range", "Location", "OCI-Subject", "OCI-Tag"} {
		w.Header().Del(k)
	}
	for k, vs := range e.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	body, _ := json.Marshal(struct {
		Errors []oci.Diagnostic `json:"errors"`
	}{e.Errors})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.StatusCode)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
