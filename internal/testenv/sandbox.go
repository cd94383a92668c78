package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
)

// Sandbox is a private mount namespace in which chosen files and
// directories of the machine (/etc/hosts, /etc/docker/certs.d, the system
// trust store, ...) are replaced by private copies. A module run inside it
// can edit those real default locations, and daemons and clients run inside
// it read them, while the machine's own files, which other tests share, are
// never touched. The copies are bind-mounted over the originals, as a
// container's /etc/hosts is, so renaming a file over one fails with EBUSY.
type Sandbox struct {
	// Dir holds the private copies.
	Dir    string
	holder *daemon.Process
	copies map[string]string
}

// NewSandbox copies each of paths (which must exist) into a temporary
// directory and starts a process holding a mount namespace in which each
// copy is bind-mounted over its original. It fails t if the namespace cannot
// be made (unshare and mount need root).
func NewSandbox(t testing.TB, paths ...string) *Sandbox {
	t.Helper()
	s := &Sandbox{Dir: ShortTempDir(t), copies: map[string]string{}}
	var script strings.Builder
	script.WriteString("set -e\n")
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("sandbox: %v (a bind mount needs an existing mount point)", err)
		}
		cp := filepath.Join(s.Dir, fmt.Sprintf("%d-%s", i, filepath.Base(p)))
		if fi.IsDir() {
			if err := os.MkdirAll(cp, 0o755); err != nil {
				t.Fatal(err)
			}
			Run(t, nil, "cp", "-a", p+"/.", cp)
		} else {
			Run(t, nil, "cp", "-a", p, cp)
		}
		s.copies[p] = cp
		fmt.Fprintf(&script, "mount --bind %q %q\n", cp, p)
	}
	script.WriteString("echo sandbox-ready\nexec sleep 2147483647\n")
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script.String())
	s.holder = StartProcess(t, "sandbox", cmd, s.Dir)
	WaitFor(t, "sandbox", 30*time.Second, s.holder, func() error {
		if !s.holder.LogContains("sandbox-ready") {
			return fmt.Errorf("mounts not done yet")
		}
		return nil
	})
	return s
}

// Path returns the private copy that stands in for the machine path p in
// the sandbox, as seen from outside it.
func (s *Sandbox) Path(p string) string { return s.copies[p] }

func (s *Sandbox) nsenter() []string {
	return []string{"nsenter", "--mount=/proc/" + strconv.Itoa(s.holder.Cmd.Process.Pid) + "/ns/mnt", "--"}
}

// Command returns a command that runs name inside the sandbox.
func (s *Sandbox) Command(name string, args ...string) *exec.Cmd {
	argv := append(s.nsenter(), name)
	return exec.Command(argv[0], append(argv[1:], args...)...)
}

// Run runs a command inside the sandbox and returns its stdout; it fails t
// with the command's stdout and stderr when it fails.
func (s *Sandbox) Run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	argv := append(s.nsenter(), name)
	out, err := run(env, argv[0], append(argv[1:], args...)...)
	if err != nil {
		t.Fatalf("in sandbox: %s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// Wrap returns the path of an executable that runs bin inside the sandbox
// with the arguments it is given: pass it where a tool path is expected,
// for example as the DOCKERD or BUILDKITD tool, or as a module binary.
func (s *Sandbox) Wrap(t testing.TB, bin string) string {
	t.Helper()
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(s.Dir, "in-sandbox-"+filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec %s %q \"$@\"\n", strings.Join(s.nsenter(), " "), abs)
	if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}
