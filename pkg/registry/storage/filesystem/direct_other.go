//go:build !linux

package filesystem

import (
	"errors"
	"os"
)

func setDirect(*os.File, bool) error { return errors.New("direct I/O is not used on this system") }

func directUnsupported(error) bool { return false }

const directSupported = false
