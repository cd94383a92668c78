package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// ErrorCode is an error code of the distribution spec ("Error Codes").
type ErrorCode string

// The error codes of the distribution spec, and two of the Docker
// registry's for server-side failures (the spec only constrains 4xx bodies;
// clients treat unknown codes as UNKNOWN).
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

// Sentinel errors. An *Error matches them with errors.Is by its status and
// codes, so callers never compare statuses themselves.
var (
	// ErrNotFound: no such manifest, tag, blob or repository (404, or the
	// codes MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: credentials missing, wrong or expired (401, or the
	// code UNAUTHORIZED).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the credentials are good but lack the access (403, or
	// the code DENIED).
	ErrForbidden = errors.New("forbidden")
	// ErrDenied is either of ErrUnauthorized and ErrForbidden: the registry
	// refused the credentials for what was asked.
	ErrDenied = errors.New("access denied")
	// ErrUnsupported: the registry does not implement the operation (405,
	// or the code UNSUPPORTED).
	ErrUnsupported = errors.New("unsupported by the registry")
)

// Diagnostic is one entry of the spec's error envelope
// {"errors":[{"code","message","detail"}]}.
type Diagnostic struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// Error is a registry answer with an error status: what a client reads
// (ResponseError) and what the server writes. It is the one HTTP error type
// of imagegate's registry clients, the server and the Docker Hub client;
// errors.As finds it under any wrapping.
type Error struct {
	// Op names the call and its object on the client side, such as "GET
	// manifest registry.example/myorg/app:latest"; empty on the server.
	Op         string
	StatusCode int
	// Errors are the entries of the spec's error envelope.
	Errors []Diagnostic
	// Message explains an answer without the envelope: a proxy's short text
	// body, Docker Hub's {"detail"} or {"message"}.
	Message string
	// Header holds the server's extra response headers (Retry-After, the
	// WWW-Authenticate challenge on a 401, Range on a 416, ...).
	Header http.Header
	// Err is the cause on the server side: logged, never sent.
	Err error
}

// Error renders "op: status (codes): messages: cause", leaving out what is
// empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	fmt.Fprintf(&b, "%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	var codes, msgs []string
	for _, d := range e.Errors {
		codes = append(codes, string(d.Code))
		if d.Message != "" {
			msgs = append(msgs, d.Message)
		}
	}
	if len(codes) > 0 {
		b.WriteString(" (" + strings.Join(codes, ", ") + ")")
	}
	if e.Message != "" {
		msgs = append(msgs, e.Message)
	}
	if len(msgs) > 0 {
		b.WriteString(": " + strings.Join(msgs, "; "))
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is maps the status and codes to the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound || e.HasCode(CodeManifestUnknown, CodeNameUnknown, CodeBlobUnknown)
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized || e.HasCode(CodeUnauthorized)
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden || e.HasCode(CodeDenied)
	case ErrDenied:
		return e.Is(ErrUnauthorized) || e.Is(ErrForbidden)
	case ErrUnsupported:
		return e.StatusCode == http.StatusMethodNotAllowed || e.HasCode(CodeUnsupported)
	}
	return false
}

// WithStatus sets the HTTP status, for a server answering a code with
// another status than its usual one.
func (e *Error) WithStatus(status int) *Error { e.StatusCode = status; return e }

// WithDetail sets the detail of the first entry of the envelope.
func (e *Error) WithDetail(detail any) *Error {
	if len(e.Errors) > 0 {
		e.Errors[0].Detail = detail
	}
	return e
}

// WithHeader adds a response header the server sends with the error.
func (e *Error) WithHeader(key, value string) *Error {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Add(key, value)
	return e
}

// HasCode reports whether the answer carries any of codes.
func (e *Error) HasCode(codes ...ErrorCode) bool {
	for _, d := range e.Errors {
		if slices.Contains(codes, d.Code) {
			return true
		}
	}
	return false
}

// Code is the first error code, or "" when the answer carried none.
func (e *Error) Code() ErrorCode {
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// StatusCode is the HTTP status of the *Error in err's chain, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// HasCode reports whether the *Error in err's chain carries code.
func HasCode(err error, code ErrorCode) bool {
	var e *Error
	return errors.As(err, &e) && e.HasCode(code)
}

// maxErrorBody is the most of an error answer read.
const maxErrorBody = 64 << 10

// CheckResponse returns nil when resp's status is one of ok, and the answer
// as an *Error otherwise (ResponseError). It reads the body only then.
func CheckResponse(resp *http.Response, op string, ok ...int) error {
	if slices.Contains(ok, resp.StatusCode) {
		return nil
	}
	return ResponseError(op, resp)
}

// ResponseError reads the answer resp as an *Error: the spec's error
// envelope when the body is one; otherwise a short text body, or the
// detail or message field of a JSON body, as the Message. It reads at most
// 64 KiB of the body and does not close it.
func ResponseError(op string, resp *http.Response) *Error {
	e := &Error{Op: op, StatusCode: resp.StatusCode}
	if resp.Body == nil {
		return e
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		Errors  []Diagnostic `json:"errors"`
		Detail  any          `json:"detail"`
		Message string       `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Errors = body.Errors
		if len(e.Errors) == 0 {
			if s, ok := body.Detail.(string); ok {
				e.Message = s
			}
			if e.Message == "" {
				e.Message = body.Message
			}
		}
		return e
	}
	// A proxy's or load balancer's answer: keep it when it is short text,
	// not an HTML page.
	if s := strings.TrimSpace(string(b)); s != "" && len(s) < 300 && !strings.Contains(s, "<") {
		e.Message = s
	}
	return e
}
