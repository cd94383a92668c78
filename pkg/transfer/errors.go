package transfer

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Sentinel errors of the client layer. Registry answers are *oci.Error
// values, matched with oci.ErrNotFound, oci.ErrDenied and the other
// sentinels of package oci.
var (
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
	StepReferrers      Step = "carrying referrers"
)

// Error is a failed operation on one reference: which reference, at which
// step, for which digest, and why. The cause is often an *oci.Error
// carrying the HTTP status and the registry's error codes: errors.Is(err,
// oci.ErrNotFound) and errors.As(err, **oci.Error) see through an Error.
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

// StatusCode is the HTTP status of the registry's answer, or 0 when the
// failure was not an HTTP error status.
func (e *Error) StatusCode() int { return oci.StatusCode(e.Err) }

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
	switch oci.StatusCode(err) {
	case http.StatusUnauthorized:
		return fmt.Sprintf("%v (check the username and password for this registry)", err)
	case http.StatusForbidden:
		return fmt.Sprintf("%v (the credentials have no access to this repository)", err)
	}
	return err.Error()
}
