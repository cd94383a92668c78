package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The jobs under test and in the demo start daemons that are not children
// of the test or the demo: ensure-buildkit's buildkitd (pid file), the
// buildset registry (the module copies itself into the registry's root).
// These functions stop them.

// StopPid ends the process pid: SIGTERM, then SIGKILL if it is still there
// after 10 s.
func StopPid(pid int) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// StopPidfile ends the process whose pid is written in the file path, if
// the file holds one.
func StopPidfile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	StopPid(pid)
}

// StopUnder ends every process whose executable lies under dir, and returns
// the executables it stopped.
func StopUnder(dir string) []string {
	var stopped []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, dir+"/") {
			StopPid(pid)
			stopped = append(stopped, exe+" (pid "+strconv.Itoa(pid)+")")
		}
	}
	return stopped
}

// RemoveAll removes a daemon's directory, unmounting anything the daemon
// left mounted below it (overlay mounts of dockerd or buildkitd).
func RemoveAll(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				mounts = append(mounts, f[1])
			}
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
	_ = os.RemoveAll(dir)
}
