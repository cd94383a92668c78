//go:build linux

package ansible

import (
	"io"
	"os"
	"syscall"
)

// guardStdout keeps the real stdout for the result alone: it duplicates file
// descriptor 1 to a private descriptor, then points descriptor 1 (and
// os.Stdout) at stderr, so anything a library prints cannot corrupt the JSON
// that Ansible parses.
func guardStdout() io.Writer {
	fd, err := syscall.Dup(1)
	if err != nil {
		return os.Stdout
	}
	syscall.CloseOnExec(fd)
	if err := syscall.Dup3(2, 1, 0); err != nil {
		syscall.Close(fd)
		return os.Stdout
	}
	out := os.NewFile(uintptr(fd), "ansible-result")
	os.Stdout = os.Stderr
	return out
}
