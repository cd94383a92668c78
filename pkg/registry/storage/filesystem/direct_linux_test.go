package filesystem_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// TestDirectWrites writes blobs and upload chunks of sizes and offsets
// around the copy buffer's (whole buffers, a partial last block, chunks
// at unaligned offsets) with direct I/O on and off, and checks that the
// content reads back intact. With direct I/O on, a large blob must not
// be in the page cache after the write (mincore); with it off, it is:
// the check would notice a driver that silently stopped writing directly.
func TestDirectWrites(t *testing.T) {
	t.Parallel()
	const buf = 64 << 10
	content, chunked := make([]byte, 5*buf+1234), make([]byte, 5*buf+1234)
	rand.Read(content)
	rand.Read(chunked)
	for _, direct := range []bool{true, false} {
		name := map[bool]string{true: "direct", false: "buffered"}[direct]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			d, err := filesystem.New(root, filesystem.WithBufferSize(buf), filesystem.WithDirectIO(direct))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()

			// A blob of five whole buffers and a partial block.
			dg := digest.FromBytes(content)
			if err := d.PutBlob(ctx, dg, int64(len(content)), bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(root, "blobs", "sha256", dg.Encoded()[:2], dg.Encoded())
			cached := residentPages(t, path)
			pages := (len(content) + os.Getpagesize() - 1) / os.Getpagesize()
			switch {
			case !direct && cached == 0:
				t.Errorf("none of the %d pages of a buffered write is in the page cache: the check cannot see anything", pages)
			case direct && supportsDirect(t, root) && cached > 1:
				t.Errorf("%d of %d pages of the blob are in the page cache: it was not written directly", cached, pages)
			}
			t.Logf("%s: %d of %d pages cached after the write", name, cached, pages)
			checkBlob(t, d, dg, content)

			// An upload in chunks: unaligned, then aligned again, then a
			// chunk of whole buffers at an aligned offset.
			up, err := d.NewUpload(ctx, "team/app", nil)
			if err != nil {
				t.Fatal(err)
			}
			state := func(int64) ([]byte, error) { return []byte("s"), nil }
			bounds := []int{0, 5000, 3 * buf, 4 * buf, len(chunked)}
			for i := 1; i < len(bounds); i++ {
				chunk := chunked[bounds[i-1]:bounds[i]]
				if up, err = d.AppendUpload(ctx, up.ID, int64(bounds[i-1]), int64(len(chunk)), bytes.NewReader(chunk), state); err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
			}
			dg2 := digest.FromBytes(chunked)
			if err := d.CommitUpload(ctx, up.ID, int64(len(chunked)), dg2); err != nil {
				t.Fatal(err)
			}
			checkBlob(t, d, dg2, chunked)
		})
	}
}

func checkBlob(t *testing.T, d *filesystem.Driver, dg digest.Digest, want []byte) {
	t.Helper()
	rc, err := d.OpenBlob(context.Background(), dg, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("blob %s reads back %d bytes, different from the %d written", dg, got.Len(), len(want))
	}
}

// supportsDirect reports whether the filesystem of dir accepts O_DIRECT.
func supportsDirect(t *testing.T, dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_WRONLY|syscall.O_DIRECT, 0o600)
	if err != nil {
		t.Logf("no direct I/O on %s: %v", dir, err)
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// residentPages counts the pages of a file that are in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	size := int(fi.Size())
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	vec := make([]byte, (size+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(size), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
