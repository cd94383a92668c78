package sbom

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Scan catalogs the root filesystem at root: the Debian packages of its
// dpkg database and the Go modules of its Go binaries. Symbolic links are
// not followed (a link may point outside the image). A database that cannot
// be parsed or a tree that cannot be walked is an error naming the file;
// a file that is not a Go binary is simply not one.
func Scan(root string) ([]Package, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("scanning %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("scanning %s: not a directory", root)
	}
	distro := osReleaseID(root)
	pkgs, err := scanDpkg(root, distro)
	if err != nil {
		return nil, err
	}
	gos, err := scanGo(root)
	if err != nil {
		return nil, err
	}
	pkgs = append(pkgs, gos...)
	sortPackages(pkgs)
	return pkgs, nil
}

// dpkgStatus is dpkg's database; dpkgStatusD is distroless' one file per
// package.
const (
	dpkgStatus  = "var/lib/dpkg/status"
	dpkgStatusD = "var/lib/dpkg/status.d"
)

func scanDpkg(root, distro string) ([]Package, error) {
	files := []string{dpkgStatus}
	if ents, err := os.ReadDir(filepath.Join(root, dpkgStatusD)); err == nil {
		for _, e := range ents {
			if e.Type().IsRegular() && !strings.HasSuffix(e.Name(), ".md5sums") {
				files = append(files, filepath.Join(dpkgStatusD, e.Name()))
			}
		}
	}
	var pkgs []Package
	for _, rel := range files {
		f, err := openRegular(root, rel)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading the dpkg database %s: %w", rel, err)
		}
		found, err := parseDpkg(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parsing the dpkg database %s: %w", rel, err)
		}
		for i := range found {
			found[i].Location, found[i].Distro = rel, distro
		}
		pkgs = append(pkgs, found...)
	}
	return pkgs, nil
}

// parseDpkg reads a dpkg status file (deb822 paragraphs, Debian Policy
// 5.1): the installed packages, with Package, Version, Architecture and
// Source. A package whose Status is not "install ok installed" (removed,
// config files only) is not in the image.
func parseDpkg(r io.Reader) ([]Package, error) {
	var pkgs []Package
	fields := map[string]string{}
	last := ""
	line := 0
	flush := func() error {
		defer clear(fields)
		if len(fields) == 0 {
			return nil
		}
		name := fields["Package"]
		if name == "" {
			return fmt.Errorf("paragraph ending at line %d has no Package field", line)
		}
		if st, ok := fields["Status"]; ok && !strings.HasSuffix(st, " installed") {
			return nil
		}
		p := Package{Kind: KindDeb, Name: name, Version: fields["Version"], Arch: fields["Architecture"]}
		if src := fields["Source"]; src != "" {
			// "Source: name (version)" when the versions differ.
			src, _, _ = strings.Cut(src, " ")
			if src != name {
				p.Source = src
			}
		}
		pkgs = append(pkgs, p)
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line++
		l := sc.Text()
		switch {
		case strings.TrimSpace(l) == "":
			if err := flush(); err != nil {
				return nil, err
			}
			last = ""
		case l[0] == ' ' || l[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("line %d: continuation line without a field", line)
			}
		default:
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is not a field", line, l)
			}
			last = k
			fields[k] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return pkgs, nil
}

// osReleaseID is the ID of etc/os-release (or usr/lib/os-release), the
// purl namespace of Debian packages; "" when neither says.
func osReleaseID(root string) string {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		f, err := openRegular(root, rel)
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ID="); ok {
				return strings.Trim(v, `"'`)
			}
		}
		return ""
	}
	return ""
}

// skipDirs are trees that hold no image content when a scanner runs on a
// live root (the command-line mode).
var skipDirs = map[string]bool{"proc": true, "sys": true, "dev": true}

// elfMagic starts every ELF file; Go binaries for Linux are ELF.
var elfMagic = []byte("\x7fELF")

// scanGo finds the Go binaries under root and lists each one's main module
// and dependencies (with replacements applied).
func scanGo(root string) ([]Package, error) {
	var pkgs []Package
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", path, err)
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if skipDirs[rel] {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Mode()&0o111 == 0 || info.Size() < int64(len(elfMagic)) {
			return nil
		}
		if !isELF(path) {
			return nil
		}
		bi, err := buildinfo.ReadFile(path)
		if err != nil {
			// Not a Go binary, or one without build information.
			return nil
		}
		rel = filepath.ToSlash(rel)
		if bi.Main.Path != "" {
			pkgs = append(pkgs, Package{Kind: KindGolang, Name: bi.Main.Path, Version: bi.Main.Version, Location: rel, Main: true})
		}
		for _, m := range bi.Deps {
			if m.Replace != nil {
				m = m.Replace
			}
			pkgs = append(pkgs, Package{Kind: KindGolang, Name: m.Path, Version: m.Version, Location: rel})
		}
		if bi.GoVersion != "" {
			pkgs = append(pkgs, Package{Kind: KindGolang, Name: "stdlib", Version: bi.GoVersion, Location: rel})
		}
		return nil
	})
	return pkgs, err
}

func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(elfMagic))
	if _, err := io.ReadFull(f, b); err != nil {
		return false
	}
	return bytes.Equal(b, elfMagic)
}

// openRegular opens root/rel when it is a regular file, not through a
// symbolic link anywhere in rel (os.Root keeps it inside root).
func openRegular(root, rel string) (*os.File, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	fi, err := r.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	return r.Open(rel)
}
