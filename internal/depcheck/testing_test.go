// Package depcheck_test checks what imagegate's binaries link.
package depcheck_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/daemon"
)

const module = "github.com/imagegate/imagegate"

// machinery are the packages of test and demo machinery. internal/ keeps
// them out of other modules, but any package of this module may import
// them: this test keeps them out of the products.
var machinery = []string{
	"internal/testenv", "internal/daemon", "internal/lab", "internal/ansibletest",
	"internal/registrytest", "internal/transfertest", "internal/storagetest",
	"internal/hubtest", "internal/quaytest", "internal/faultproxy", "internal/cosigntest", "internal/cmd", "tests",
}

// TestProductsLinkNoTestMachinery checks that nothing shipped links
// package testing (its flags, its init, its size) or imagegate's test and
// demo machinery. What is shipped is what tests/setup/dist.sh puts in the
// release tree: every module (modules/*/main.go) and every command
// (cmd/*/main.go), for linux/amd64 and linux/arm64. The demo
// (internal/cmd/imagegate-demo) is not shipped; it is a program, and must
// not link testing either.
func TestProductsLinkNoTestMachinery(t *testing.T) {
	t.Parallel()
	root := daemon.RepoRoot()
	if root == "" {
		t.Fatal("cannot find the repository root")
	}
	for _, m := range machinery {
		if st, err := os.Stat(filepath.Join(root, m)); err != nil || !st.IsDir() {
			t.Fatalf("%s is listed as test machinery but is not a directory: update the list", m)
		}
	}
	var shipped []string
	for _, glob := range []string{"modules/*/main.go", "cmd/*/main.go"} {
		mains, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mains {
			rel, _ := filepath.Rel(root, filepath.Dir(m))
			shipped = append(shipped, "./"+filepath.ToSlash(rel))
		}
	}
	if len(shipped) < 3 || !slices.Contains(shipped, "./cmd/imagegate-registry") || !slices.Contains(shipped, "./cmd/imagegate-runner") {
		t.Fatalf("found only %v as shipped packages", shipped)
	}
	demo := importPath("./internal/cmd/imagegate-demo")
	for _, arch := range []string{"amd64", "arm64"} {
		g := listDeps(t, root, arch, append(slices.Clone(shipped), "./internal/cmd/imagegate-demo")...)
		for _, dir := range shipped {
			p := importPath(dir)
			if _, ok := g.deps[p]; !ok {
				t.Fatalf("go list did not list %s", p)
			}
			for _, d := range g.deps[p] {
				if d == "testing" {
					t.Errorf("%s (linux/%s) links package testing: %s", p, arch, g.chain(p, d))
				}
				for _, m := range machinery {
					if d == module+"/"+m || strings.HasPrefix(d, module+"/"+m+"/") {
						t.Errorf("%s (linux/%s) links test machinery: %s", p, arch, g.chain(p, d))
					}
				}
			}
		}
		if slices.Contains(g.deps[demo], "testing") {
			t.Errorf("%s (linux/%s) links package testing: %s", demo, arch, g.chain(demo, "testing"))
		}
	}
}

// graph is the import graph go list -deps reports.
type graph struct {
	imports map[string][]string // direct imports
	deps    map[string][]string // transitive
}

// listDeps lists pkgs and everything they depend on, built for linux/arch.
func listDeps(t *testing.T, root, arch string, pkgs ...string) graph {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", `{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}`}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	g := graph{imports: map[string][]string{}, deps: map[string][]string{}}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("go list printed %q", line)
		}
		g.imports[f[0]], g.deps[f[0]] = strings.Fields(f[1]), strings.Fields(f[2])
	}
	return g
}

// importPath is the import path of a package given as ./dir.
func importPath(dir string) string { return module + strings.TrimPrefix(dir, ".") }

// chain returns an import chain from p to dep, for the message.
func (g graph) chain(p, dep string) string {
	path := []string{p}
	for cur := p; cur != dep; {
		next := ""
		for _, d := range g.imports[cur] {
			if d == dep || slices.Contains(g.deps[d], dep) {
				next = d
				break
			}
		}
		if next == "" {
			break
		}
		path = append(path, next)
		cur = next
	}
	return strings.Join(path, " -> ")
}
