package ansibletest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imagegate/imagegate/internal/daemon"
)

// Library is a directory of module binaries, each beside its sidecar
// documentation <name>.yml, as `make build` writes
// roles/imagegate-modules/library: what ANSIBLE_LIBRARY and ansible-doc -M
// point at.
type Library struct {
	// Dir is the directory.
	Dir string
}

// Bin returns the path of the module name in the library.
func (l Library) Bin(name string) string { return filepath.Join(l.Dir, name) }

// BuildLibrary builds modules (names of directories under modules/) into
// dir as `make build` does for this machine, and copies each one's sidecar
// documentation beside it.
func BuildLibrary(dir string, modules ...string) (Library, error) {
	root := daemon.RepoRoot()
	if root == "" {
		return Library{}, fmt.Errorf("building modules: no go.mod above the working directory")
	}
	for _, mod := range modules {
		if err := build("github.com/imagegate/imagegate/modules/"+mod, filepath.Join(dir, mod)); err != nil {
			return Library{}, err
		}
		doc, err := os.ReadFile(filepath.Join(root, "modules", mod, mod+".yml"))
		if err != nil {
			return Library{}, err
		}
		if err := os.WriteFile(filepath.Join(dir, mod+".yml"), doc, 0o644); err != nil {
			return Library{}, err
		}
	}
	return Library{Dir: dir}, nil
}

// NewLibrary is BuildLibrary into a temporary directory of the test.
func NewLibrary(t testing.TB, modules ...string) Library {
	t.Helper()
	lib, err := BuildLibrary(t.TempDir(), modules...)
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// Main is the TestMain of a package whose tests run module binaries: it
// builds modules once into a temporary Library stored in *lib, runs the
// package's tests, removes the library, and exits with the tests' status.
func Main(m *testing.M, lib *Library, modules ...string) {
	dir, err := os.MkdirTemp("", "ansibletest-library")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *lib, err = BuildLibrary(dir, modules...); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the package pkg (an import path, or a directory relative
// to the working directory) to out as `make build` builds modules: static,
// -trimpath, stripped. env is added to the go command's environment
// (GOARCH=arm64, ...).
func build(pkg, out string, env ...string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// CheckAnsibleDoc renders the documentation of module in lib with the real
// ansible-doc, as a user would, and fails t when ansible-doc fails or
// complains (ERROR or WARNING), or when its output lacks any of want.
func CheckAnsibleDoc(t testing.TB, lib Library, module string, want ...string) {
	t.Helper()
	cmd := exec.Command("ansible-doc", "-M", lib.Dir, module)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "PAGER=cat", "ANSIBLE_LOCAL_TEMP="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-doc %s: %v\n%s", module, err, out)
	}
	for _, w := range want {
		if !bytes.Contains(out, []byte(w)) {
			t.Errorf("ansible-doc %s output lacks %q:\n%s", module, w, out)
		}
	}
	if bytes.Contains(out, []byte("ERROR")) || bytes.Contains(out, []byte("WARNING")) {
		t.Errorf("ansible-doc %s complains:\n%s", module, out)
	}
}

// PlaybookEnv returns what a test adds to os.Environ() to run
// ansible-playbook: the modules of library (a directory; "" for none),
// Ansible's temporary directories under dir, no colours and no retry
// files, and an empty configuration file written to dir, so that no
// ansible.cfg of the machine or the working directory changes what is
// tested.
func PlaybookEnv(t testing.TB, dir, library string) []string {
	t.Helper()
	cfg := filepath.Join(dir, "ansible.cfg")
	if err := os.WriteFile(cfg, []byte("[defaults]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "ansible-local"),
		"ANSIBLE_REMOTE_TEMP=" + filepath.Join(dir, "ansible-remote"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_CONFIG=" + cfg,
	}
	if library != "" {
		env = append(env, "ANSIBLE_LIBRARY="+library)
	}
	return env
}

// Playbook runs ansible-playbook on the playbook file with the modules of
// lib, against localhost over the local connection with the system's
// python3, with vars as extra variables (passed in a file, so secrets stay
// off the command line) and args added to the command line. It returns the
// combined output, and fails t with it when the run fails.
func Playbook(t testing.TB, lib Library, playbook string, vars map[string]any, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory")
	if err := os.WriteFile(inv, []byte("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	varsFile := filepath.Join(dir, "vars.json")
	writeJSON(t, varsFile, vars)
	pb, err := filepath.Abs(playbook)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ansible-playbook", append(append([]string{"-i", inv, "-e", "@" + varsFile}, args...), pb)...)
	cmd.Env = append(os.Environ(), PlaybookEnv(t, dir, lib.Dir)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-playbook %s: %v\n%s", playbook, err, out)
	}
	return string(out)
}

// writeJSON writes v as JSON to path, readable by its owner only: module
// arguments and variables hold passwords.
func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
