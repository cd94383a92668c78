// Package storagetest is the conformance suite of storage drivers: every
// storage.Driver runs Run in its tests, so the registry can rely on the
// contract written in package storage whatever the store.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// Opener opens a driver over one store. Calling it again returns another
// driver over the same data, as a second replica of the registry would
// have.
type Opener func(t *testing.T) storage.Driver

// Run runs the suite. newStore is called by every subtest to create an
// empty store and returns the Opener for it.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"BlobRoundTrip", testBlobRoundTrip},
		{"BlobRanges", testBlobRanges},
		{"BlobMissing", testBlobMissing},
		{"BlobFailedWriteLeavesNothing", testBlobFailedWrite},
		{"BlobConcurrentPuts", testBlobConcurrentPuts},
		{"BlobLargeStream", testBlobLargeStream},
		{"WalkBlobs", testWalkBlobs},
		{"Entries", testEntries},
		{"EntryListing", testEntryListing},
		{"EntryNamesValidated", testEntryNamesValidated},
		{"EntryTablesIsolated", testEntryTablesIsolated},
		{"Repositories", testRepositories},
		{"UploadLifecycle", testUploadLifecycle},
		{"UploadOffsets", testUploadOffsets},
		{"UploadFailedAppendLeavesSession", testUploadFailedAppend},
		{"UploadCommitChecksSize", testUploadCommitSize},
		{"UploadCommitExistingBlob", testUploadCommitExisting},
		{"UploadAbort", testUploadAbort},
		{"UploadUnknownIDs", testUploadUnknownIDs},
		{"UploadConcurrentAppends", testUploadConcurrentAppends},
		{"WalkUploads", testWalkUploads},
		{"Replicas", testReplicas},
		{"CancelledContext", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func putBlob(t *testing.T, d storage.Driver, content []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(content)
	if err := d.PutBlob(ctx(t), dg, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	return dg
}

func readBlob(t *testing.T, d storage.Driver, dg digest.Digest, offset, length int64) []byte {
	t.Helper()
	rc, err := d.OpenBlob(ctx(t), dg, offset, length)
	if err != nil {
		t.Fatalf("OpenBlob(%s, %d, %d): %v", dg, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading blob %s: %v", dg, err)
	}
	return b
}

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

func testEntries(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if _, err := d.GetEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetEntry of a missing entry: %v, want ErrNotFound", err)
	}
	if err := d.DeleteEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteEntry of a missing entry: %v, want ErrNotFound", err)
	}
	for _, v := range [][]byte{[]byte("sha256:one"), []byte("sha256:two"), nil} {
		if err := d.PutEntry(c, "team/app", storage.Tags, "latest", v); err != nil {
			t.Fatalf("PutEntry: %v", err)
		}
		got, err := d.GetEntry(c, "team/app", storage.Tags, "latest")
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("GetEntry = %q, %v; want %q", got, err, v)
		}
	}
	if err := d.DeleteEntry(c, "team/app", storage.Tags, "latest"); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if _, err := d.GetEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetEntry after delete: %v, want ErrNotFound", err)
	}
}

