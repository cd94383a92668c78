package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/opencontainers/go-digest"
)

// The upload session contract: lifecycle, offsets, failed appends, commit
// checks, abort, unknown IDs, concurrent appends, walking.

func appendAll(t *testing.T, d storage.Driver, id string, offset int64, content []byte, state string) storage.Upload {
	t.Helper()
	up, err := d.AppendUpload(ctx(t), id, offset, int64(len(content)), bytes.NewReader(content), func(size int64) ([]byte, error) {
		if size != offset+int64(len(content)) {
			return nil, fmt.Errorf("state called with size %d, want %d", size, offset+int64(len(content)))
		}
		return []byte(state), nil
	})
	if err != nil {
		t.Fatalf("AppendUpload at %d: %v", offset, err)
	}
	return up
}

func testUploadLifecycle(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	before := time.Now().Add(-time.Minute)
	up, err := d.NewUpload(c, "team/app", []byte("state-0"))
	if err != nil {
		t.Fatalf("NewUpload: %v", err)
	}
	if up.ID == "" || up.Repository != "team/app" || up.Size != 0 || string(up.State) != "state-0" || up.Started.Before(before) || up.Updated.Before(up.Started) {
		t.Fatalf("NewUpload = %+v", up)
	}
	got, err := d.GetUpload(c, up.ID)
	if err != nil || got.Repository != up.Repository || got.Size != 0 || string(got.State) != "state-0" || !got.Started.Equal(up.Started) {
		t.Fatalf("GetUpload = %+v, %v; want %+v", got, err, up)
	}
	started := got.Started
	chunks := [][]byte{randomBytes(t, 1000), randomBytes(t, 1), randomBytes(t, 5<<20), nil}
	var content []byte
	for i, ch := range chunks {
		up = appendAll(t, d, up.ID, int64(len(content)), ch, fmt.Sprintf("state-%d", i+1))
		content = append(content, ch...)
		if up.Size != int64(len(content)) {
			t.Fatalf("after chunk %d: Size %d, want %d", i, up.Size, len(content))
		}
		got, err := d.GetUpload(c, up.ID)
		if err != nil || got.Size != int64(len(content)) || string(got.State) != fmt.Sprintf("state-%d", i+1) ||
			!got.Started.Equal(started) || got.Updated.Before(started) || got.Updated.After(time.Now().Add(time.Minute)) {
			t.Fatalf("GetUpload after chunk %d = %+v, %v", i, got, err)
		}
	}
	dg := digest.FromBytes(content)
	if err := d.CommitUpload(c, up.ID, up.Size, dg); err != nil {
		t.Fatalf("CommitUpload: %v", err)
	}
	if got := readBlob(t, d, dg, 0, -1); !bytes.Equal(got, content) {
		t.Fatal("committed blob differs from the appended chunks")
	}
	if _, err := d.GetUpload(c, up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("GetUpload after commit: %v, want ErrUploadUnknown", err)
	}
	if err := d.AbortUpload(c, up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("AbortUpload after commit: %v, want ErrUploadUnknown", err)
	}
	if _, err := d.AppendUpload(c, up.ID, up.Size, 1, strings.NewReader("x"), func(int64) ([]byte, error) { return nil, nil }); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("AppendUpload after commit: %v, want ErrUploadUnknown", err)
	}
	if err := d.CommitUpload(c, up.ID, up.Size, dg); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("CommitUpload twice: %v, want ErrUploadUnknown", err)
	}
	// An empty upload commits the empty blob.
	empty, err := d.NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	edg := digest.FromBytes(nil)
	if err := d.CommitUpload(c, empty.ID, 0, edg); err != nil {
		t.Fatalf("CommitUpload of an empty upload: %v", err)
	}
	if n, err := d.StatBlob(c, edg); err != nil || n != 0 {
		t.Fatalf("empty blob: %d, %v", n, err)
	}
}

