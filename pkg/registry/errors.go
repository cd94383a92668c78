package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// ErrorCode is an error code of the OCI distribution spec (§ "Error Codes").
type ErrorCode string

// The error codes of the OCI distribution spec, and two of the Docker
// registry's for server-side failures (the spec only constrains 4xx
// bodies; clients treat unknown codes as UNKNOWN).
const (
	CodeBlobUnknown         ErrorCode = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   ErrorCode = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   ErrorCode = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       ErrorCode = "DIGEST_INVALID"
	CodeManifestBlobUnknown ErrorCode = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     ErrorCode = "MANIFEST_INVALID"
	CodeManifestUnknown     ErrorCode = "MANIFEST_UNKNOWN"
	CodeNameInvalid         ErrorCode = "NAME_INVALID"
	CodeNameUnknown         ErrorCode = "NAME_UNKNOWN"
	CodeSizeInvalid         ErrorCode = "SIZE_INVALID"
	CodeUnauthorized        ErrorCode = "UNAUTHORIZED"
	CodeDenied              ErrorCode = "DENIED"
	CodeUnsupported         ErrorCode = "UNSUPPORTED"
	CodeTooManyRequests     ErrorCode = "TOOMANYREQUESTS"
	CodeUnknown             ErrorCode = "UNKNOWN"
	CodeUnavailable         ErrorCode = "UNAVAILABLE"
)

// errorCodes is the one table of codes: the HTTP status each is answered
// with by default, and its message.
var errorCodes = map[ErrorCode]struct {
	status  int
	message string
}{
	CodeBlobUnknown:         {http.StatusNotFound, "blob unknown to registry"},
	CodeBlobUploadInvalid:   {http.StatusBadRequest, "blob upload invalid"},
	CodeBlobUploadUnknown:   {http.StatusNotFound, "blob upload unknown to registry"},
	CodeDigestInvalid:       {http.StatusBadRequest, "provided digest did not match uploaded content"},
	CodeManifestBlobUnknown: {http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"},
	CodeManifestInvalid:     {http.StatusBadRequest, "manifest invalid"},
	CodeManifestUnknown:     {http.StatusNotFound, "manifest unknown to registry"},
	CodeNameInvalid:         {http.StatusBadRequest, "invalid repository name"},
	CodeNameUnknown:         {http.StatusNotFound, "repository name not known to registry"},
	CodeSizeInvalid:         {http.StatusBadRequest, "provided length did not match content length"},
	CodeUnauthorized:        {http.StatusUnauthorized, "authentication required"},
	CodeDenied:              {http.StatusForbidden, "requested access to the resource is denied"},
	CodeUnsupported:         {http.StatusMethodNotAllowed, "the operation is unsupported"},
	CodeTooManyRequests:     {http.StatusTooManyRequests, "too many requests"},
	CodeUnknown:             {http.StatusInternalServerError, "unknown error"},
	CodeUnavailable:         {http.StatusServiceUnavailable, "service unavailable"},
}

// Error is a protocol error: a spec error code, the HTTP status it is
// answered with, a message and an optional detail. Handlers return it; one
// function (writeError) turns any error into the spec's JSON envelope.
type Error struct {
	Code    ErrorCode
	Status  int
	Message string
	Detail  any
	// Header holds extra response headers (Range on a 416, the
	// WWW-Authenticate challenge on a 401, ...).
	Header http.Header
	// Err is the underlying cause, logged but never sent to the client.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// newError returns an Error with code's default status and a message built
// from format (the code's own message when format is empty).
func newError(code ErrorCode, format string, args ...any) *Error {
	c := errorCodes[code]
	msg := c.message
	if format != "" {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Status: c.status, Message: msg}
}

// withStatus sets the HTTP status.
func (e *Error) withStatus(status int) *Error { e.Status = status; return e }

// withDetail sets the detail.
func (e *Error) withDetail(detail any) *Error { e.Detail = detail; return e }

// withHeader adds a response header.
func (e *Error) withHeader(key, value string) *Error {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Add(key, value)
	return e
}

// storageError turns an unexpected storage failure into a spec error the
// client can retry: 503 with Retry-After; a full store (storage.ErrNoSpace)
// into a final 507 that says so. The cause goes to the log only (it may
// name server paths).
func storageError(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	se := newError(CodeUnavailable, "storage failed while %s; retry later", op).withHeader("Retry-After", "1")
	se.Err = fmt.Errorf("%s: %w", op, err)
	if errors.Is(err, storage.ErrNoSpace) {
		// A full store is not transient: no Retry-After, and a status
		// no client retries on its own (RFC 4918 §11.5, 507 Insufficient
		// Storage) with DENIED, which docker and containers/image treat
		// as final too. The message says why.
		se = newError(CodeDenied, "no space left on the registry's storage while %s: free space or raise the quota of the registry's store, then push again", op).
			withStatus(http.StatusInsufficientStorage)
		se.Err = fmt.Errorf("%s: %w", op, err)
	}
	if errors.Is(err, storage.ErrInvalid) {
		se = newError(CodeNameInvalid, "%s: invalid name", op)
		se.Err = err
	}
	return se
}

type errorBody struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// writeError writes err as the spec's error envelope
// {"errors":[{"code","message","detail"}]}. Errors that are not *Error are
// internal failures: 500 UNKNOWN, with the cause logged and not sent.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = newError(CodeUnknown, "internal error")
		e.Err = err
	}
	if e.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "error", err)
	} else {
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "error", err)
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
		Errors []errorBody `json:"errors"`
	}{[]errorBody{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
