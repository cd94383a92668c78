// Package storage is the seam between imagegate's registry and the place its
// data lives: a small interface (Driver) that a filesystem, an S3 bucket or
// any other store implements, and the contract every driver must keep.
//
// The interface is shaped by what a registry behind a load balancer needs:
//
//   - Content is streamed: blobs go in as an io.Reader and come out as an
//     io.ReadCloser over a byte range; no driver holds a whole blob in memory.
//   - Upload sessions live in the store, not in a process. A session record
//     holds the bytes received so far and an opaque State the registry saves
//     with every chunk (the running digest state, serialised with
//     encoding.BinaryMarshaler), so a push started through one replica can
//     be finished through another. Every chunk (Driver.AppendUpload) is a
//     separate call with its offset and, when known, its length, so an
//     object store can map chunks onto multipart-upload parts.
//   - Repository metadata (which blobs and manifests a repository holds, its
//     tags, the referrers of a manifest) is a set of small entries in named
//     tables, written and deleted one key at a time. Listing a table is the
//     driver's job, and its result must not show deleted keys: a driver on a
//     store whose LIST lags behind deletes (some S3 implementations keep
//     deleted prefixes listed for minutes) must confirm each listed key
//     before returning it. The registry never relies on more than that.
//
// The registry, not the driver, verifies digests, checks ranges against the
// protocol and decides what is visible: a driver stores and returns bytes,
// keeps writes atomic (nothing partial is ever visible under a final name),
// and reports the sentinel errors of this package.
package storage

import (
	"context"
	// sha256 and sha512 are the digest algorithms of OCI content; go-digest
	// finds them through crypto's registry.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Driver stores the blobs, repository entries and upload sessions of a
// registry. Implementations must be safe for concurrent use, and must allow
// several Driver values (in one process or in several) over the same store.
// Every method takes a context as its first argument and must give up when
// it is cancelled.
type Driver interface {
	// StatBlob returns the size of blob d, or ErrNotFound.
	StatBlob(ctx context.Context, d digest.Digest) (int64, error)
	// OpenBlob returns a reader over length bytes of blob d starting at
	// offset; length -1 reads to the end. The caller checks the range
	// against StatBlob first. It returns ErrNotFound for a missing blob.
	OpenBlob(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, error)
	// PutBlob stores the content read from r as blob d. size is the
	// content length, or -1 when unknown. The blob becomes visible only
	// when r has returned io.EOF (after exactly size bytes, when size is
	// known) and the content is durable; any other read error leaves no
	// trace. The caller verifies the digest by making r fail before EOF
	// when the content does not match d. Storing a blob that exists is
	// not an error.
	PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error
	// DeleteBlob removes blob d, or returns ErrNotFound.
	DeleteBlob(ctx context.Context, d digest.Digest) error
	// WalkBlobs calls fn for every stored blob, in no particular order,
	// stopping at the first error fn returns.
	WalkBlobs(ctx context.Context, fn func(BlobInfo) error) error

	// PutEntry sets key in table of repository repo to value, replacing
	// any previous value, atomically.
	PutEntry(ctx context.Context, repo string, table Table, key string, value []byte) error
	// GetEntry returns the value of key, or ErrNotFound.
	GetEntry(ctx context.Context, repo string, table Table, key string) ([]byte, error)
	// DeleteEntry removes key, or returns ErrNotFound.
	DeleteEntry(ctx context.Context, repo string, table Table, key string) error
	// ListEntries returns up to n entries (all when n < 0) of table whose
	// keys sort after after ("" for the start), in ascending byte order;
	// none, and no error, for a table or repository that holds nothing.
	// It never returns a key that has been deleted, whatever the
	// consistency of the store's own listing.
	ListEntries(ctx context.Context, repo string, table Table, after string, n int) ([]Entry, error)
	// Repositories returns up to n names (all when n < 0) of repositories
	// holding at least one entry in the Manifests table, sorting after
	// after, in ascending byte order. Like ListEntries, it never returns a
	// repository whose last manifest has been deleted.
	Repositories(ctx context.Context, after string, n int) ([]string, error)

	// NewUpload creates an upload session for repo with an initial state
	// and returns it, Size 0, Started and Updated now.
	NewUpload(ctx context.Context, repo string, state []byte) (Upload, error)
	// GetUpload returns the session id, or ErrUploadUnknown.
	GetUpload(ctx context.Context, id string) (Upload, error)
	// AppendUpload appends the content of r at offset, which must equal
	// the session's Size (ErrRangeInvalid otherwise, with the session as
	// it is). length is the chunk's length, or -1 when unknown. When r
	// has been read to io.EOF, the driver calls state with the new size
	// and saves the returned state together with that size (and Updated,
	// now): a session never records bytes without the state that covers
	// them. A read
	// error, a state error or a cancelled context leaves the session as it
	// was.
	AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(size int64) ([]byte, error)) (Upload, error)
	// CommitUpload makes the session's content blob d and removes the
	// session. size must equal the session's Size (ErrRangeInvalid
	// otherwise), so that a chunk appended after the caller verified the
	// digest cannot slip in. The caller has verified that the content
	// hashes to d. Committing content that already exists as a blob only
	// removes the session.
	CommitUpload(ctx context.Context, id string, size int64, d digest.Digest) error
	// AbortUpload removes session id and its content. It returns
	// ErrUploadUnknown when there is no such session, including after a
	// commit.
	AbortUpload(ctx context.Context, id string) error
	// WalkUploads calls fn for every session, in no particular order,
	// stopping at the first error fn returns.
	WalkUploads(ctx context.Context, fn func(Upload) error) error
}

