package depcheck

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/imagegate/imagegate/"

// layer is a set of packages (by path prefix) and the layers they may
// import. A package belongs to the layer with its longest prefix.
type layer struct {
	name string
	pkgs []string
	may  []string
	// alone forbids imports between the layer's packages: the Zuul-aware
	// facades each stand on the generic layers, never on one another.
	alone bool
}

// layers are imagegate's package layers, lowest first. Generic packages
// know nothing of Zuul or of Ansible; Zuul-aware ones sit on them; modules
// and commands on top.
var layers = []layer{
	{name: "foundation", pkgs: []string{"pkg/oci", "pkg/ocilayout", "pkg/atomicfile", "pkg/pki", "pkg/redact", "pkg/sign"}, may: []string{"foundation"}},
	{name: "module protocol", pkgs: []string{"pkg/ansible"}, may: []string{"foundation", "module protocol"}},
	{name: "storage", pkgs: []string{"pkg/registry/storage"}, may: []string{"foundation", "storage"}},
	{name: "registry", pkgs: []string{"pkg/registry"}, may: []string{"foundation", "storage", "registry"}},
	{name: "service", pkgs: []string{"pkg/server"}, may: []string{"foundation", "storage", "registry"}},
	{name: "client", pkgs: []string{"pkg/transfer", "pkg/dockerhub", "pkg/quay"}, may: []string{"foundation", "client"}},
	{name: "verification", pkgs: []string{"pkg/verify"}, may: []string{"foundation", "client"}},
	{name: "zuul", pkgs: []string{"pkg/zuul"}, may: []string{"foundation"}},
	// The SBOM cataloger, linked by the scanner BuildKit runs only.
	{name: "scanner", pkgs: []string{"pkg/sbom"}, may: []string{"foundation"}},
	{name: "zuul-aware", pkgs: []string{"pkg/intermediate", "pkg/publish", "pkg/build", "pkg/buildkitd", "pkg/clientconf", "pkg/buildset"},
		may: []string{"foundation", "module protocol", "storage", "registry", "client", "verification", "zuul"}, alone: true},
	{name: "runner", pkgs: []string{"pkg/runner"}, may: []string{"foundation", "module protocol", "zuul", "runner"}},
	{name: "modules", pkgs: []string{"modules"}, may: []string{"module protocol", "zuul-aware"}},
	{name: "commands", pkgs: []string{"cmd/imagegate-registry", "cmd/imagegate-runner", "cmd/imagegate-sbom-scanner"}, may: []string{"service", "runner", "scanner"}},
}

// testMachinery reports packages that exist for tests and the demo only:
// the tests/ tree and benchmarks, internal/ trees, the *test helper
// packages, and the emulations and fixtures named here. Products may not
// import them; they may import anything their layer may, and each other.
func testMachinery(p string) bool {
	if strings.HasPrefix(p, "tests/") || p == "bench" ||
		strings.HasPrefix(p, "internal/") || strings.Contains(p, "/internal/") {
		return true
	}
	base := filepath.Base(p)
	return strings.HasSuffix(base, "test")
}

