package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/daemon"
)

// TestReleaseTree checks the tree `make dist` produced, as an operator
// gets it: every file matches SHA256SUMS, every module is there for
// linux/amd64, arm64, ppc64le and s390x (built for the architecture its
// name says), with its action plugin link and documentation that
// ansible-doc renders from the role's library, and ensure-buildkit carries
// a static buildkitd for each of those architectures, and the registry's
// container image is there as an index for amd64 and arm64 of the shape of
// zuul-registry's (checkRegistryImage), and so is the SBOM scanner's, in
// ensure-buildkit's files (checkScannerImage).
func TestReleaseTree(t *testing.T) {
	t.Parallel()
	dist := distDir(t)
	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := 0
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		want, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		f, err := os.Open(filepath.Join(dist, file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil || hex.EncodeToString(h.Sum(nil)) != want {
			t.Errorf("%s does not match SHA256SUMS (%v)", file, err)
		}
		listed++
	}
	if listed < 20 {
		t.Errorf("SHA256SUMS lists %d files", listed)
	}

	lib := filepath.Join(dist, "roles", "imagegate-modules", "library")
	mains, _ := filepath.Glob(filepath.Join(daemon.RepoRoot(), "modules", "*", "main.go"))
	if len(mains) == 0 {
		t.Fatal("no modules in the source tree")
	}
	for _, m := range mains {
		mod := filepath.Base(filepath.Dir(m))
		for bin, arch := range map[string]string{mod: "amd64", mod + "_arm64": "arm64", mod + "_ppc64le": "ppc64le", mod + "_s390x": "s390x"} {
			out, err := exec.Command("go", "version", "-m", filepath.Join(lib, bin)).Output()
			if err != nil {
				t.Errorf("%s: %v", bin, err)
				continue
			}
			if !strings.Contains(string(out), "GOARCH="+arch) || !strings.Contains(string(out), "GOOS=linux") ||
				!strings.Contains(string(out), "CGO_ENABLED=0") {
				t.Errorf("%s is not a static linux/%s build:\n%s", bin, arch, out)
			}
		}
		link, err := os.Readlink(filepath.Join(dist, "roles", "imagegate-modules", "action_plugins", mod+".py"))
		if err != nil || link != "imagegate_module.py" {
			t.Errorf("action plugin link for %s: %q %v", mod, link, err)
		}
		out, err := exec.Command("ansible-doc", "-M", lib, mod).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "OPTIONS") {
			t.Errorf("ansible-doc -M %s %s: %v\n%s", lib, mod, err, out)
		}
	}
	// The commands are the products of cmd/, nothing else: the demo and the
	// test registry (internal/cmd) stay out of the release tree.
	var commands []string
	cmds, _ := filepath.Glob(filepath.Join(daemon.RepoRoot(), "cmd", "*", "main.go"))
	for _, c := range cmds {
		commands = append(commands, filepath.Base(filepath.Dir(c)))
	}
	for _, arch := range []string{"amd64", "arm64", "ppc64le", "s390x"} {
		entries, err := os.ReadDir(filepath.Join(dist, "bin", "linux_"+arch))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, commands) {
			t.Errorf("bin/linux_%s holds %v, want the commands of cmd/: %v", arch, got, commands)
		}
	}
	for _, arch := range []string{"amd64", "arm64", "ppc64le", "s390x"} {
		bin := filepath.Join(dist, "roles", "ensure-buildkit", "files", "linux_"+arch, "buildkitd")
		out, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Errorf("%s: %v", bin, err)
			continue
		}
		if !strings.Contains(string(out), "path\tgithub.com/moby/buildkit/cmd/buildkitd") || !strings.Contains(string(out), "GOARCH="+arch) ||
			!strings.Contains(string(out), "CGO_ENABLED=0") {
			t.Errorf("%s is not a static linux/%s buildkitd:\n%.600s", bin, arch, out)
		}
	}
	checkRegistryImage(t, dist)
	checkScannerImage(t, dist)
	for _, f := range []string{"zuul.d/jobs.yaml", "playbooks/docker-image/run.yaml", "roles/build-docker-image/README.rst",
		"docs/runner.md", "docs/jobs.md", "VERSION", "bin/linux_amd64/imagegate-runner", "bin/linux_arm64/imagegate-runner",
		"bin/linux_ppc64le/imagegate-runner", "bin/linux_s390x/imagegate-runner"} {
		if _, err := os.Stat(filepath.Join(dist, f)); err != nil {
			t.Errorf("the release tree lacks %s", f)
		}
	}
}