// ChunkMinLengther is implemented by drivers that need chunks of a minimum
// length (an S3 multipart part is at least 5 MiB, except the last). The
// registry advertises it to clients in the OCI-Chunk-Min-Length header.
type ChunkMinLengther interface {
	ChunkMinLength() int64
}

// BlobURLer is implemented by drivers whose store can serve a blob to
// clients itself, at a URL that grants access to that blob alone for a
// limited time (an S3 presigned URL). A registry told to redirect blob GETs
// sends clients there, after its own access and existence checks, so the
// bytes no longer flow through the registry.
type BlobURLer interface {
	// BlobURL returns an absolute URL at which a request with method (GET
	// or HEAD) reads blob d without other credentials, honouring Range.
	// It does not check that the blob exists. The URL is a bearer
	// capability until it expires: never log it.
	BlobURL(ctx context.Context, d digest.Digest, method string) (string, error)
}

// Table names a set of entries of a repository. Keys are tags or digests:
// non-empty, at most 255 bytes of [A-Za-z0-9_.:+=-], not starting with '.'.
type Table string

// The tables of a repository.
const (
	// Blobs lists the blobs the repository may serve: key a digest,
	// value empty.
	Blobs Table = "blobs"
	// Manifests lists the manifests of the repository: key a digest,
	// value the manifest's media type. The manifest's bytes are the blob
	// of that digest.
	Manifests Table = "manifests"
	// Tags maps tags to manifests: key a tag, value a digest.
	Tags Table = "tags"
	// UpstreamTags maps the tags a pull-through registry fetched from an
	// upstream registry to what it learned: key a tag, value a small JSON
	// record (the digest and when the upstream last confirmed it). Kept
	// apart from Tags, so that pushed (speculative) tags always win and
	// tag listings show only what was pushed.
	UpstreamTags Table = "upstream-tags"
)

// Referrers returns the table of the manifests whose subject is subject:
// key the referring manifest's digest, value its descriptor as JSON.
func Referrers(subject digest.Digest) Table {
	return Table("referrers/" + subject.Algorithm().String() + "/" + subject.Encoded())
}

// Entry is a key of a table and the time its value was last written.
type Entry struct {
	Key     string
	ModTime time.Time
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Upload is the record of an upload session.
type Upload struct {
	// ID identifies the session; it is random and unguessable.
	ID string
	// Repository is the repository the session was created for.
	Repository string
	// Size is the number of bytes received.
	Size int64
	// State is the registry's state at Size (opaque to the driver).
	State []byte
	// Started is when the session was created.
	Started time.Time
	// Updated is when the session last received a chunk (Started before
	// the first), so a long push in progress is not taken for an
	// abandoned one.
	Updated time.Time
}
