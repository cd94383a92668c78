package filesystem

import (
	"errors"
	"os"
	"syscall"
)

// setDirect turns O_DIRECT on or off for f. It fails (EINVAL) on a
// filesystem that does not support direct I/O.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		flags, e := fcntl(fd, syscall.F_GETFL, 0)
		if e != nil {
			serr = e
			return
		}
		if on {
			flags |= syscall.O_DIRECT
		} else {
			flags &^= syscall.O_DIRECT
		}
		_, serr = fcntl(fd, syscall.F_SETFL, flags)
	})
	if err != nil {
		return err
	}
	return serr
}

func fcntl(fd uintptr, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), uintptr(arg))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

// directUnsupported reports a write refused because of direct I/O (an
// alignment the filesystem does not accept): the write did nothing and
// may be repeated through the page cache.
func directUnsupported(err error) bool { return errors.Is(err, syscall.EINVAL) }

const directSupported = true
