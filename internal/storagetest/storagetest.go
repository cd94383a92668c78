// Package storagetest is the conformance suite of storage drivers: every
// storage.Driver runs Run in its tests, so the registry can rely on the
// contract written in package storage whatever the store.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"testing"

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
