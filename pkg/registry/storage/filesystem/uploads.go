package filesystem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/atomicfile"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// Upload sessions: uploads/<id>/data and its session record.

// session is the JSON record of an upload session.
type session struct {
	Repository string    `json:"repository"`
	Size       int64     `json:"size"`
	State      []byte    `json:"state"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
}

func (d *Driver) uploadDir(id string) (string, error) {
	if !storage.ValidUploadID(id) {
		return "", fmt.Errorf("%w: %q", storage.ErrUploadUnknown, id)
	}
	return filepath.Join(d.root, "uploads", id), nil
}

// NewUpload implements storage.Driver. The session directory is built in
// tmp/ and renamed into uploads/, so a session appears whole or not at all.
func (d *Driver) NewUpload(ctx context.Context, repo string, state []byte) (storage.Upload, error) {
	if err := ctx.Err(); err != nil {
		return storage.Upload{}, err
	}
	if err := storage.ValidateRepository(repo); err != nil {
		return storage.Upload{}, err
	}
	id, err := storage.NewUploadID()
	if err != nil {
		return storage.Upload{}, fmt.Errorf("creating upload: %w", err)
	}
	now := time.Now().UTC()
	up := storage.Upload{ID: id, Repository: repo, State: state, Started: now, Updated: now}
	tmp, err := os.MkdirTemp(d.tmpDir(), "upload-*")
	if err != nil {
		return storage.Upload{}, noSpace(fmt.Errorf("creating upload: %w", err))
	}
	fail := func(err error) (storage.Upload, error) {
		os.RemoveAll(tmp)
		return storage.Upload{}, noSpace(fmt.Errorf("creating upload: %w", err))
	}
	data, err := os.OpenFile(filepath.Join(tmp, "data"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fail(err)
	}
	data.Close()
	// writeSession fsyncs tmp, which holds the data file's name too.
	if err := writeSession(filepath.Join(tmp, "session"), up); err != nil {
		return fail(err)
	}
	dir := filepath.Join(d.root, "uploads", id)
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	syncDir(filepath.Dir(dir))
	return up, nil
}

func writeSession(path string, up storage.Upload) error {
	b, err := json.Marshal(session{Repository: up.Repository, Size: up.Size, State: up.State, Started: up.Started, Updated: up.Updated})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

func (d *Driver) readSession(id, dir string) (storage.Upload, error) {
	b, err := os.ReadFile(filepath.Join(dir, "session"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return storage.Upload{}, fmt.Errorf("%w: %s", storage.ErrUploadUnknown, id)
		}
		return storage.Upload{}, fmt.Errorf("reading upload %s: %w", id, err)
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return storage.Upload{}, fmt.Errorf("reading upload %s: %w", id, err)
	}
	return storage.Upload{ID: id, Repository: s.Repository, Size: s.Size, State: s.State, Started: s.Started, Updated: s.Updated}, nil
}

// GetUpload implements storage.Driver.
func (d *Driver) GetUpload(ctx context.Context, id string) (storage.Upload, error) {
	if err := ctx.Err(); err != nil {
		return storage.Upload{}, err
	}
	dir, err := d.uploadDir(id)
	if err != nil {
		return storage.Upload{}, err
	}
	return d.readSession(id, dir)
}

// lockUpload opens the session's data file and takes an exclusive flock on
// it, then reads the session record. The caller closes the file, which
// releases the lock.
func (d *Driver) lockUpload(id string) (*os.File, storage.Upload, string, error) {
	dir, err := d.uploadDir(id)
	if err != nil {
		return nil, storage.Upload{}, "", err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, storage.Upload{}, "", fmt.Errorf("%w: %s", storage.ErrUploadUnknown, id)
		}
		return nil, storage.Upload{}, "", fmt.Errorf("opening upload %s: %w", id, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, storage.Upload{}, "", fmt.Errorf("locking upload %s: %w", id, err)
	}
	// The session may have been committed or aborted while we waited.
	up, err := d.readSession(id, dir)
	if err != nil {
		f.Close()
		return nil, storage.Upload{}, "", err
	}
	return f, up, dir, nil
}

// AppendUpload implements storage.Driver.
func (d *Driver) AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(size int64) ([]byte, error)) (storage.Upload, error) {
	if err := ctx.Err(); err != nil {
		return storage.Upload{}, err
	}
	f, up, dir, err := d.lockUpload(id)
	if err != nil {
		return storage.Upload{}, err
	}
	defer f.Close()
	if offset != up.Size {
		return up, fmt.Errorf("%w: upload %s holds %d bytes, chunk starts at %d", storage.ErrRangeInvalid, id, up.Size, offset)
	}
	// Cut off bytes a crashed or failed append left beyond the record.
	if err := f.Truncate(up.Size); err != nil {
		return up, fmt.Errorf("appending to upload %s: %w", id, err)
	}
	n, err := d.copy(ctx, f, up.Size, r)
	if err == nil && length >= 0 && n != length {
		err = fmt.Errorf("%w: chunk of %d bytes, expected %d", storage.ErrRangeInvalid, n, length)
	}
	if err == nil {
		err = f.Sync()
	}
	var st []byte
	if err == nil {
		st, err = state(up.Size + n)
	}
	if err == nil {
		next := up
		next.Size, next.State, next.Updated = up.Size+n, st, time.Now().UTC()
		if err = writeSession(filepath.Join(dir, "session"), next); err == nil {
			return next, nil
		}
	}
	_ = f.Truncate(up.Size)
	return up, noSpace(fmt.Errorf("appending to upload %s: %w", id, err))
}

// CommitUpload implements storage.Driver.
func (d *Driver) CommitUpload(ctx context.Context, id string, size int64, dg digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.blobPath(dg)
	if err != nil {
		return err
	}
	f, up, dir, err := d.lockUpload(id)
	if err != nil {
		return err
	}
	defer f.Close()
	if up.Size != size {
		return fmt.Errorf("%w: upload %s holds %d bytes, commit expects %d", storage.ErrRangeInvalid, id, up.Size, size)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("committing upload %s: %w", id, err)
	}
	if fi.Size() < size {
		return fmt.Errorf("committing upload %s: data holds %d bytes, session records %d", id, fi.Size(), size)
	}
	if fi.Size() > size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
	}
	if _, err := os.Stat(p); err != nil {
		// Appends fsynced the data; the rename makes it the blob.
		if err := d.renameInto(filepath.Join(dir, "data"), p); err != nil {
			return noSpace(fmt.Errorf("committing upload %s: %w", id, err))
		}
	}
	if err := d.removeUploadDir(dir); err != nil {
		return fmt.Errorf("committing upload %s: %w", id, err)
	}
	return nil
}

// removeUploadDir removes the session record first, so a waiter on the lock
// sees the session gone, then the rest.
func (d *Driver) removeUploadDir(dir string) error {
	if err := os.Remove(filepath.Join(dir, "session")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	syncDir(filepath.Dir(dir))
	return nil
}

// AbortUpload implements storage.Driver.
func (d *Driver) AbortUpload(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, _, dir, err := d.lockUpload(id)
	if err != nil {
		return err
	}
	defer f.Close()
	return d.removeUploadDir(dir)
}

// WalkUploads implements storage.Driver.
func (d *Driver) WalkUploads(ctx context.Context, fn func(storage.Upload) error) error {
	des, err := os.ReadDir(filepath.Join(d.root, "uploads"))
	if err != nil {
		return fmt.Errorf("listing uploads: %w", err)
	}
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir, err := d.uploadDir(de.Name())
		if err != nil {
			continue
		}
		up, err := d.readSession(de.Name(), dir)
		if err != nil {
			continue
		}
		if err := fn(up); err != nil {
			return err
		}
	}
	return nil
}