func testUploadOffsets(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	up, err := d.NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	up = appendAll(t, d, up.ID, 0, []byte("hello "), "s1")
	for _, off := range []int64{0, 3, 7, 100} {
		cur, err := d.AppendUpload(c, up.ID, off, 5, strings.NewReader("world"), func(int64) ([]byte, error) { return []byte("bad"), nil })
		if !errors.Is(err, storage.ErrRangeInvalid) {
			t.Fatalf("AppendUpload at %d of a 6-byte upload: %v, want ErrRangeInvalid", off, err)
		}
		if cur.Size != 6 || string(cur.State) != "s1" {
			t.Fatalf("AppendUpload at %d returned %+v, want the session as it is", off, cur)
		}
	}
	up = appendAll(t, d, up.ID, 6, []byte("world"), "s2")
	dg := digest.FromString("hello world")
	if err := d.CommitUpload(c, up.ID, 11, dg); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, d, dg, 0, -1); string(got) != "hello world" {
		t.Fatalf("blob = %q", got)
	}
}

func testUploadFailedAppend(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	up, err := d.NewUpload(c, "team/app", []byte("s0"))
	if err != nil {
		t.Fatal(err)
	}
	up = appendAll(t, d, up.ID, 0, []byte("good "), "s1")
	check := func(what string) {
		t.Helper()
		got, err := d.GetUpload(c, up.ID)
		if err != nil || got.Size != 5 || string(got.State) != "s1" {
			t.Fatalf("after %s: session %+v, %v; want size 5, state s1", what, got, err)
		}
	}
	stateCalled := false
	_, err = d.AppendUpload(c, up.ID, 5, -1, &failingReader{bytes.NewReader(randomBytes(t, 2<<20)), errInjected}, func(int64) ([]byte, error) {
		stateCalled = true
		return []byte("wrong"), nil
	})
	if !errors.Is(err, errInjected) || stateCalled {
		t.Fatalf("AppendUpload with a failing reader: %v (state called: %v), want the reader's error and no state", err, stateCalled)
	}
	check("a failing reader")
	_, err = d.AppendUpload(c, up.ID, 5, 4, strings.NewReader("bad"), func(int64) ([]byte, error) { return []byte("wrong"), nil })
	if err == nil {
		t.Fatal("AppendUpload shorter than its length succeeded")
	}
	check("a short chunk")
	_, err = d.AppendUpload(c, up.ID, 5, 3, strings.NewReader("bad"), func(int64) ([]byte, error) { return nil, errInjected })
	if !errors.Is(err, errInjected) {
		t.Fatalf("AppendUpload with a failing state: %v, want the state's error", err)
	}
	check("a failing state")
	up = appendAll(t, d, up.ID, 5, []byte("end"), "s2")
	dg := digest.FromString("good end")
	if err := d.CommitUpload(c, up.ID, up.Size, dg); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, d, dg, 0, -1); string(got) != "good end" {
		t.Fatalf("blob after failed appends = %q, want %q", got, "good end")
	}
}

func testUploadCommitSize(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	up, err := d.NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	up = appendAll(t, d, up.ID, 0, []byte("abc"), "s")
	dg := digest.FromString("ab")
	for _, size := range []int64{0, 2, 4} {
		if err := d.CommitUpload(c, up.ID, size, dg); !errors.Is(err, storage.ErrRangeInvalid) {
			t.Fatalf("CommitUpload with size %d of a 3-byte upload: %v, want ErrRangeInvalid", size, err)
		}
	}
	if _, err := d.StatBlob(c, dg); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("refused commit left a blob: %v", err)
	}
	if got, err := d.GetUpload(c, up.ID); err != nil || got.Size != 3 {
		t.Fatalf("refused commit changed the session: %+v, %v", got, err)
	}
}

func testUploadCommitExisting(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	content := []byte("already here")
	dg := putBlob(t, d, content)
	up, err := d.NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	up = appendAll(t, d, up.ID, 0, content, "s")
	if err := d.CommitUpload(c, up.ID, up.Size, dg); err != nil {
		t.Fatalf("CommitUpload of an existing blob: %v", err)
	}
	if got := readBlob(t, d, dg, 0, -1); !bytes.Equal(got, content) {
		t.Fatalf("blob = %q", got)
	}
	if _, err := d.GetUpload(c, up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("session survived its commit: %v", err)
	}
}

