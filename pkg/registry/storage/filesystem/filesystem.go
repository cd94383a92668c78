// Package filesystem is the storage.Driver that keeps a registry's data in a
// directory of a local filesystem.
//
// On-disk layout, under the root directory given to New:
//
//	blobs/<alg>/<hex[:2]>/<hex>          blob content (manifests included), immutable
//	repositories/<name>/_<table>/<key>   one entry of a repository: the file's content is its value
//	    _blobs/sha256:<hex>              (empty) the repository holds this blob
//	    _manifests/sha256:<hex>          the manifest's media type
//	    _tags/<tag>                      the tagged manifest's digest
//	    _referrers/<alg>/<hex>/<digest>  descriptor (JSON) of a manifest whose subject is <alg>:<hex>
//	uploads/<id>/data                    bytes received by an upload session
//	uploads/<id>/session                 the session record (JSON: repository, size, state, started, updated)
//	tmp/                                 files and directories being written
//
// Repository name components never start with "_", so a table directory
// cannot be mistaken for a nested repository. Every file and directory that
// appears under a final name was first written under tmp/, fsynced, then
// renamed into place, and the parent directory fsynced: a crash leaves
// either the old state or the new one, never a partial blob, manifest or
// session record. Empty entries (blob links) are the exception: they have
// no content to be partial, so they are created in place and their
// directory fsynced. Large content is written with direct I/O, past the
// page cache (see (*Driver).copy), and fsynced like the rest. Upload data
// is appended in place and fsynced before the session record that counts
// it is replaced; bytes beyond the recorded size (from a chunk interrupted
// by a crash) are cut off by the next append or commit. A commit renames
// the data file to its blob path. Concurrent requests on one session (from
// this process or another one on the same directory) are serialised with
// flock(2) on the session's data file.
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// Driver is a storage.Driver on a local directory.
type Driver struct {
	root       string
	bufferSize int
	direct     bool
	tmpMaxAge  time.Duration
	bufs       sync.Pool
}

var _ storage.Driver = (*Driver)(nil)

// Option configures a Driver.
type Option func(*Driver)

// WithBufferSize sets the size of the buffer used to copy uploads to disk
// (default 1 MiB; values are rounded up to a multiple of 4 KiB).
func WithBufferSize(n int) Option {
	return func(d *Driver) { d.bufferSize = max(n+directAlign-1, directAlign) &^ (directAlign - 1) }
}

// WithDirectIO sets whether large uploads are written with direct I/O
// (O_DIRECT, Linux; default true). See (*Driver).copy for why; a
// filesystem that does not support it is written through the page cache
// whatever this says.
func WithDirectIO(on bool) Option {
	return func(d *Driver) { d.direct = on && directSupported }
}

// WithTempMaxAge sets the age after which New removes leftovers in tmp/
// from a crashed process (default 1 hour). Other processes sharing the
// directory may be writing younger files there.
func WithTempMaxAge(age time.Duration) Option {
	return func(d *Driver) { d.tmpMaxAge = age }
}

// New returns a driver storing its data under root, creating the directory
// (mode 0700) when missing. It fails when root cannot be written.
func New(root string, opts ...Option) (*Driver, error) {
	if root == "" {
		return nil, errors.New("filesystem storage: root directory is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("filesystem storage: root %s: %w", root, err)
	}
	d := &Driver{root: abs, bufferSize: 1 << 20, direct: directSupported, tmpMaxAge: time.Hour}
	for _, o := range opts {
		o(d)
	}
	d.bufs.New = func() any { b := alignedBuffer(d.bufferSize); return &b }
	for _, dir := range []string{"blobs", "repositories", "uploads", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, dir), 0o700); err != nil {
			return nil, fmt.Errorf("filesystem storage: creating %s: %w", filepath.Join(abs, dir), err)
		}
	}
	probe, err := os.CreateTemp(d.tmpDir(), "probe-*")
	if err != nil {
		return nil, fmt.Errorf("filesystem storage: root %s is not writable: %w", abs, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	d.cleanTemp()
	return d, nil
}

// Root returns the driver's root directory.
func (d *Driver) Root() string { return d.root }

func (d *Driver) tmpDir() string { return filepath.Join(d.root, "tmp") }

// cleanTemp removes what crashed writers left in tmp/.
func (d *Driver) cleanTemp() {
	entries, err := os.ReadDir(d.tmpDir())
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-d.tmpMaxAge)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			os.RemoveAll(filepath.Join(d.tmpDir(), e.Name()))
		}
	}
}