func keys(es []storage.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func testEntryListing(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if es, err := d.ListEntries(c, "empty/repo", storage.Tags, "", -1); err != nil || len(es) != 0 {
		t.Fatalf("ListEntries of an empty table = %v, %v", es, err)
	}
	all := []string{"v1", "V2", "latest", "a-1", "a.1", "a_1", "_under", "1.0", "sha256-abc", "Z"}
	for _, k := range all {
		if err := d.PutEntry(c, "team/app", storage.Tags, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	sorted := slices.Clone(all)
	sort.Strings(sorted)
	for _, tc := range []struct {
		after string
		n     int
		want  []string
	}{
		{"", -1, sorted},
		{"", 3, sorted[:3]},
		{"", 0, nil},
		{sorted[2], 4, sorted[3:7]},
		{sorted[len(sorted)-1], -1, nil},
		{"b", -1, []string{"latest", "sha256-abc", "v1"}},
		{"", 100, sorted},
	} {
		es, err := d.ListEntries(c, "team/app", storage.Tags, tc.after, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(es); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("ListEntries(after %q, n %d) = %v, want %v", tc.after, tc.n, got, tc.want)
		}
		for _, e := range es {
			if time.Since(e.ModTime) > time.Hour {
				t.Errorf("entry %s has ModTime %s", e.Key, e.ModTime)
			}
		}
	}
	// Deleted keys never show up again.
	for _, k := range []string{"latest", "Z", "_under"} {
		if err := d.DeleteEntry(c, "team/app", storage.Tags, k); err != nil {
			t.Fatal(err)
		}
	}
	es, err := d.ListEntries(c, "team/app", storage.Tags, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(es) {
		if k == "latest" || k == "Z" || k == "_under" {
			t.Fatalf("ListEntries after delete still lists %q: %v", k, keys(es))
		}
	}
	if len(es) != len(all)-3 {
		t.Fatalf("ListEntries after delete = %v, want %d keys", keys(es), len(all)-3)
	}
}

func testEntryNamesValidated(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	for _, repo := range []string{"", "../escape", "a/../b", "Upper", "a//b", "/abs", "a/", "_hidden", "a/_b", "a b", strings.Repeat("a", 256)} {
		if err := d.PutEntry(c, repo, storage.Tags, "latest", nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry in repository %q: %v, want ErrInvalid", repo, err)
		}
		if _, err := d.NewUpload(c, repo, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("NewUpload for repository %q: %v, want ErrInvalid", repo, err)
		}
	}
	for _, key := range []string{"", ".hidden", "..", "a/b", "a\\b", "a\x00b", "tab\t", strings.Repeat("k", 256)} {
		if err := d.PutEntry(c, "team/app", storage.Tags, key, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry with key %q: %v, want ErrInvalid", key, err)
		}
	}
	for _, table := range []storage.Table{"", "tags/../x", "other", "referrers/sha256", "referrers/../x/y"} {
		if err := d.PutEntry(c, "team/app", table, "k", nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry in table %q: %v, want ErrInvalid", table, err)
		}
	}
	bad := digest.Digest("sha256:../../etc/passwd")
	if err := d.PutBlob(c, bad, 1, strings.NewReader("x")); err == nil {
		t.Errorf("PutBlob with digest %q succeeded", bad)
	}
}

func testEntryTablesIsolated(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	s1, s2 := digest.FromString("subject 1"), digest.FromString("subject 2")
	puts := []struct {
		repo  string
		table storage.Table
		key   string
	}{
		{"a", storage.Tags, "k"},
		{"a/b", storage.Tags, "k2"},
		{"a", storage.Manifests, "m"},
		{"a", storage.Blobs, "b"},
		{"a", storage.Referrers(s1), "r1"},
		{"a", storage.Referrers(s2), "r2"},
	}
	for _, p := range puts {
		if err := d.PutEntry(c, p.repo, p.table, p.key, []byte(p.repo+string(p.table))); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range puts {
		es, err := d.ListEntries(c, p.repo, p.table, "", -1)
		if err != nil || !slices.Equal(keys(es), []string{p.key}) {
			t.Errorf("ListEntries(%s, %s) = %v, %v; want [%s]", p.repo, p.table, keys(es), err, p.key)
		}
	}
}

func testRepositories(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if names, err := d.Repositories(c, "", -1); err != nil || len(names) != 0 {
		t.Fatalf("Repositories of an empty store = %v, %v", names, err)
	}
	withManifests := []string{"b", "a/b/c", "a", "a-c", "quay.io/org/img", "a/b"}
	for _, r := range withManifests {
		if err := d.PutEntry(c, r, storage.Manifests, "sha256:x", []byte("mt")); err != nil {
			t.Fatal(err)
		}
	}
	// Tags or blobs alone do not make a repository.
	if err := d.PutEntry(c, "only/tags", storage.Tags, "t", nil); err != nil {
		t.Fatal(err)
	}
	if err := d.PutEntry(c, "only/blobs", storage.Blobs, "sha256:y", nil); err != nil {
		t.Fatal(err)
	}
	sorted := slices.Clone(withManifests)
	sort.Strings(sorted)
	names, err := d.Repositories(c, "", -1)
	if err != nil || !slices.Equal(names, sorted) {
		t.Fatalf("Repositories = %v, %v; want %v", names, err, sorted)
	}
	names, err = d.Repositories(c, sorted[1], 2)
	if err != nil || !slices.Equal(names, sorted[2:4]) {
		t.Fatalf("Repositories(after %q, 2) = %v, %v; want %v", sorted[1], names, err, sorted[2:4])
	}
	if err := d.DeleteEntry(c, "a/b", storage.Manifests, "sha256:x"); err != nil {
		t.Fatal(err)
	}
	names, err = d.Repositories(c, "", -1)
	if err != nil || slices.Contains(names, "a/b") || !slices.Contains(names, "a/b/c") {
		t.Fatalf("Repositories after deleting a/b's last manifest = %v, %v", names, err)
	}
}

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

// testReplicas checks that a second driver over the same store sees
// everything the first wrote: an upload started on one replica is
// finished on the other.
func testReplicas(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	c := ctx(t)
	up, err := a.NewUpload(c, "team/app", []byte("s0"))
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, a, up.ID, 0, []byte("from A, "), "s1")
	got, err := b.GetUpload(c, up.ID)
	if err != nil || got.Size != 8 || string(got.State) != "s1" {
		t.Fatalf("replica B sees session %+v, %v", got, err)
	}
	appendAll(t, b, up.ID, 8, []byte("from B"), "s2")
	dg := digest.FromString("from A, from B")
	if err := a.CommitUpload(c, up.ID, 14, dg); err != nil {
		t.Fatalf("commit on replica A: %v", err)
	}
	if got := readBlob(t, b, dg, 0, -1); string(got) != "from A, from B" {
		t.Fatalf("replica B reads %q", got)
	}
	if err := a.PutEntry(c, "team/app", storage.Manifests, dg.String(), []byte("mt")); err != nil {
		t.Fatal(err)
	}
	if v, err := b.GetEntry(c, "team/app", storage.Manifests, dg.String()); err != nil || string(v) != "mt" {
		t.Fatalf("replica B reads entry %q, %v", v, err)
	}
	if names, err := b.Repositories(c, "", -1); err != nil || !slices.Equal(names, []string{"team/app"}) {
		t.Fatalf("replica B lists repositories %v, %v", names, err)
	}
	if err := b.DeleteEntry(c, "team/app", storage.Manifests, dg.String()); err != nil {
		t.Fatal(err)
	}
	if es, err := a.ListEntries(c, "team/app", storage.Manifests, "", -1); err != nil || len(es) != 0 {
		t.Fatalf("replica A lists %v, %v after replica B deleted the entry", keys(es), err)
	}
	if names, err := a.Repositories(c, "", -1); err != nil || len(names) != 0 {
		t.Fatalf("replica A lists repositories %v, %v after the last manifest was deleted", names, err)
	}
}

// cancelReader cancels a context after the first read.
type cancelReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func testCancelledContext(t *testing.T, open Opener) {
	d := open(t)
	content := randomBytes(t, 8<<20)
	dg := digest.FromBytes(content)
	c, cancel := context.WithCancel(t.Context())
	if err := d.PutBlob(c, dg, int64(len(content)), &cancelReader{bytes.NewReader(content), cancel}); err == nil {
		t.Fatal("PutBlob succeeded although its context was cancelled")
	}
	if _, err := d.StatBlob(t.Context(), dg); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("cancelled PutBlob left a blob: %v", err)
	}
	up, err := d.NewUpload(t.Context(), "team/app", []byte("s0"))
	if err != nil {
		t.Fatal(err)
	}
	c, cancel = context.WithCancel(t.Context())
	_, err = d.AppendUpload(c, up.ID, 0, int64(len(content)), &cancelReader{bytes.NewReader(content), cancel}, func(int64) ([]byte, error) { return []byte("s1"), nil })
	if err == nil {
		t.Fatal("AppendUpload succeeded although its context was cancelled")
	}
	if got, err := d.GetUpload(t.Context(), up.ID); err != nil || got.Size != 0 || string(got.State) != "s0" {
		t.Fatalf("cancelled AppendUpload changed the session: %+v, %v", got, err)
	}
	if _, err := d.GetUpload(ctxDone(), up.ID); err == nil {
		t.Fatal("GetUpload with a cancelled context succeeded")
	}
}

func ctxDone() context.Context {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	return c
}