func testUploadAbort(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	up, err := d.NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(t, 4096)
	up = appendAll(t, d, up.ID, 0, content, "s")
	if err := d.AbortUpload(c, up.ID); err != nil {
		t.Fatalf("AbortUpload: %v", err)
	}
	if _, err := d.GetUpload(c, up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("GetUpload after abort: %v", err)
	}
	if err := d.AbortUpload(c, up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("AbortUpload twice: %v, want ErrUploadUnknown", err)
	}
	if err := d.CommitUpload(c, up.ID, up.Size, digest.FromBytes(content)); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("CommitUpload after abort: %v, want ErrUploadUnknown", err)
	}
	if _, err := d.StatBlob(c, digest.FromBytes(content)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("aborted upload became a blob: %v", err)
	}
}

func testUploadUnknownIDs(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	for _, id := range []string{"", "nope", "../../etc", "/etc/passwd", "00000000-0000-4000-8000-000000000000", "a/b"} {
		if _, err := d.GetUpload(c, id); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("GetUpload(%q): %v, want ErrUploadUnknown", id, err)
		}
		if _, err := d.AppendUpload(c, id, 0, 1, strings.NewReader("x"), func(int64) ([]byte, error) { return nil, nil }); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("AppendUpload(%q): %v, want ErrUploadUnknown", id, err)
		}
		if err := d.AbortUpload(c, id); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("AbortUpload(%q): %v, want ErrUploadUnknown", id, err)
		}
		if err := d.CommitUpload(c, id, 0, digest.FromBytes(nil)); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("CommitUpload(%q): %v, want ErrUploadUnknown", id, err)
		}
	}
}

// testUploadConcurrentAppends sends one chunk at offset 0 from several
// replicas at once: exactly one wins, and the session holds its bytes
// only.
func testUploadConcurrentAppends(t *testing.T, open Opener) {
	drivers := []storage.Driver{open(t), open(t)}
	c := ctx(t)
	up, err := drivers[0].NewUpload(c, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	chunks := make([][]byte, n)
	for i := range chunks {
		chunks[i] = randomBytes(t, 256<<10)
	}
	var wins atomic.Int32
	winner := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := drivers[i%2].AppendUpload(c, up.ID, 0, int64(len(chunks[i])), bytes.NewReader(chunks[i]), func(int64) ([]byte, error) {
				return []byte(fmt.Sprint(i)), nil
			})
			switch {
			case err == nil:
				wins.Add(1)
				winner <- i
			case !errors.Is(err, storage.ErrRangeInvalid):
				t.Errorf("concurrent AppendUpload: %v, want success or ErrRangeInvalid", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d appends at offset 0 succeeded, want exactly 1", wins.Load())
	}
	w := <-winner
	got, err := drivers[1].GetUpload(c, up.ID)
	if err != nil || got.Size != int64(len(chunks[w])) || string(got.State) != fmt.Sprint(w) {
		t.Fatalf("session after concurrent appends = %+v, %v", got, err)
	}
	dg := digest.FromBytes(chunks[w])
	if err := drivers[1].CommitUpload(c, up.ID, got.Size, dg); err != nil {
		t.Fatal(err)
	}
	if b := readBlob(t, drivers[0], dg, 0, -1); !bytes.Equal(b, chunks[w]) {
		t.Fatal("committed content is not the winning chunk")
	}
}

func testWalkUploads(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	want := map[string]string{}
	for _, repo := range []string{"a", "b/c", "a"} {
		up, err := d.NewUpload(c, repo, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[up.ID] = repo
	}
	got := map[string]string{}
	if err := d.WalkUploads(c, func(u storage.Upload) error { got[u.ID] = u.Repository; return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("WalkUploads = %v, want %v", got, want)
	}
}
