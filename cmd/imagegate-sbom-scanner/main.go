// Command imagegate-sbom-scanner is the SBOM generator BuildKit runs on
// every image docker_image_build builds (frontend attribute attest:sbom,
// generator=<this image>). It follows BuildKit's SBOM generator protocol
// (docs/attestations/sbom-protocol.md): it scans the root filesystem at
// $BUILDKIT_SCAN_SOURCE and each one under $BUILDKIT_SCAN_SOURCE_EXTRAS, and
// writes one in-toto statement with an SPDX 2.3 document per filesystem to
// $BUILDKIT_SCAN_DESTINATION/<name>.spdx.json. Package sbom does the work;
// it needs no network.
//
// Run by hand, `imagegate-sbom-scanner DIR` prints the SPDX document of DIR.
//
// A failure (an unreadable dpkg database, say) exits non-zero with the
// cause on stderr: BuildKit then fails the build of that image.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	spdx "github.com/spdx/tools-golang/spdx/v2/v2_3"

	"github.com/imagegate/imagegate/pkg/sbom"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "imagegate-sbom-scanner: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	created, err := creationTime()
	if err != nil {
		return err
	}
	if len(args) > 0 {
		if len(args) != 1 || args[0] == "-h" || args[0] == "--help" {
			return errors.New("usage: imagegate-sbom-scanner DIR (or run by BuildKit with BUILDKIT_SCAN_SOURCE and BUILDKIT_SCAN_DESTINATION)")
		}
		doc, err := scan(args[0], filepath.Base(filepath.Clean(args[0])), created)
		if err != nil {
			return err
		}
		return spdxjson.Write(doc, os.Stdout, spdxjson.Indent("  "))
	}
	src, dst := os.Getenv("BUILDKIT_SCAN_SOURCE"), os.Getenv("BUILDKIT_SCAN_DESTINATION")
	if src == "" || dst == "" {
		return errors.New("BUILDKIT_SCAN_SOURCE and BUILDKIT_SCAN_DESTINATION must be set (BuildKit's SBOM generator protocol), or give a directory to scan")
	}
	targets := []string{src}
	// Optional: unset, empty or missing means no extras.
	if extras := os.Getenv("BUILDKIT_SCAN_SOURCE_EXTRAS"); extras != "" {
		if ents, err := os.ReadDir(extras); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					targets = append(targets, filepath.Join(extras, e.Name()))
				}
			}
		}
	}
	for _, t := range targets {
		name := filepath.Base(t)
		doc, err := scan(t, name, created)
		if err != nil {
			return err
		}
		st, err := sbom.Statement(doc)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, name+".spdx.json")
		if err := os.WriteFile(out, st, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", out, err)
		}
		fmt.Fprintf(os.Stderr, "imagegate-sbom-scanner: %s: %d packages\n", name, len(doc.Packages))
	}
	return nil
}

func scan(dir, name string, created time.Time) (*spdx.Document, error) {
	pkgs, err := sbom.Scan(dir)
	if err != nil {
		return nil, err
	}
	return sbom.Document(name, pkgs, created)
}

// creationTime is SOURCE_DATE_EPOCH when set (reproducible builds), else
// now.
func creationTime() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since the epoch", s)
	}
	return time.Unix(n, 0), nil
}
