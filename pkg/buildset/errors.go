package buildset

import "errors"

var (
	// ErrPortInUse is returned when the registry's port is taken by another
	// process.
	ErrPortInUse = errors.New("port already in use")
	// ErrForeignRoot is returned when the root directory exists, is not
	// empty and is not a buildset registry root: imagegate neither takes
	// over nor deletes a directory it did not create.
	ErrForeignRoot = errors.New("not a buildset registry root")
	// ErrRootUnusable is returned when the root directory cannot be created
	// or written.
	ErrRootUnusable = errors.New("cannot create or write the root directory")
	// ErrForeignProcess is returned when the process holding the pid
	// file's lock is not the root's registry daemon: it is not signalled.
	ErrForeignProcess = errors.New("the pid file is locked by another process")
	// ErrStartFailed is returned when the daemon exited, or did not answer
	// over TLS, before the start deadline.
	ErrStartFailed = errors.New("the registry did not start")
)
