package buildkitd

import "errors"

var (
	// ErrForeignDaemon is returned when a process this package did not
	// start listens on the address: it is not signalled.
	ErrForeignDaemon = errors.New("a buildkitd that this module did not start is running")
	// ErrStartFailed is returned when buildkitd exited, or did not open
	// its socket, before the start timeout.
	ErrStartFailed = errors.New("buildkitd did not start")
)
