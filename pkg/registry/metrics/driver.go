package metrics

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// Driver returns a storage.Driver that forwards to d and counts every call
// and every failure of the store. Expected answers (not found, unknown
// upload, range or name refused) and calls ended by their context are not
// failures. The result also implements storage.ChunkMinLengther and
// storage.BlobURLer when d does, and only then.
func (m *Metrics) Driver(d storage.Driver) storage.Driver {
	md := &meteredDriver{d: d, m: m}
	c, chunks := d.(storage.ChunkMinLengther)
	u, urls := d.(storage.BlobURLer)
	mu := &meteredURLer{u: u, m: m}
	// One type per combination of the optional interfaces, so that a type
	// assertion on the result answers as it would on d.
	switch {
	case chunks && urls:
		return struct {
			*meteredDriver
			storage.ChunkMinLengther
			storage.BlobURLer
		}{md, c, mu}
	case chunks:
		return struct {
			*meteredDriver
			storage.ChunkMinLengther
		}{md, c}
	case urls:
		return struct {
			*meteredDriver
			storage.BlobURLer
		}{md, mu}
	}
	return md
}

type meteredDriver struct {
	d storage.Driver
	m *Metrics
}

// meteredURLer counts the blob URLs a driver signs (operation blob_url).
type meteredURLer struct {
	u storage.BlobURLer
	m *Metrics
}

func (mu *meteredURLer) BlobURL(ctx context.Context, d digest.Digest, method string) (string, error) {
	u, err := mu.u.BlobURL(ctx, d, method)
	mu.m.storageOp("blob_url", errorKind(err))
	return u, err
}

// errorKind classifies a storage error for the errors counter; "" means
// not a failure of the store.
func errorKind(err error) string {
	switch {
	case err == nil,
		errors.Is(err, storage.ErrNotFound),
		errors.Is(err, storage.ErrUploadUnknown),
		errors.Is(err, storage.ErrRangeInvalid),
		errors.Is(err, storage.ErrInvalid),
		errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, storage.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

func (md *meteredDriver) done(op string, err error) error {
	md.m.storageOp(op, errorKind(err))
	return err
}

// readerError separates the caller's reader failures (a digest mismatch,
// a client gone) from the store's: only the latter count.
type readerError struct {
	r   io.Reader
	err error
}

func (r *readerError) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func (md *meteredDriver) doneReading(op string, r *readerError, err error) error {
	if err != nil && r.err != nil && errors.Is(err, r.err) {
		md.m.storageOp(op, "")
		return err
	}
	return md.done(op, err)
}

func (md *meteredDriver) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	n, err := md.d.StatBlob(ctx, d)
	return n, md.done("stat_blob", err)
}

func (md *meteredDriver) OpenBlob(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, error) {
	rc, err := md.d.OpenBlob(ctx, d, offset, length)
	return rc, md.done("open_blob", err)
}

func (md *meteredDriver) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	re := &readerError{r: r}
	return md.doneReading("put_blob", re, md.d.PutBlob(ctx, d, size, re))
}

func (md *meteredDriver) DeleteBlob(ctx context.Context, d digest.Digest) error {
	return md.done("delete_blob", md.d.DeleteBlob(ctx, d))
}

func (md *meteredDriver) WalkBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	return md.done("walk_blobs", md.d.WalkBlobs(ctx, fn))
}

func (md *meteredDriver) PutEntry(ctx context.Context, repo string, table storage.Table, key string, value []byte) error {
	return md.done("put_entry", md.d.PutEntry(ctx, repo, table, key, value))
}

func (md *meteredDriver) GetEntry(ctx context.Context, repo string, table storage.Table, key string) ([]byte, error) {
	v, err := md.d.GetEntry(ctx, repo, table, key)
	return v, md.done("get_entry", err)
}

func (md *meteredDriver) DeleteEntry(ctx context.Context, repo string, table storage.Table, key string) error {
	return md.done("delete_entry", md.d.DeleteEntry(ctx, repo, table, key))
}

func (md *meteredDriver) ListEntries(ctx context.Context, repo string, table storage.Table, after string, n int) ([]storage.Entry, error) {
	es, err := md.d.ListEntries(ctx, repo, table, after, n)
	return es, md.done("list_entries", err)
}

func (md *meteredDriver) Repositories(ctx context.Context, after string, n int) ([]string, error) {
	names, err := md.d.Repositories(ctx, after, n)
	return names, md.done("repositories", err)
}

func (md *meteredDriver) NewUpload(ctx context.Context, repo string, state []byte) (storage.Upload, error) {
	up, err := md.d.NewUpload(ctx, repo, state)
	return up, md.done("new_upload", err)
}

func (md *meteredDriver) GetUpload(ctx context.Context, id string) (storage.Upload, error) {
	up, err := md.d.GetUpload(ctx, id)
	return up, md.done("get_upload", err)
}

func (md *meteredDriver) AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(size int64) ([]byte, error)) (storage.Upload, error) {
	re := &readerError{r: r}
	up, err := md.d.AppendUpload(ctx, id, offset, length, re, state)
	return up, md.doneReading("append_upload", re, err)
}

func (md *meteredDriver) CommitUpload(ctx context.Context, id string, size int64, d digest.Digest) error {
	return md.done("commit_upload", md.d.CommitUpload(ctx, id, size, d))
}

func (md *meteredDriver) AbortUpload(ctx context.Context, id string) error {
	return md.done("abort_upload", md.d.AbortUpload(ctx, id))
}

func (md *meteredDriver) WalkUploads(ctx context.Context, fn func(storage.Upload) error) error {
	return md.done("walk_uploads", md.d.WalkUploads(ctx, fn))
}
