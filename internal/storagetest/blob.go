package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/opencontainers/go-digest"
)

// The blob contract: round trips, ranges, missing blobs, failed and
// concurrent writes, large streams, walking.

func testBlobRoundTrip(t *testing.T, open Opener) {
	d := open(t)
	for _, size := range []int{0, 1, 4096, 1<<20 + 7} {
		content := randomBytes(t, size)
		dg := putBlob(t, d, content)
		n, err := d.StatBlob(ctx(t), dg)
		if err != nil || n != int64(size) {
			t.Fatalf("StatBlob = %d, %v; want %d", n, err, size)
		}
		if got := readBlob(t, d, dg, 0, -1); !bytes.Equal(got, content) {
			t.Fatalf("blob of %d bytes read back as %d different bytes", size, len(got))
		}
		// Storing it again is not an error.
		putBlob(t, d, content)
		if err := d.DeleteBlob(ctx(t), dg); err != nil {
			t.Fatalf("DeleteBlob: %v", err)
		}
		if _, err := d.StatBlob(ctx(t), dg); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("StatBlob after delete: %v, want ErrNotFound", err)
		}
	}
	sha512 := digest.SHA512.FromBytes([]byte("sha512 content"))
	if err := d.PutBlob(ctx(t), sha512, 14, strings.NewReader("sha512 content")); err != nil {
		t.Fatalf("PutBlob sha512: %v", err)
	}
	if got := readBlob(t, d, sha512, 0, -1); string(got) != "sha512 content" {
		t.Fatalf("sha512 blob read back as %q", got)
	}
}

func testBlobRanges(t *testing.T, open Opener) {
	d := open(t)
	content := randomBytes(t, 10000)
	dg := putBlob(t, d, content)
	for _, tc := range []struct{ offset, length int64 }{
		{0, 10000}, {0, 1}, {500, 1000}, {9999, 1}, {9000, -1}, {0, -1}, {10000, 0}, {1234, 0},
	} {
		want := content[tc.offset:]
		if tc.length >= 0 {
			want = want[:tc.length]
		}
		if got := readBlob(t, d, dg, tc.offset, tc.length); !bytes.Equal(got, want) {
			t.Errorf("range offset %d length %d: got %d bytes, want %d", tc.offset, tc.length, len(got), len(want))
		}
	}
}

func testBlobMissing(t *testing.T, open Opener) {
	d := open(t)
	dg := digest.FromString("never stored")
	if _, err := d.StatBlob(ctx(t), dg); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("StatBlob: %v, want ErrNotFound", err)
	}
	if rc, err := d.OpenBlob(ctx(t), dg, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("OpenBlob: %v, want ErrNotFound", err)
	}
	if err := d.DeleteBlob(ctx(t), dg); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteBlob: %v, want ErrNotFound", err)
	}
}

// failingReader returns content, then err instead of io.EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

var errInjected = errors.New("injected failure")

func testBlobFailedWrite(t *testing.T, open Opener) {
	d := open(t)
	content := randomBytes(t, 3<<20)
	dg := digest.FromBytes(content)
	// A reader failing at its end (as the registry's digest check does).
	err := d.PutBlob(ctx(t), dg, int64(len(content)), &failingReader{bytes.NewReader(content), errInjected})
	if !errors.Is(err, errInjected) {
		t.Fatalf("PutBlob with a failing reader: %v, want the reader's error", err)
	}
	// A reader shorter than the announced size.
	if err := d.PutBlob(ctx(t), dg, int64(len(content))+1, bytes.NewReader(content)); err == nil {
		t.Fatal("PutBlob with a short reader succeeded")
	}
	if _, err := d.StatBlob(ctx(t), dg); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("failed PutBlob left a blob: StatBlob = %v", err)
	}
	err = d.WalkBlobs(ctx(t), func(b storage.BlobInfo) error {
		return fmt.Errorf("failed PutBlob left %s (%d bytes)", b.Digest, b.Size)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testBlobConcurrentPuts(t *testing.T, open Opener) {
	d1, d2 := open(t), open(t)
	content := randomBytes(t, 1<<20)
	dg := digest.FromBytes(content)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := d1
			if i%2 == 1 {
				d = d2
			}
			errs <- d.PutBlob(ctx(t), dg, int64(len(content)), bytes.NewReader(content))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent PutBlob: %v", err)
		}
	}
	if got := readBlob(t, d1, dg, 0, -1); !bytes.Equal(got, content) {
		t.Fatal("concurrent PutBlob of one digest corrupted the content")
	}
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	m := min(int64(len(b)), p.n-p.off)
	for i := range m {
		b[i] = byte((p.off + i) % 251)
	}
	p.off += m
	return int(m), nil
}

func testBlobLargeStream(t *testing.T, open Opener) {
	d := open(t)
	const size = 64 << 20
	h := digest.SHA256.Digester()
	if _, err := io.Copy(h.Hash(), &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	dg := h.Digest()
	if err := d.PutBlob(ctx(t), dg, size, &patternReader{n: size}); err != nil {
		t.Fatalf("PutBlob of 64 MiB: %v", err)
	}
	rc, err := d.OpenBlob(ctx(t), dg, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	v := digest.SHA256.Digester()
	n, err := io.Copy(v.Hash(), rc)
	if err != nil || n != size || v.Digest() != dg {
		t.Fatalf("read back %d bytes (%v), digest %s; want %d bytes, %s", n, err, v.Digest(), size, dg)
	}
}

func testWalkBlobs(t *testing.T, open Opener) {
	d := open(t)
	want := map[digest.Digest]int64{}
	for i := range 5 {
		c := randomBytes(t, 100*i)
		want[putBlob(t, d, c)] = int64(len(c))
	}
	got := map[digest.Digest]int64{}
	err := d.WalkBlobs(ctx(t), func(b storage.BlobInfo) error {
		got[b.Digest] = b.Size
		if time.Since(b.ModTime) > time.Hour || b.ModTime.After(time.Now().Add(time.Minute)) {
			return fmt.Errorf("blob %s has ModTime %s", b.Digest, b.ModTime)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("WalkBlobs = %v, want %v", got, want)
	}
	stop := errors.New("stop")
	calls := 0
	if err := d.WalkBlobs(ctx(t), func(storage.BlobInfo) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("WalkBlobs did not stop at fn's error: %v after %d calls", err, calls)
	}
}
