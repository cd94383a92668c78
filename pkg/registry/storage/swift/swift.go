// Package swift is the storage.Driver that keeps a registry's data in a
// container of OpenStack Swift, so several stateless registry replicas can
// serve one container, as zuul-registry does on Swift.
//
// It authenticates with gophercloud (auth.go): Keystone v3 with a password
// or an application credential, from a clouds.yaml cloud (as zuul-registry
// and the OpenStack clients take it) or from the OS_* environment
// variables, or Swift's own v1 auth (tempauth, swauth). Object requests are
// the driver's own (request.go), over the token and storage URL gophercloud
// keeps fresh, because they stream: a request whose body is a stream is
// never sent twice.
//
// Object layout in the container:
//
//	blobs/<alg>/<hex>                     blob: a plain object, or a static large object (SLO) over segments
//	repositories/<name>/_<table>/<key>    one entry of a repository: the object's body is its value
//	catalog/<name>/_                      marker: the repository holds (or held) a manifest
//	uploads/<id>/session                  upload session: repository, start, initial state (immutable)
//	uploads/<id>/chunks/<n>               the n-th chunk: its offsets, segments, the state after it (immutable)
//	segments/<id>/<offset>-<nonce>        content of an upload, or of a large blob written at once
//	segments/<id>/committed               marker: these segments belong to a blob (written before its manifest)
//	probe/<random>                        written and deleted by New to check write access
//
// # Atomic writes
//
// Nothing partial is ever visible under a final name. A blob of known size
// up to the segment size is streamed to its key with chunked transfer
// encoding, and the final (empty) chunk is sent only once the content has
// been read to its end, and so verified by the registry: an error before
// that cuts the connection, and Swift discards an object whose body did not
// end. Larger blobs, blobs of unknown size and uploads are written as
// segment objects, and become a blob only when the SLO manifest naming them
// is written, after the whole content was received.
//
// # Upload sessions
//
// Swift has no compare-and-swap (no If-Match on PUT), so a session is not
// one record replaced in place, as on S3, but a chain of immutable records:
// the session record, then one record per chunk, numbered, each starting
// where the one before ended, created with If-None-Match: *. The session's
// size and state are those of the last record of the chain, read with
// X-Newest; an append at the wrong offset is refused, and two appends at
// the right one race for the same record. Two appends racing at one offset are told apart by
// If-None-Match and by reading the record back: the loser deletes its
// segments. (Swift checks If-None-Match when a PUT starts, not when it
// ends, so two PUTs in flight at the very same moment can both succeed,
// the later one replacing the earlier: the chain then holds the later
// chunk with its own state, and the registry's digest check at commit
// refuses the other client's content. Content and state never disagree.)
//
// # Listings
//
// Swift updates container listings asynchronously when a container server
// is busy or unreachable (the object is stored, its listing entry follows).
// So listings are not trusted alone, as on S3: every key ListEntries
// returns is confirmed with a HEAD request, and Repositories confirms each
// catalog marker against the repository's manifests, unless
// Config.ConsistentListing says the cluster's listings are exact.
package swift

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// DefaultSegmentSize is the largest segment object the driver writes
// unless Config.SegmentSize says otherwise: a blob up to this size is one
// object. Segments are streamed, never buffered, so the size costs no
// memory; it bounds what an interrupted write loses.
const DefaultSegmentSize = 1 << 30

// MaxSegmentSize is Swift's default largest object (max_file_size).
const MaxSegmentSize = 5 << 30

// MinSegmentSize is the smallest segment size accepted.
const MinSegmentSize = 1 << 20

// DefaultURLExpiry is how long a temp URL of BlobURL is valid unless
// Config.URLExpiry says otherwise.
const DefaultURLExpiry = 20 * time.Minute

// MaxURLExpiry is the longest validity accepted for a temp URL.
const MaxURLExpiry = 7 * 24 * time.Hour

// smallBlob is the size under which a committed upload is copied into a
// plain object (read back and written once) rather than made an SLO.
const smallBlob = 8 << 20

// Config says which container to use and how to reach it.
type Config struct {
	// Container is the container's name (required). It is created,
	// private, when missing.
	Container string
	// Auth says how to authenticate (see Auth).
	Auth Auth
	// CAFile is a PEM file of CAs to trust for Swift and Keystone, in
	// addition to the system's (and to a clouds.yaml cacert).
	CAFile string
	// SegmentSize is the largest segment object written (default
	// DefaultSegmentSize, between MinSegmentSize and MaxSegmentSize).
	SegmentSize int64
	// ConsistentListing trusts the cluster's container listings to drop
	// deleted objects at once, so listed entries are not confirmed one by
	// one with HEAD requests.
	ConsistentListing bool
	// TempURLKey signs the temp URLs of BlobURL. When empty, the
	// container's key (X-Container-Meta-Temp-URL-Key, -Key-2), else the
	// account's, is used; when set and found on neither, it is set as the
	// container's key. Only needed for blob redirects (Redirect).
	TempURLKey string
	// Redirect prepares BlobURL: New finds or sets the temp URL key and
	// fails when there is none.
	Redirect bool
	// URLExpiry is how long the temp URLs of BlobURL are valid (default
	// DefaultURLExpiry, at most MaxURLExpiry).
	URLExpiry time.Duration
}

