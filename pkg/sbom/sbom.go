// Package sbom catalogs what an image's root filesystem contains and writes
// it as an SPDX 2.3 JSON document (github.com/spdx/tools-golang), wrapped in
// the in-toto statement BuildKit's SBOM generator protocol expects
// (BuildKit's docs/attestations/sbom-protocol.md). It knows two kinds of
// package, the ones a Zuul-built image usually holds: Debian packages (the
// dpkg database, var/lib/dpkg/status and distroless' status.d) and Go
// binaries with their module information (debug/buildinfo). It works on a
// directory and needs no network. Only cmd/imagegate-sbom-scanner links it,
// the scanner image BuildKit runs (internal/depcheck keeps it out of every
// module).
package sbom

import (
	"cmp"
	"slices"
)

// Kind is the ecosystem of a package.
type Kind string

// The kinds the catalogers find.
const (
	KindDeb    Kind = "deb"
	KindGolang Kind = "golang"
)

// Package is one package found in a root filesystem.
type Package struct {
	Kind    Kind
	Name    string
	Version string
	// Arch is a Debian package's architecture.
	Arch string
	// Source is a Debian package's source package, when it differs.
	Source string
	// Location is the file the package was found in, relative to the
	// root: the dpkg database, or the Go binary.
	Location string
	// Main is true for a Go binary's main module.
	Main bool
	// Distro is the os-release ID for a Debian package's purl (debian,
	// ubuntu).
	Distro string
}

// PURL is the package URL (github.com/package-url/purl-spec) of p.
func (p Package) PURL() string {
	switch p.Kind {
	case KindDeb:
		distro := cmp.Or(p.Distro, "debian")
		s := "pkg:deb/" + purlEscape(distro) + "/" + purlEscape(p.Name) + "@" + purlEscape(p.Version)
		var q []string
		if p.Arch != "" {
			q = append(q, "arch="+purlEscape(p.Arch))
		}
		if p.Source != "" {
			q = append(q, "upstream="+purlEscape(p.Source))
		}
		if len(q) > 0 {
			s += "?" + join(q, "&")
		}
		return s
	case KindGolang:
		s := "pkg:golang/" + p.Name
		if p.Version != "" && p.Version != "(devel)" {
			s += "@" + purlEscape(p.Version)
		}
		return s
	}
	return ""
}

// sortPackages orders packages by kind, name, version and location, so a
// scan of the same tree always yields the same document.
func sortPackages(pkgs []Package) {
	slices.SortFunc(pkgs, func(a, b Package) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Version, b.Version), cmp.Compare(a.Location, b.Location))
	})
}

func join(s []string, sep string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += sep
		}
		out += x
	}
	return out
}

// purlEscape percent-encodes what a purl component may not hold as is.
func purlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' || c == '~' || c == '+' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}
