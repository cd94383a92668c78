package swift

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// maxManifestSegments is Swift's default limit of segments in one SLO
// manifest (max_manifest_segments); more are grouped in nested manifests.
const maxManifestSegments = 1000

// blobKey returns the key of blob dg, after validating the digest so that
// it cannot name anything outside blobs/.
func blobKey(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("%w: digest %q: %v", storage.ErrInvalid, dg, err)
	}
	return "blobs/" + dg.Algorithm().String() + "/" + dg.Encoded(), nil
}

// StatBlob implements storage.Driver.
func (d *Driver) StatBlob(ctx context.Context, dg digest.Digest) (int64, error) {
	key, err := blobKey(dg)
	if err != nil {
		return 0, err
	}
	h, err := d.head(ctx, key, false)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", dg, err)
	}
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("blob %s: no Content-Length", dg)
	}
	return n, nil
}

// OpenBlob implements storage.Driver with a ranged GET (Swift serves
// ranges of static large objects too).
func (d *Driver) OpenBlob(ctx context.Context, dg digest.Digest, offset, length int64) (io.ReadCloser, error) {
	key, err := blobKey(dg)
	if err != nil {
		return nil, err
	}
	if length == 0 {
		if _, err := d.StatBlob(ctx, dg); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	r := req{method: http.MethodGet, key: key}
	switch {
	case offset == 0 && length < 0:
	case length < 0:
		r.header = map[string]string{"Range": fmt.Sprintf("bytes=%d-", offset)}
	default:
		r.header = map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)}
	}
	resp, err := d.conn.do(ctx, r)
	if status(err) == http.StatusRequestedRangeNotSatisfiable {
		// Reading from the end: nothing, if the blob exists.
		if _, err := d.StatBlob(ctx, dg); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", dg, err)
	}
	return resp.Body, nil
}

// PutBlob implements storage.Driver. A blob of known size up to the
// segment size streams to its key, the request completed only once r has
// returned io.EOF; anything else streams into segment objects, made the
// blob by an SLO manifest once r has returned io.EOF.
func (d *Driver) PutBlob(ctx context.Context, dg digest.Digest, size int64, r io.Reader) error {
	key, err := blobKey(dg)
	if err != nil {
		return err
	}
	if size >= 0 && size <= d.segmentSize {
		if _, err := d.putStream(ctx, key, &exactReader{r: r, size: size}); err != nil {
			return fmt.Errorf("writing blob %s: %w", dg, err)
		}
		return nil
	}
	if size >= 0 {
		r = &exactReader{r: r, size: size}
	}
	group, err := storage.NewUploadID()
	if err != nil {
		return err
	}
	segs, _, err := d.writeSegments(ctx, group, 0, r)
	if err == nil {
		err = d.publish(ctx, key, dg, group, segs)
	}
	if err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		d.deleteAll(cctx, segmentKeys(segs))
		return fmt.Errorf("writing blob %s: %w", dg, err)
	}
	return nil
}

// exactReader ends with io.EOF only after exactly size bytes.
type exactReader struct {
	r    io.Reader
	size int64
	n    int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	if e.n > e.size {
		return n, fmt.Errorf("%w: more than %d bytes", storage.ErrRangeInvalid, e.size)
	}
	if err == io.EOF && e.n != e.size {
		return n, fmt.Errorf("%w: read %d bytes, expected %d", storage.ErrRangeInvalid, e.n, e.size)
	}
	return n, err
}