func layerOf(p string) *layer {
	var best *layer
	bestLen := -1
	for i := range layers {
		for _, pre := range layers[i].pkgs {
			if (p == pre || strings.HasPrefix(p, pre+"/")) && len(pre) > bestLen {
				best, bestLen = &layers[i], len(pre)
			}
		}
	}
	return best
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// list runs go list over the tree with format and returns one line per
// package: its path (without the module prefix) and the fields.
func list(t *testing.T, format string, pkgs ...string) map[string][]string {
	t.Helper()
	args := append([]string{"list", "-f", format}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	res := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		res[strings.TrimPrefix(f[0], module)] = f[1:]
	}
	return res
}

// TestLayers: every package of the tree is in a layer or is test
// machinery, imports only what its layer may, and no product imports test
// machinery.
func TestLayers(t *testing.T) {
	t.Parallel()
	imports := list(t, "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	if len(imports) < 30 {
		t.Fatalf("go list found %d packages", len(imports))
	}
	var pkgs []string
	for p := range imports {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, p := range pkgs {
		test := testMachinery(p)
		l := layerOf(p)
		if l == nil && !test {
			t.Errorf("package %s is in no layer: add it to the layers of internal/depcheck and to docs/architecture.md", p)
			continue
		}
		for _, imp := range imports[p] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			q := strings.TrimPrefix(imp, module)
			if testMachinery(q) {
				if !test {
					t.Errorf("%s imports %s, test machinery: products must not link it", p, q)
				}
				continue
			}
			if l == nil { // test machinery outside any layer: the tests/ tree
				continue
			}
			ql := layerOf(q)
			switch {
			case ql == nil:
				t.Errorf("%s imports %s, which is in no layer", p, q)
			case ql == l && l.alone && !test && !strings.HasPrefix(q, p+"/"):
				t.Errorf("%s imports %s: the %s packages stand alone, never on one another", p, q, l.name)
			case !slices.Contains(l.may, ql.name) && !(ql == l && l.alone):
				t.Errorf("%s (%s) imports %s (%s): the %s layer may import only %v", p, l.name, q, ql.name, l.name, l.may)
			}
		}
	}
}

// TestModulesCallOnePackage: a module's main imports the module protocol
// and the one package whose function it calls.
func TestModulesCallOnePackage(t *testing.T) {
	t.Parallel()
	for p, imps := range list(t, "{{.ImportPath}} {{join .Imports \" \"}}", "./modules/...") {
		var own []string
		for _, imp := range imps {
			if strings.HasPrefix(imp, module) {
				own = append(own, strings.TrimPrefix(imp, module))
			}
		}
		sort.Strings(own)
		if len(own) != 2 || own[0] != "pkg/ansible" {
			t.Errorf("%s imports %v: a module imports pkg/ansible and the one package it calls", p, own)
		}
	}
}

// knownTesting are the shipped binaries that link package testing today,
// with why. None does: keep it that way.
var knownTesting = map[string]string{}

// buildkitAllowed are the binaries that may link BuildKit: the build
// modules of the docker and container-image families.
var buildkitAllowed = map[string]bool{"modules/docker_image_build": true, "modules/container_image_build": true}

// TestBinaries checks what each shipped binary links: no sigstore or
// cosign module in any (package sign speaks their formats), the SBOM
// cataloger (pkg/sbom, spdx) in the scanner only, BuildKit only in
// the build modules (the other modules are copied to the node on every
// task), no go-containerregistry remote client (pkg/v1/remote and below)
// in buildset_registry (the registry daemon and its module), and no package
// testing in any module or service.
func TestBinaries(t *testing.T) {
	t.Parallel()
	deps := list(t, "{{.ImportPath}} {{join .Deps \" \"}}", "./modules/...", "./cmd/imagegate-registry", "./cmd/imagegate-runner", "./cmd/imagegate-sbom-scanner")
	if len(deps) < 9 {
		t.Fatalf("go list found %d binaries", len(deps))
	}
	for bin, ds := range deps {
		var buildkit, remote, sigstore, scanner []string
		linksTesting := false
		for _, d := range ds {
			switch {
			case strings.HasPrefix(d, "github.com/moby/buildkit/"):
				buildkit = append(buildkit, d)
			case d == "github.com/google/go-containerregistry/pkg/v1/remote" ||
				strings.HasPrefix(d, "github.com/google/go-containerregistry/pkg/v1/remote/"):
				remote = append(remote, d)
			case d == "testing":
				linksTesting = true
			case strings.HasPrefix(d, "github.com/sigstore/"):
				sigstore = append(sigstore, d)
			case d == "github.com/imagegate/imagegate/pkg/sbom" || strings.HasPrefix(d, "github.com/spdx/"):
				scanner = append(scanner, d)
			}
		}
		if buildkitAllowed[bin] {
			if len(buildkit) == 0 {
				t.Errorf("%s links no BuildKit: the rule checks nothing", bin)
			}
		} else if len(buildkit) > 0 {
			t.Errorf("%s links BuildKit (%s ...): only the build modules (docker_image_build, container_image_build) may", bin, buildkit[0])
		}
		if len(sigstore) > 0 {
			// cosign's formats are package sign's, on the standard library
			// and go-securesystemslib: cosign and sigstore are a test peer.
			t.Errorf("%s links sigstore (%s ...): signing stays in package sign", bin, sigstore[0])
		}
		// The scanner runs in its own image, inside BuildKit: no module
		// carries it, and it carries nothing else of ours.
		if bin == "cmd/imagegate-sbom-scanner" {
			if len(scanner) == 0 {
				t.Errorf("%s links no pkg/sbom: the rule checks nothing", bin)
			}
			if len(remote) > 0 {
				t.Errorf("%s links a registry client (%s): it only reads a directory", bin, remote[0])
			}
		} else if len(scanner) > 0 {
			t.Errorf("%s links the SBOM scanner (%s): only cmd/imagegate-sbom-scanner may", bin, scanner[0])
		}
		if bin == "modules/buildset_registry" && len(remote) > 0 {
			t.Errorf("%s links go-containerregistry's remote client (%v)", bin, remote)
		}
		if linksTesting {
			if why, ok := knownTesting[bin]; ok {
				t.Logf("%s links package testing: %s", bin, why)
			} else {
				t.Errorf("%s links package testing: a shipped binary must not link test machinery", bin)
			}
		} else if _, ok := knownTesting[bin]; ok {
			t.Errorf("%s no longer links package testing: drop it from knownTesting", bin)
		}
	}
}