// Driver is a storage.Driver on a Swift container.
type Driver struct {
	conn        *conn
	container   string
	segmentSize int64
	log         *slog.Logger
	parallel    int
	transport   http.RoundTripper
	trustList   bool
	urlKey      string
	urlExpiry   time.Duration
	getenv      func(string) string
}

var (
	_ storage.Driver    = (*Driver)(nil)
	_ storage.BlobURLer = (*Driver)(nil)
)

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets the logger for warnings about cleanups that failed (the
// operation itself succeeded). Default: discard.
func WithLogger(l *slog.Logger) Option { return func(d *Driver) { d.log = l } }

// WithParallelism sets how many requests one operation sends at once when
// it confirms listings or removes objects (default 16).
func WithParallelism(n int) Option { return func(d *Driver) { d.parallel = max(n, 1) } }

// WithTransport sets the HTTP transport for Swift and Keystone (tests:
// fault injection). Default: a transport trusting the system CAs,
// Config.CAFile and a clouds.yaml cacert.
func WithTransport(rt http.RoundTripper) Option { return func(d *Driver) { d.transport = rt } }

// WithGetenv sets how environment variables (OS_*, ST_*) are read.
// Default: os.Getenv.
func WithGetenv(getenv func(string) string) Option { return func(d *Driver) { d.getenv = getenv } }

// New authenticates, creates the container (private) when it does not
// exist, and checks that the credentials can list it and write and delete
// an object in it. With cfg.Redirect it finds or sets the temp URL key.
// The errors name the setting or the cause to fix; they never carry a
// credential.
func New(ctx context.Context, cfg Config, opts ...Option) (*Driver, error) {
	if cfg.Container == "" {
		return nil, errors.New("swift storage: container is not set")
	}
	if strings.Contains(cfg.Container, "/") || len(cfg.Container) > 256 {
		return nil, fmt.Errorf("swift storage: container %q: at most 256 bytes, no slash", cfg.Container)
	}
	if cfg.SegmentSize == 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.SegmentSize < MinSegmentSize || cfg.SegmentSize > MaxSegmentSize {
		return nil, fmt.Errorf("swift storage: segment size %d is outside [%d, %d] (1 MiB to 5 GiB)", cfg.SegmentSize, MinSegmentSize, int64(MaxSegmentSize))
	}
	if cfg.URLExpiry == 0 {
		cfg.URLExpiry = DefaultURLExpiry
	}
	if cfg.URLExpiry < time.Second || cfg.URLExpiry > MaxURLExpiry {
		return nil, fmt.Errorf("swift storage: URL expiry %s is outside [1s, %s]", cfg.URLExpiry, MaxURLExpiry)
	}
	d := &Driver{container: cfg.Container, segmentSize: cfg.SegmentSize, parallel: 16, trustList: cfg.ConsistentListing,
		urlExpiry: cfg.URLExpiry}
	for _, o := range opts {
		o(d)
	}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if d.conn, err = d.connect(ctx, cfg); err != nil {
		return nil, err
	}
	if err := d.prepare(ctx); err != nil {
		return nil, err
	}
	if cfg.Redirect {
		if d.urlKey, err = d.tempURLKey(ctx, cfg.TempURLKey); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// prepare creates the container when missing and probes the credentials.
func (d *Driver) prepare(ctx context.Context) error {
	where := fmt.Sprintf("container %q at %s", d.container, d.conn.redactedURL())
	explain := func(op string, err error) error {
		var se *statusError
		switch {
		case errors.As(err, &se) && (se.status == http.StatusUnauthorized || se.status == http.StatusForbidden):
			return fmt.Errorf("swift storage: %s: %s refused (%d): the credentials have no write access to the container: check its ACLs and the user's roles", where, op, se.status)
		case errors.Is(err, storage.ErrUnavailable):
			return fmt.Errorf("swift storage: %s: %s: Swift is unreachable or failing: %w", where, op, err)
		}
		return fmt.Errorf("swift storage: %s: %s: %w", where, op, err)
	}
	resp, err := d.conn.do(ctx, req{method: http.MethodHead, key: "", container: true})
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// Private: no X-Container-Read, so only the account's users (and
		// temp URLs) read it.
		if _, err := d.conn.do(ctx, req{method: http.MethodPut, container: true, ok: []int{201, 202}}); err != nil {
			return explain("creating the container", err)
		}
		d.log.Info("created the container (private)", "container", d.container)
	case err != nil:
		return explain("HEAD", err)
	default:
		resp.Body.Close()
	}
	if _, err := d.list(ctx, listing{prefix: "probe/", limit: 1}); err != nil {
		return explain("listing", err)
	}
	key := "probe/" + nonce()
	if err := d.putBytes(ctx, key, []byte("probe"), nil); err != nil {
		return explain("writing an object", err)
	}
	if err := d.deleteObject(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return explain("deleting an object", err)
	}
	return nil
}

// Container returns the container's name.
func (d *Driver) Container() string { return d.container }

// StorageURL returns the account's storage URL.
func (d *Driver) StorageURL() string { return d.conn.storageURL() }

// nonce returns 64 random bits, hex-encoded.
func nonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cleanupContext returns a context for cleanups after a failure: not
// cancelled with the request's, but bounded.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}
