package storage

import "errors"

// Sentinel errors of drivers. Drivers wrap them (fmt.Errorf("...: %w",
// ErrNotFound)); callers test them with errors.Is.
var (
	// ErrNotFound reports a missing blob, entry or table.
	ErrNotFound = errors.New("not found")
	// ErrUploadUnknown reports an upload session that does not exist (or
	// no longer exists: committed, aborted or expired).
	ErrUploadUnknown = errors.New("upload unknown")
	// ErrRangeInvalid reports a chunk whose offset is not the session's
	// size, or a commit whose size is not the session's size.
	ErrRangeInvalid = errors.New("range invalid")
	// ErrInvalid reports a repository name, table or key a driver refuses
	// to store (a defence in depth: the registry validates first).
	ErrInvalid = errors.New("invalid name")
	// ErrUnavailable reports a transient failure of the store (a timeout,
	// an outage): the request may succeed when retried.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrNoSpace reports a write the store refused for lack of space or
	// quota (ENOSPC, EDQUOT; an S3 store's 507 Insufficient Storage). A
	// retry does not help until someone frees space.
	ErrNoSpace = errors.New("no space left on the registry's storage")
)