// blobPath returns the path of blob dg, after validating the digest so that
// it cannot name anything outside blobs/.
func (d *Driver) blobPath(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("%w: digest %q: %v", storage.ErrInvalid, dg, err)
	}
	enc := dg.Encoded()
	if len(enc) < 2 {
		return "", fmt.Errorf("%w: digest %q", storage.ErrInvalid, dg)
	}
	return filepath.Join(d.root, "blobs", dg.Algorithm().String(), enc[:2], enc), nil
}

// StatBlob implements storage.Driver.
func (d *Driver) StatBlob(ctx context.Context, dg digest.Digest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p, err := d.blobPath(dg)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, notFound(err, "blob %s", dg)
	}
	return fi.Size(), nil
}

// OpenBlob implements storage.Driver.
func (d *Driver) OpenBlob(ctx context.Context, dg digest.Digest, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.blobPath(dg)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(err, "blob %s", dg)
	}
	if offset == 0 && length < 0 {
		return f, nil
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seeking blob %s: %w", dg, err)
	}
	if length < 0 {
		return f, nil
	}
	return &limitedFile{Reader: io.LimitReader(f, length), f: f}, nil
}

type limitedFile struct {
	io.Reader
	f *os.File
}

func (l *limitedFile) Close() error { return l.f.Close() }

// PutBlob implements storage.Driver.
func (d *Driver) PutBlob(ctx context.Context, dg digest.Digest, size int64, r io.Reader) error {
	p, err := d.blobPath(dg)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.tmpDir(), "blob-*")
	if err != nil {
		return noSpace(fmt.Errorf("writing blob %s: %w", dg, err))
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	n, err := d.copy(ctx, tmp, 0, r)
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("%w: blob %s: read %d bytes, expected %d", storage.ErrRangeInvalid, dg, n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return noSpace(fmt.Errorf("writing blob %s: %w", dg, err))
	}
	if err := d.renameInto(tmp.Name(), p); err != nil {
		return noSpace(fmt.Errorf("writing blob %s: %w", dg, err))
	}
	return nil
}

// DeleteBlob implements storage.Driver.
func (d *Driver) DeleteBlob(ctx context.Context, dg digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.blobPath(dg)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(err, "blob %s", dg)
	}
	syncDir(filepath.Dir(p))
	return nil
}

