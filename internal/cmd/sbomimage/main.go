// Command sbomimage writes the OCI layout of imagegate-sbom-scanner's
// image (package internal/sbomimage) for tests/setup/dist.sh.
//
//	sbomimage -out DIR -tag NAME -mtime RFC3339 linux/amd64=BIN linux/arm64=BIN
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/imagegate/imagegate/internal/sbomimage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "sbomimage: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("sbomimage", flag.ContinueOnError)
	out := fs.String("out", "", "the OCI layout directory to write")
	tag := fs.String("tag", "latest", "the index's org.opencontainers.image.ref.name")
	mtime := fs.String("mtime", "1970-01-01T00:00:00Z", "creation time of the images and files (reproducible builds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return errors.New("usage: sbomimage -out DIR [-tag NAME] [-mtime RFC3339] os/arch=BINARY [os/arch=BINARY]")
	}
	created, err := time.Parse(time.RFC3339, *mtime)
	if err != nil {
		return fmt.Errorf("-mtime: %w", err)
	}
	bins := map[string]string{}
	for _, a := range fs.Args() {
		plat, bin, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want os/arch=binary", a)
		}
		bins[plat] = bin
	}
	d, err := sbomimage.Write(*out, *tag, created, bins)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", *out, d)
	return nil
}