// trackedReader remembers the error its reader returned, so that a request
// failing because of its body reports the body's error, not the
// transport's.
type trackedReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// putStream writes r to key with chunked transfer encoding: Swift stores
// the object only when the final chunk arrives, which is sent after r's
// io.EOF. It checks the ETag Swift computed against the MD5 of what was
// sent, and returns it with the size.
func (d *Driver) putStream(ctx context.Context, key string, r io.Reader) (segment, error) {
	tr := &trackedReader{r: r, h: md5.New()}
	resp, err := d.conn.do(ctx, req{method: http.MethodPut, key: key, body: tr, stream: true,
		header: map[string]string{"Content-Type": "application/octet-stream"}})
	if tr.err != nil {
		if err == nil {
			// Swift answered before the body ended (it should not):
			// the object may exist with part of the content.
			closeBody(resp)
			cctx, cancel := cleanupContext(ctx)
			defer cancel()
			_ = d.deleteObject(cctx, key)
		}
		return segment{}, tr.err
	}
	if err != nil {
		return segment{}, err
	}
	closeBody(resp)
	sum := hex.EncodeToString(tr.h.Sum(nil))
	if resp.StatusCode == http.StatusAccepted {
		// 202: the object servers hold a newer write of this key (a
		// concurrent PutBlob of the same digest won), so this one was not
		// stored and there is no ETag. Keys under blobs/ are digests:
		// the object stands if it has what was sent. Deleting here would
		// delete the other writer's blob.
		return d.acceptNewer(ctx, key, sum, tr.n)
	}
	if etag := strings.Trim(resp.Header.Get("Etag"), `"`); etag != sum {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		_ = d.deleteObject(cctx, key)
		return segment{}, fmt.Errorf("%w: object %s: Swift stored ETag %s, %d bytes sent with MD5 %s", storage.ErrUnavailable, key, etag, tr.n, sum)
	}
	return segment{Key: key, Size: tr.n, ETag: sum}, nil
}

// acceptNewer checks the newer write that superseded a PUT of key (Swift
// answered 202 Accepted): it must hold the size and, unless it is a large
// object whose ETag is its manifest's, the MD5 of what was sent.
func (d *Driver) acceptNewer(ctx context.Context, key, sum string, size int64) (segment, error) {
	h, err := d.head(ctx, key, true)
	if err != nil {
		return segment{}, fmt.Errorf("%w: object %s: Swift kept a newer write (202) that cannot be read: %v", storage.ErrUnavailable, key, err)
	}
	etag := strings.Trim(h.Get("Etag"), `"`)
	slo := strings.EqualFold(h.Get("X-Static-Large-Object"), "true")
	if h.Get("Content-Length") != strconv.FormatInt(size, 10) || (!slo && etag != sum) {
		return segment{}, fmt.Errorf("%w: object %s: Swift kept a newer write (202) with ETag %s and %s bytes, not the %d bytes sent with MD5 %s",
			storage.ErrUnavailable, key, etag, h.Get("Content-Length"), size, sum)
	}
	return segment{Key: key, Size: size, ETag: sum}, nil
}

// segment is one object holding content: bytes [Offset, Offset+Size) of
// an upload or blob.
type segment struct {
	Key    string `json:"key"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	ETag   string `json:"etag"`
}

func segmentKeys(segs []segment) []string {
	keys := make([]string, len(segs))
	for i, s := range segs {
		keys[i] = s.Key
	}
	return keys
}

func segmentPrefix(group string) string { return "segments/" + group + "/" }

func committedKey(group string) string { return segmentPrefix(group) + "committed" }

// writeSegments streams r into segment objects of group, each at most the
// segment size, numbered from offset start. It returns the segments
// written (also on an error, so the caller can delete them) and the bytes
// read.
func (d *Driver) writeSegments(ctx context.Context, group string, start int64, r io.Reader) ([]segment, int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var segs []segment
	off := start
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return segs, off - start, nil
		} else if err != nil {
			return segs, off - start, err
		}
		key := fmt.Sprintf("%s%016x-%s", segmentPrefix(group), off, nonce())
		seg, err := d.putStream(ctx, key, io.LimitReader(br, d.segmentSize))
		if err != nil {
			return segs, off - start, err
		}
		seg.Offset = off
		segs = append(segs, seg)
		off += seg.Size
	}
}

// sloEntry is one segment of an SLO manifest (Swift's format).
type sloEntry struct {
	Path      string `json:"path"`
	ETag      string `json:"etag,omitempty"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
}

