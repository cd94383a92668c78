//go:build !linux

package ansible

import (
	"io"
	"os"
)

// guardStdout redirects os.Stdout to stderr; descriptor-level redirection is
// only done on Linux, the only platform modules are built for.
func guardStdout() io.Writer {
	out := os.Stdout
	os.Stdout = os.Stderr
	return out
}