// WalkBlobs implements storage.Driver.
func (d *Driver) WalkBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	base := filepath.Join(d.root, "blobs")
	algs, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("listing blobs: %w", err)
	}
	for _, alg := range algs {
		prefixes, err := os.ReadDir(filepath.Join(base, alg.Name()))
		if err != nil {
			continue
		}
		for _, prefix := range prefixes {
			files, err := os.ReadDir(filepath.Join(base, alg.Name(), prefix.Name()))
			if err != nil {
				continue
			}
			for _, f := range files {
				if err := ctx.Err(); err != nil {
					return err
				}
				dg := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), f.Name())
				if dg.Validate() != nil {
					continue
				}
				info, err := f.Info()
				if err != nil {
					continue // removed meanwhile
				}
				if err := fn(storage.BlobInfo{Digest: dg, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// directAlign is the alignment of direct I/O: buffer address, file
// offset and length. 4 KiB covers the logical block size of every disk
// and the block size of the usual filesystems.
const directAlign = 4 << 10

// alignedBuffer returns n bytes starting at a directAlign boundary.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+n : off+n]
}

// copy writes r to f from offset on, with a pooled buffer, checking ctx
// between reads, and returns the number of bytes written.
//
// Large content (at least one whole buffer) is written with direct I/O
// where the filesystem supports it. Uploaded blobs are written once,
// fsynced, and mostly not read again by this process soon: pushing them
// through the page cache costs a copy into, and an allocation of, a page
// per 4 KiB, which is most of the registry's CPU when it receives layers
// (on a VM whose free memory goes back to the host, every new page of
// cache is a fault in the host too). Direct writes go from the buffer to
// the disk. Durability is unchanged: direct I/O does not make data or
// metadata durable by itself, so callers fsync as before; a blob is
// served from the disk (and then from the cache) when first read. The
// last partial block goes through the page cache: direct I/O needs
// aligned lengths.
func (d *Driver) copy(ctx context.Context, f *os.File, offset int64, r io.Reader) (int64, error) {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := *bp
	direct := false
	defer func() {
		if direct {
			_ = setDirect(f, false)
		}
	}()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := io.ReadFull(r, buf)
		if m == len(buf) && !direct && d.direct && (offset+n)%directAlign == 0 {
			direct = setDirect(f, true) == nil
		}
		chunk := buf[:m]
		if direct && m%directAlign != 0 {
			head := m &^ (directAlign - 1)
			if _, err := d.writeAt(f, chunk[:head], offset+n, &direct); err != nil {
				return n, err
			}
			n += int64(head)
			chunk = chunk[head:]
			if err := setDirect(f, false); err != nil {
				return n, err
			}
			direct = false
		}
		if len(chunk) > 0 {
			if _, err := d.writeAt(f, chunk, offset+n, &direct); err != nil {
				return n, err
			}
			n += int64(len(chunk))
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return n, nil
		default:
			return n, rerr
		}
	}
}

// writeAt writes p at off. A direct write the filesystem refuses (it
// accepted O_DIRECT but wants another alignment) is repeated through the
// page cache, and direct I/O is turned off for the rest of the copy.
func (d *Driver) writeAt(f *os.File, p []byte, off int64, direct *bool) (int, error) {
	w, err := f.WriteAt(p, off)
	if err != nil && *direct && w == 0 && directUnsupported(err) {
		if serr := setDirect(f, false); serr != nil {
			return 0, err
		}
		*direct = false
		return f.WriteAt(p, off)
	}
	return w, err
}

// writeFile writes data to path atomically: a temporary file in tmp/,
// fsynced, renamed into place.
func (d *Driver) writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(d.tmpDir(), "entry-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return d.renameInto(tmp.Name(), path)
}

// createEmpty makes path an empty file, in place, and fsyncs its
// directory. An empty entry (a repository's link to a blob: one per layer
// pushed or mounted) has no content that a crash could leave half
// written, so the temporary file, its fsync and the rename of writeFile
// buy nothing: after a crash the entry exists, empty, or does not. The
// directory's fsync makes the new name durable before the caller answers
// (the file's creation is one metadata transaction with it). A file that
// is there with content is replaced through writeFile, atomically. A
// concurrent removeEmptyDirs may delete the directory between its
// creation and the open: retry then, as renameInto does.
func (d *Driver) createEmpty(path string, _ []byte) error {
	dir := filepath.Dir(path)
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		var f *os.File
		if f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			fi, serr := f.Stat()
			if cerr := f.Close(); serr == nil {
				serr = cerr
			}
			switch {
			case serr != nil:
				return serr
			case fi.Size() > 0:
				return d.writeFile(path, nil)
			}
			syncDir(dir)
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// renameInto renames src to dst, creating dst's directory, and fsyncs that
// directory. A concurrent removeEmptyDirs may delete the directory between
// its creation and the rename: retry then.
func (d *Driver) renameInto(src, dst string) error {
	dir := filepath.Dir(dst)
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err = os.Rename(src, dst); err == nil {
			syncDir(dir)
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if _, serr := os.Stat(src); serr != nil {
			return err
		}
	}
	return err
}

// removeEmptyDirs removes dir and its parents up to (not including) stop
// while they are empty. A directory a writer recreates meanwhile is
// handled by renameInto's retry.
func (d *Driver) removeEmptyDirs(dir, stop string) {
	for dir != stop && strings.HasPrefix(dir, stop+string(filepath.Separator)) {
		if err := os.Remove(dir); err != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// syncDir fsyncs a directory so that renames and removals in it are
// durable. Errors are ignored: some filesystems refuse fsync on
// directories, and the operation itself has succeeded.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}

// notFound maps a missing file to storage.ErrNotFound.
func notFound(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// noSpace marks a failed write that ran out of space or quota with
// storage.ErrNoSpace, keeping the cause.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", storage.ErrNoSpace, err)
	}
	return err
}
