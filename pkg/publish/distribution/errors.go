package distribution

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Sentinel errors, matched with errors.Is against an *Error.
var (
	// ErrNotFound: no such manifest, tag, blob or repository (404, or the
	// spec codes MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN).
	ErrNotFound = errors.New("not found")
	// ErrDenied: the credentials are wrong, or lack the access (401, 403).
	ErrDenied = errors.New("access denied")
	// ErrUnsupported: the registry does not implement the operation (405, or
	// the spec code UNSUPPORTED). Distribution 2.8 answers so to a tag
	// delete.
	ErrUnsupported = errors.New("unsupported by the registry")
)

// Error is a registry answer with an unexpected HTTP status. Codes and
// Message come from the spec's error envelope
// {"errors":[{"code","message","detail"}]} (distribution-spec, "Error
// Codes").
type Error struct {
	// Op names the call and its object, such as "GET manifest
	// registry.example/myorg/app:latest".
	Op         string
	StatusCode int
	Codes      []string
	Message    string
	// unsupported is set when the answer means "cannot do that" in a
	// non-standard way, such as distribution 2.8's DIGEST_INVALID for a
	// tag delete.
	unsupported bool
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Codes) > 0 {
		msg += " (" + strings.Join(e.Codes, ", ") + ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is maps the status and codes to the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound || e.hasCode("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN")
	case ErrDenied:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden || e.hasCode("DENIED", "UNAUTHORIZED")
	case ErrUnsupported:
		return e.unsupported || e.StatusCode == http.StatusMethodNotAllowed || e.hasCode("UNSUPPORTED")
	}
	return false
}

func (e *Error) hasCode(codes ...string) bool {
	for _, c := range e.Codes {
		for _, w := range codes {
			if c == w {
				return true
			}
		}
	}
	return false
}

// responseError reads the spec's error envelope from resp.
func responseError(op string, resp *http.Response) *Error {
	e := &Error{Op: op, StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &env) == nil && len(env.Errors) > 0 {
		var msgs []string
		for _, x := range env.Errors {
			e.Codes = append(e.Codes, x.Code)
			if x.Message != "" {
				msgs = append(msgs, x.Message)
			}
		}
		e.Message = strings.Join(msgs, "; ")
	} else if s := strings.TrimSpace(string(b)); s != "" && len(s) < 300 && !strings.Contains(s, "<") {
		e.Message = s
	}
	return e
}
