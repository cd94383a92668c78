package testenv

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static package installs busybox.
const BusyboxPath = "/bin/busybox"

var busyboxOnce sync.Once
var busyboxLayer []byte
var busyboxErr error

// BusyboxLayer returns an uncompressed tar layer holding Debian's static
// busybox as /bin/busybox with /bin/sh and a few applets linked to it: a
// base that can RUN commands, built without any network access.
func BusyboxLayer(t testing.TB) []byte {
	t.Helper()
	busyboxOnce.Do(func() {
		bin, err := os.ReadFile(BusyboxPath)
		if err != nil {
			busyboxErr = err
			return
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		mod := time.Unix(0, 0)
		dirs := []string{"bin/", "etc/", "tmp/", "root/", "proc/", "sys/", "dev/"}
		for _, d := range dirs {
			mode := int64(0o755)
			if d == "tmp/" {
				mode = 0o1777
			}
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mod})
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: mod})
		tw.Write(bin)
		for _, applet := range []string{"sh", "echo", "cat", "ls", "mkdir", "cp", "rm", "sleep", "true", "false", "test", "wc", "sha256sum", "dd", "head", "env", "printf"} {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mod})
		}
		passwd := []byte("root:x:0:0:root:/root:/bin/sh\n")
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: mod})
		tw.Write(passwd)
		tw.Close()
		busyboxLayer = buf.Bytes()
	})
	if busyboxErr != nil {
		t.Fatalf("reading %s (Debian package busybox-static): %v", BusyboxPath, busyboxErr)
	}
	return busyboxLayer
}

// BusyboxImage returns a linux/amd64 image whose only layer is BusyboxLayer,
// with PATH set and /bin/sh as command. Extra layers (tar bytes) are added on
// top, for images that must differ by content.
func BusyboxImage(t testing.TB, extra ...[]byte) v1.Image {
	t.Helper()
	return busyboxImage(t, false, extra)
}

// BusyboxOCIImage is BusyboxImage with the OCI media types (manifest,
// config and layers), as skopeo's oci: transport requires.
func BusyboxOCIImage(t testing.TB, extra ...[]byte) v1.Image {
	t.Helper()
	return busyboxImage(t, true, extra)
}

func busyboxImage(t testing.TB, oci bool, extra [][]byte) v1.Image {
	t.Helper()
	layers := append([][]byte{BusyboxLayer(t)}, extra...)
	img := empty.Image
	var lopts []tarball.LayerOption
	if oci {
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		lopts = append(lopts, tarball.WithMediaType(types.OCILayer))
	}
	for _, l := range layers {
		data := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, lopts...)
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, layer)
		if err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// FileLayer returns an uncompressed tar layer holding one regular file.
func FileLayer(name string, content []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)})
	tw.Write(content)
	tw.Close()
	return buf.Bytes()
}
