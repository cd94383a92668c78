package sbom

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const status = `Package: busybox-static
Status: install ok installed
Priority: optional
Architecture: amd64
Source: busybox
Version: 1:1.35.0-4+b3
Description: Standalone rescue shell
 with tons of builtin utilities

Package: removed
Status: deinstall ok config-files
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4
`

func TestParseDpkg(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, err string
		want          []string
	}{
		{name: "installed only", in: status, want: []string{"busybox-static 1:1.35.0-4+b3 busybox", "libc6 2.36-9+deb12u4 glibc"}},
		{name: "empty", in: "", want: nil},
		{name: "no package field", in: "Version: 1\n", err: "no Package field"},
		{name: "not a field", in: "Package: a\nnonsense\n", err: "line 2"},
		{name: "continuation first", in: " dangling\n", err: "continuation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pkgs, err := parseDpkg(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pkgs {
				got = append(got, p.Name+" "+p.Version+" "+p.Source)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    Package
		want string
	}{
		{Package{Kind: KindDeb, Name: "busybox-static", Version: "1:1.35.0-4+b3", Arch: "amd64", Source: "busybox"},
			"pkg:deb/debian/busybox-static@1%3A1.35.0-4+b3?arch=amd64&upstream=busybox"},
		{Package{Kind: KindDeb, Name: "bash", Version: "5.2", Distro: "ubuntu"}, "pkg:deb/ubuntu/bash@5.2"},
		{Package{Kind: KindGolang, Name: "github.com/spdx/tools-golang", Version: "v0.5.7"}, "pkg:golang/github.com/spdx/tools-golang@v0.5.7"},
		{Package{Kind: KindGolang, Name: "example.org/cmd", Version: "(devel)", Main: true}, "pkg:golang/example.org/cmd"},
	} {
		if got := tc.p.PURL(); got != tc.want {
			t.Errorf("PURL(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// TestScan catalogs a root filesystem with a dpkg database, a Go binary
// (this test's own, which has build information), a file that only looks
// executable and a symbolic link out of the tree.
func TestScan(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(rel string, b []byte, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("var/lib/dpkg/status", []byte(status), 0o644)
	write("etc/os-release", []byte("NAME=\"Debian GNU/Linux\"\nID=debian\n"), 0o644)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	write("usr/bin/tool", bin, 0o755)
	write("usr/bin/script", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("usr/bin/fake", []byte("\x7fELF not really"), 0o755)
	if err := os.Symlink("/usr/bin", filepath.Join(root, "usr/bin/outside")); err != nil {
		t.Fatal(err)
	}
	pkgs, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]Package{}
	for _, p := range pkgs {
		have[string(p.Kind)+":"+p.Name] = p
	}
	for _, want := range []string{"deb:busybox-static", "deb:libc6", "golang:stdlib", "golang:github.com/imagegate/imagegate"} {
		if _, ok := have[want]; !ok {
			t.Errorf("%s not found in %+v", want, pkgs)
		}
	}
	// A test binary records its main module and Go version (its
	// dependencies are checked on the scanner's own binary in pkg/build).
	if p := have["golang:github.com/imagegate/imagegate"]; p.Location != "usr/bin/tool" || !p.Main {
		t.Errorf("main module: %+v, want the main module found in usr/bin/tool", p)
	}
	if _, ok := have["deb:removed"]; ok {
		t.Error("a removed package was listed")
	}

	doc, err := Document("rootfs", pkgs, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Statement(doc)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			SPDXVersion string `json:"spdxVersion"`
			Namespace   string `json:"documentNamespace"`
			Packages    []struct {
				Name string `json:"name"`
				Refs []struct {
					Locator string `json:"referenceLocator"`
				} `json:"externalRefs"`
			} `json:"packages"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(st, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != StatementType || got.PredicateType != PredicateType || got.Predicate.SPDXVersion != "SPDX-2.3" ||
		!strings.HasPrefix(got.Predicate.Namespace, namespaceBase+"rootfs-") || len(got.Predicate.Packages) != len(pkgs) {
		t.Fatalf("statement: %s", st)
	}
	if !strings.Contains(string(st), `"pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64\u0026upstream=glibc"`) &&
		!strings.Contains(string(st), `"pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&upstream=glibc"`) {
		t.Errorf("libc6's purl is not in %s", st)
	}
}

func TestScanNotADirectory(t *testing.T) {
	t.Parallel()
	if _, err := Scan(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want one naming the path", err)
	}
}
