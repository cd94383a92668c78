// Command registryimage assembles the container image of
// imagegate-registry without a container runtime: for each platform, the
// static binary in one layer on an empty base, shaped like zuul-registry's
// image (the command `-c /conf/registry.yaml serve`, a /storage volume,
// /conf for the configuration), and one OCI index over them, written as
// an OCI layout and as a docker-loadable tarball per platform. It is build
// tooling for tests/setup/dist.sh, not a product.
//
//	registryimage -out DIR -tag REF -mtime RFC3339 linux/amd64=BIN linux/arm64=BIN
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/imagegate/imagegate/internal/scratchimage"
)

// binPath is where the binary lives in the image; zuul-registry is a
// link to it, so a deployment whose command names zuul-registry still
// runs.
const binPath = "/usr/local/bin/imagegate-registry"

// caBundle is Debian's CA bundle (ca-certificates), one of the paths Go
// reads the system's CAs from.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "registryimage: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("registryimage", flag.ContinueOnError)
	out := fs.String("out", "", "output directory: oci/ (an OCI layout with the index) and <os>_<arch>.tar (docker load)")
	tag := fs.String("tag", "imagegate/imagegate-registry:latest", "the name the tarballs load as")
	mtime := fs.String("mtime", "1970-01-01T00:00:00Z", "creation time of the images and files (reproducible builds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return errors.New("usage: registryimage -out DIR [-tag REF] [-mtime RFC3339] os/arch=BINARY [os/arch=BINARY]")
	}
	created, err := time.Parse(time.RFC3339, *mtime)
	if err != nil {
		return fmt.Errorf("-mtime: %w", err)
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	idx := scratchimage.NewIndex()
	for _, a := range fs.Args() {
		plat, bin, ok := strings.Cut(a, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 {
			return fmt.Errorf("%q: want os/arch=binary", a)
		}
		img, err := image(bin, osName, arch, created)
		if err != nil {
			return fmt.Errorf("%s: %w", plat, err)
		}
		idx.Add(osName, arch, img)
		if err := tarball.WriteToFile(filepath.Join(*out, osName+"_"+arch+".tar"), ref, img); err != nil {
			return fmt.Errorf("%s: writing the tarball: %w", plat, err)
		}
	}
	d, err := idx.WriteLayout(filepath.Join(*out, "oci"), ref.TagStr())
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", ref, d)
	return nil
}

// image is one platform's image: the binary, the link, /storage and /conf
// in one layer.
func image(bin, osName, arch string, created time.Time) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	config := v1.Config{Cmd: []string{binPath, "-c", "/conf/registry.yaml", "serve"},
		Volumes: map[string]struct{}{"/storage": {}}, WorkingDir: "/", Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}},
		Labels: map[string]string{"org.opencontainers.image.title": "imagegate-registry",
			"org.opencontainers.image.description": "imagegate's intermediate registry, a drop-in for zuul-registry"}}
	return scratchimage.Image(osName, arch, created, config, func(l *scratchimage.Layer) error {
		for _, d := range []string{"usr", "usr/local", "usr/local/bin", "etc", "tmp", "conf", "storage"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			if err := l.Dir(d, mode); err != nil {
				return err
			}
		}
		if err := l.File(strings.TrimPrefix(binPath, "/"), 0o755, b); err != nil {
			return err
		}
		if err := l.Symlink("usr/local/bin/zuul-registry", "imagegate-registry"); err != nil {
			return err
		}
		// Keystone, Swift and S3 endpoints with public certificates are
		// verified against the system's CA bundle: the build machine's goes
		// in, where Go looks for it.
		if cas, err := os.ReadFile(caBundle); err == nil {
			for _, d := range []string{"etc/ssl", "etc/ssl/certs"} {
				if err := l.Dir(d, 0o755); err != nil {
					return err
				}
			}
			if err := l.File(strings.TrimPrefix(caBundle, "/"), 0o644, cas); err != nil {
				return err
			}
		}
		return nil
	})
}