// publish makes segments of group the blob at key: it records that the
// group belongs to a blob (so prune leaves it), then writes the SLO
// manifest, which Swift checks against every segment's ETag and size.
// More segments than a manifest may hold go into nested manifests.
func (d *Driver) publish(ctx context.Context, key string, dg digest.Digest, group string, segs []segment) error {
	if len(segs) == 0 {
		return d.putBytes(ctx, key, nil, nil)
	}
	if err := d.putBytes(ctx, committedKey(group), []byte(dg.String()), nil); err != nil {
		return fmt.Errorf("marking the segments committed: %w", err)
	}
	entries := make([]sloEntry, len(segs))
	for i, s := range segs {
		entries[i] = sloEntry{Path: "/" + d.container + "/" + s.Key, ETag: s.ETag, SizeBytes: s.Size}
	}
	for n := 0; len(entries) > maxManifestSegments; n++ {
		// Nested manifests of up to maxManifestSegments entries each.
		var next []sloEntry
		for i := 0; i < len(entries); i += maxManifestSegments {
			sub := fmt.Sprintf("%smanifest-%d-%d", segmentPrefix(group), n, i/maxManifestSegments)
			if err := d.putManifest(ctx, sub, entries[i:min(i+maxManifestSegments, len(entries))]); err != nil {
				return err
			}
			next = append(next, sloEntry{Path: "/" + d.container + "/" + sub})
		}
		entries = next
	}
	return d.putManifest(ctx, key, entries)
}

func (d *Driver) putManifest(ctx context.Context, key string, entries []sloEntry) error {
	b, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	resp, err := d.conn.do(ctx, req{method: http.MethodPut, key: key, query: url.Values{"multipart-manifest": {"put"}},
		body: bytes.NewReader(b), header: map[string]string{"Content-Type": "application/octet-stream"}})
	if err != nil {
		return fmt.Errorf("writing the manifest %s: %w", key, err)
	}
	closeBody(resp)
	return nil
}

// manifestSegments returns the objects an SLO manifest at key names,
// nested manifests included (their own segments too).
func (d *Driver) manifestSegments(ctx context.Context, key string, depth int) ([]string, error) {
	resp, err := d.conn.do(ctx, req{method: http.MethodGet, key: key, query: url.Values{"multipart-manifest": {"get"}}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var entries []struct {
		Name   string `json:"name"`
		SubSLO bool   `json:"sub_slo"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&entries); err != nil {
		return nil, fmt.Errorf("reading the manifest %s: %w", key, err)
	}
	prefix := "/" + d.container + "/"
	var keys []string
	for _, e := range entries {
		k, ok := strings.CutPrefix(e.Name, prefix)
		if !ok {
			continue
		}
		keys = append(keys, k)
		if e.SubSLO && depth < 10 {
			sub, err := d.manifestSegments(ctx, k, depth+1)
			if err != nil {
				return nil, err
			}
			keys = append(keys, sub...)
		}
	}
	return keys, nil
}

// DeleteBlob implements storage.Driver. Deleting a static large object
// deletes its manifest first (the blob is gone), then its segments and
// the group's committed marker.
func (d *Driver) DeleteBlob(ctx context.Context, dg digest.Digest) error {
	key, err := blobKey(dg)
	if err != nil {
		return err
	}
	h, err := d.head(ctx, key, false)
	if err != nil {
		return fmt.Errorf("blob %s: %w", dg, err)
	}
	var segs []string
	if strings.EqualFold(h.Get("X-Static-Large-Object"), "true") {
		if segs, err = d.manifestSegments(ctx, key, 0); err != nil {
			return fmt.Errorf("deleting blob %s: %w", dg, err)
		}
	}
	if err := d.deleteObject(ctx, key); err != nil {
		return fmt.Errorf("deleting blob %s: %w", dg, err)
	}
	groups := map[string]bool{}
	for _, s := range segs {
		if g, _, ok := strings.Cut(strings.TrimPrefix(s, "segments/"), "/"); ok && strings.HasPrefix(s, "segments/") {
			groups[g] = true
		}
	}
	for g := range groups {
		segs = append(segs, committedKey(g))
	}
	d.deleteAll(ctx, segs)
	return nil
}

// WalkBlobs implements storage.Driver. Listed blobs are not confirmed: on
// a listing that lags behind deletes, fn may see a blob that was just
// deleted, and a DeleteBlob of it reports ErrNotFound. The listing shows a
// static large object's content size (the SLO middleware records it).
func (d *Driver) WalkBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	err := d.listAll(ctx, "blobs/", "", "", func(e entry) error {
		alg, enc, ok := strings.Cut(strings.TrimPrefix(e.Name, "blobs/"), "/")
		if !ok {
			return nil
		}
		dg := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		if dg.Validate() != nil {
			return nil
		}
		return fn(storage.BlobInfo{Digest: dg, Size: e.Bytes, ModTime: e.modTime()})
	})
	if err != nil && (errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotFound) || status(err) != 0) {
		return fmt.Errorf("listing blobs: %w", err)
	}
	return err
}
