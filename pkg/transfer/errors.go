package transfer

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors. An *Error matches ErrNotFound, ErrUnauthorized and
// ErrDeadline through errors.Is when its cause does.
var (
	// ErrNotFound is a 404 from the registry: unknown repository, tag,
	// manifest or blob.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized is a 401 or 403 from the registry: missing or wrong
	// credentials, or no permission for the repository.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrPlainHTTP is returned for a request that would leave TLS: a
	// redirect, token realm or upload location with an http:// URL.
	ErrPlainHTTP = errors.New("refusing plain HTTP: registries are only spoken to over TLS")
	// ErrDeadline is the cause of an operation that ran out of time.
	ErrDeadline = errors.New("operation deadline exceeded")
	// ErrDigestMismatch is content whose digest is not the one expected.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnsupportedManifest is a manifest this package cannot copy
	// without changing it (Docker schema 1, unknown media types).
	ErrUnsupportedManifest = errors.New("unsupported manifest")
)

// Step names the part of a copy that failed.
type Step string

// The steps of a copy, as an Error reports them.
const (
	StepParse          Step = "parsing reference"
	StepConnect        Step = "connecting to registry"
	StepSourceManifest Step = "reading source manifest"
	StepTargetManifest Step = "reading target manifest"
	StepBlob           Step = "copying blob"
	StepMount          Step = "mounting blob"
	StepPutManifest    Step = "writing manifest"
	StepListTags       Step = "listing tags"
)

// Error is a failed operation on one reference: which reference, at which
// step, for which digest, and why. The cause is often a
// *transport.Error carrying the HTTP status and the registry's error codes.
type Error struct {
	// Ref is the image reference (registry/repository:tag or @digest)
	// the step was working on.
	Ref  string
	Step Step
	// Digest is the blob or manifest digest, when the step concerns one.
	Digest string
	Err    error
}

func (e *Error) Error() string {
	s := string(e.Step) + " "
	if e.Digest != "" {
		s += e.Digest + " of "
	}
	s += e.Ref + ": " + describe(e.Err)
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) and errors.Is(err, ErrUnauthorized)
// true for the matching HTTP statuses.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode() == http.StatusNotFound
	case ErrUnauthorized:
		c := e.StatusCode()
		return c == http.StatusUnauthorized || c == http.StatusForbidden
	}
	return false
}

// StatusCode is the HTTP status of the registry's answer, or 0 when the
// failure was not an HTTP error status.
func (e *Error) StatusCode() int {
	var te *transport.Error
	if errors.As(e.Err, &te) {
		return te.StatusCode
	}
	return 0
}

// describe renders a cause with a hint for the failures users can fix.
func describe(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("%v (the registry's certificate is not signed by a CA trusted for it: give the registry's CA certificate)", err)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("%v (the registry's certificate does not cover the host name or address used)", err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Sprintf("%v (check the username and password for this registry)", err)
		case http.StatusForbidden:
			return fmt.Sprintf("%v (the credentials have no access to this repository)", err)
		}
	}
	return err.Error()
}
