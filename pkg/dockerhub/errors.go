package dockerhub

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors, matched with errors.Is against an *Error.
var (
	// ErrUnauthorized is a 401: wrong credentials, or a token Docker Hub
	// no longer accepts.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden is a 403: the account may not manage the repository.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is a 404: no such repository or tag.
	ErrNotFound = errors.New("not found")
)

// Error is a Docker Hub API call that got an unexpected HTTP status. Detail
// is Docker Hub's own explanation (the detail or message field of its error
// body), never a credential.
type Error struct {
	// Op names the call and its object, for example "deleting tag
	// myorg/app:change_12_latest".
	Op         string
	StatusCode int
	Detail     string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: Docker Hub answered %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is maps the status to the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	}
	return false
}
