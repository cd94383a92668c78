package swift

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// sessionRecord is the first record of an upload session, written once.
type sessionRecord struct {
	Repository string    `json:"repository"`
	State      []byte    `json:"state"`
	Started    time.Time `json:"started"`
}

// chunkRecord is the record of one chunk: bytes [Start, End) of the
// upload, the segments holding them, and the registry's state at End.
// Nonce tells the appender that wrote it from another that raced it.
type chunkRecord struct {
	Nonce    string    `json:"nonce"`
	Start    int64     `json:"start"`
	End      int64     `json:"end"`
	State    []byte    `json:"state"`
	Updated  time.Time `json:"updated"`
	Segments []segment `json:"segments"`
}

// chain is a session as its records tell it.
type chain struct {
	session sessionRecord
	chunks  []chunkRecord
}

func (c *chain) size() int64 {
	if len(c.chunks) == 0 {
		return 0
	}
	return c.chunks[len(c.chunks)-1].End
}

func (c *chain) upload(id string) storage.Upload {
	u := storage.Upload{ID: id, Repository: c.session.Repository, State: c.session.State,
		Started: c.session.Started, Updated: c.session.Started}
	if n := len(c.chunks); n > 0 {
		last := c.chunks[n-1]
		u.Size, u.State, u.Updated = last.End, last.State, last.Updated
	}
	return u
}

func (c *chain) segments() []segment {
	var segs []segment
	for _, ch := range c.chunks {
		segs = append(segs, ch.Segments...)
	}
	return segs
}

func uploadPrefix(id string) string { return "uploads/" + id + "/" }

func sessionKey(id string) string { return uploadPrefix(id) + "session" }

// chunkKey is the key of the record of the n-th chunk of session id
// (from 0).
func chunkKey(id string, n int) string {
	return fmt.Sprintf("%schunks/%08d", uploadPrefix(id), n)
}

// maxRecordSize bounds what is read of a record.
const maxRecordSize = 16 << 20

// readChain reads session id: its record, then the chunk records in order,
// each starting where the one before ended, until one is missing. Every
// read asks for the newest copy (X-Newest).
func (d *Driver) readChain(ctx context.Context, id string) (*chain, error) {
	if !storage.ValidUploadID(id) {
		return nil, fmt.Errorf("%w: %q", storage.ErrUploadUnknown, id)
	}
	b, _, err := d.getBytes(ctx, sessionKey(id), maxRecordSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", storage.ErrUploadUnknown, id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading upload %s: %w", id, err)
	}
	c := &chain{}
	if err := json.Unmarshal(b, &c.session); err != nil {
		return nil, fmt.Errorf("reading upload %s: %w", id, err)
	}
	for {
		rec, err := d.readChunk(ctx, id, len(c.chunks), c.size())
		if errors.Is(err, storage.ErrNotFound) {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
		c.chunks = append(c.chunks, *rec)
	}
}

// readChunk reads the n-th chunk record, which must start at off.
func (d *Driver) readChunk(ctx context.Context, id string, n int, off int64) (*chunkRecord, error) {
	b, _, err := d.getBytes(ctx, chunkKey(id, n), maxRecordSize)
	if err != nil {
		return nil, fmt.Errorf("reading chunk %d of upload %s: %w", n, id, err)
	}
	var rec chunkRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("reading chunk %d of upload %s: %w", n, id, err)
	}
	if rec.Start != off || rec.End < rec.Start {
		return nil, fmt.Errorf("reading chunk %d of upload %s: the record covers [%d, %d), expected a start at %d", n, id, rec.Start, rec.End, off)
	}
	return &rec, nil
}

// create writes a record that must not exist yet (If-None-Match: *). It
// reports false when the record exists.
func (d *Driver) create(ctx context.Context, key string, v any) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	resp, err := d.conn.do(ctx, req{method: http.MethodPut, key: key, body: bytes.NewReader(b),
		header: map[string]string{"If-None-Match": "*", "Content-Type": "application/json"}})
	if status(err) == http.StatusPreconditionFailed {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closeBody(resp)
	return true, nil
}

// NewUpload implements storage.Driver.
func (d *Driver) NewUpload(ctx context.Context, repo string, state []byte) (storage.Upload, error) {
	if err := storage.ValidateRepository(repo); err != nil {
		return storage.Upload{}, err
	}
	id, err := storage.NewUploadID()
	if err != nil {
		return storage.Upload{}, fmt.Errorf("creating upload: %w", err)
	}
	c := &chain{session: sessionRecord{Repository: repo, State: state, Started: time.Now().UTC()}}
	ok, err := d.create(ctx, sessionKey(id), c.session)
	if err != nil {
		return storage.Upload{}, fmt.Errorf("creating upload: %w", err)
	}
	if !ok {
		return storage.Upload{}, fmt.Errorf("creating upload: session %s exists", id)
	}
	return c.upload(id), nil
}

// GetUpload implements storage.Driver.
func (d *Driver) GetUpload(ctx context.Context, id string) (storage.Upload, error) {
	c, err := d.readChain(ctx, id)
	if err != nil {
		return storage.Upload{}, err
	}
	return c.upload(id), nil
}

// AppendUpload implements storage.Driver. The chunk goes into new segment
// objects; then its record is created as the next of the chain, on the
// condition that none exists there, and read back: of two appends at one
// offset, the one whose record stays wins, and the other deletes its
// segments.
func (d *Driver) AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(size int64) ([]byte, error)) (storage.Upload, error) {
	c, err := d.readChain(ctx, id)
	if err != nil {
		return storage.Upload{}, err
	}
	if offset != c.size() {
		return c.upload(id), fmt.Errorf("%w: upload %s holds %d bytes, chunk starts at %d", storage.ErrRangeInvalid, id, c.size(), offset)
	}
	if length >= 0 {
		r = &exactReader{r: r, size: length}
	}
	segs, total, err := d.writeSegments(ctx, id, offset, r)
	cleanup := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		d.deleteAll(cctx, segmentKeys(segs))
	}
	var st []byte
	if err == nil {
		st, err = state(offset + total)
	}
	if err != nil {
		cleanup()
		return c.upload(id), fmt.Errorf("appending to upload %s: %w", id, err)
	}
	n := len(c.chunks)
	rec := chunkRecord{Nonce: nonce(), Start: offset, End: offset + total, State: st, Updated: time.Now().UTC(), Segments: segs}
	created, err := d.create(ctx, chunkKey(id, n), rec)
	if err == nil && created {
		// If-None-Match is checked when a PUT starts: read the record
		// back, in case a racing append replaced it.
		var got *chunkRecord
		if got, err = d.readChunk(ctx, id, n, offset); err == nil {
			created = got.Nonce == rec.Nonce
		}
	}
	if err != nil {
		// The record may have been written with its answer lost: the
		// chain says which.
		got, rerr := d.readChunk(ctx, id, n, offset)
		switch {
		case rerr == nil && got.Nonce == rec.Nonce:
			created, err = true, nil
		case rerr == nil:
			cleanup()
			return c.upload(id), fmt.Errorf("%w: upload %s changed while the chunk at %d was stored", storage.ErrRangeInvalid, id, offset)
		default:
			// Unknown: the segments stay for the session's end (commit
			// or abort removes what no record names).
			return c.upload(id), fmt.Errorf("appending to upload %s: %w", id, err)
		}
	}
	if !created {
		cleanup()
		cur, rerr := d.readChain(ctx, id)
		if rerr != nil {
			return storage.Upload{}, rerr
		}
		return cur.upload(id), fmt.Errorf("%w: upload %s changed while the chunk at %d was stored", storage.ErrRangeInvalid, id, offset)
	}
	c.chunks = append(c.chunks, rec)
	return c.upload(id), nil
}

// CommitUpload implements storage.Driver. Small content is read back and
// written as one object; larger content becomes a static large object over
// the session's segments, which then belong to the blob: the group is
// marked committed, the session is checked to still exist (an abort
// racing the commit either sees the mark and keeps the segments, or has
// removed the session and the commit gives up), and the manifest is
// written. Then the session's records, and segments no record named, are
// removed.
func (d *Driver) CommitUpload(ctx context.Context, id string, size int64, dg digest.Digest) error {
	key, err := blobKey(dg)
	if err != nil {
		return err
	}
	c, err := d.readChain(ctx, id)
	if err != nil {
		return err
	}
	if c.size() != size {
		return fmt.Errorf("%w: upload %s holds %d bytes, commit expects %d", storage.ErrRangeInvalid, id, c.size(), size)
	}
	segs := c.segments()
	var off int64
	for _, s := range segs {
		if s.Offset != off {
			return fmt.Errorf("committing upload %s: segment at %d, expected %d", id, s.Offset, off)
		}
		off += s.Size
	}
	keep := map[string]bool{}
	_, err = d.head(ctx, key, false)
	switch {
	case err == nil:
		// The blob exists: only the session goes.
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("committing upload %s: %w", id, err)
	case size <= smallBlob:
		buf := make([]byte, 0, size)
		for _, s := range segs {
			b, _, err := d.getBytes(ctx, s.Key, s.Size+1)
			if err != nil || int64(len(b)) != s.Size {
				return fmt.Errorf("committing upload %s: reading segment %s: %d bytes, %v", id, s.Key, len(b), err)
			}
			buf = append(buf, b...)
		}
		if err := d.putBytes(ctx, key, buf, nil); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
	default:
		if err := d.putBytes(ctx, committedKey(id), []byte(dg.String()), nil); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
		if _, err := d.head(ctx, sessionKey(id), true); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				err = fmt.Errorf("%w: %s was cancelled during the commit", storage.ErrUploadUnknown, id)
				_ = d.deleteObject(ctx, committedKey(id))
			}
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
		if err := d.publish(ctx, key, dg, id, segs); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
		for _, s := range segs {
			keep[s.Key] = true
		}
		keep[committedKey(id)] = true
	}
	d.removeSession(ctx, id, c, keep)
	return nil
}

// removeSession deletes the session record first (the session is then
// gone for every replica), then its chunk records and the group's
// segments but those in keep.
func (d *Driver) removeSession(ctx context.Context, id string, c *chain, keep map[string]bool) {
	if err := d.deleteObject(ctx, sessionKey(id)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		d.log.Warn("removing an upload session failed", "upload", id, "error", err)
		return
	}
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	keys := map[string]bool{}
	for i, ch := range c.chunks {
		keys[chunkKey(id, i)] = true
		for _, s := range ch.Segments {
			keys[s.Key] = true
		}
	}
	for _, prefix := range []string{uploadPrefix(id), segmentPrefix(id)} {
		err := d.listAll(cctx, prefix, "", "", func(e entry) error {
			keys[e.Name] = true
			return nil
		})
		if err != nil {
			d.log.Warn("listing the objects of a removed upload failed", "upload", id, "error", err)
		}
	}
	var del []string
	for k := range keys {
		if !keep[k] {
			del = append(del, k)
		}
	}
	d.deleteAll(cctx, del)
}

// AbortUpload implements storage.Driver. After the session record is
// deleted, the segments are removed unless the group was marked committed
// by a commit racing this abort.
func (d *Driver) AbortUpload(ctx context.Context, id string) error {
	c, err := d.readChain(ctx, id)
	if err != nil {
		return err
	}
	if err := d.deleteObject(ctx, sessionKey(id)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: %s", storage.ErrUploadUnknown, id)
		}
		return fmt.Errorf("removing upload %s: %w", id, err)
	}
	keep := map[string]bool{}
	if _, err := d.head(ctx, committedKey(id), true); err == nil || !errors.Is(err, storage.ErrNotFound) {
		// Committed (or unknown): the blob may use the segments.
		for _, s := range c.segments() {
			keep[s.Key] = true
		}
		keep[committedKey(id)] = true
	}
	d.removeSession(ctx, id, c, keep)
	return nil
}

// WalkUploads implements storage.Driver. Sessions are found by a listing
// of uploads/, each confirmed by reading its records.
func (d *Driver) WalkUploads(ctx context.Context, fn func(storage.Upload) error) error {
	var ids []string
	err := d.listAll(ctx, "uploads/", "/", "", func(e entry) error {
		id := strings.TrimSuffix(strings.TrimPrefix(e.Subdir, "uploads/"), "/")
		if storage.ValidUploadID(id) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing uploads: %w", err)
	}
	for _, id := range ids {
		c, err := d.readChain(ctx, id)
		if errors.Is(err, storage.ErrUploadUnknown) {
			continue // removed meanwhile, or a stale listing
		}
		if err != nil {
			return err
		}
		if err := fn(c.upload(id)); err != nil {
			return err
		}
	}
	return nil
}

// group is what a listing shows of the objects of one upload or blob
// write.
type group struct {
	keys      []string
	newest    time.Time
	committed bool
	session   bool
}

// RemoveOrphans removes what failed or interrupted writes left in the
// container, when every object of the write is older than before:
// segments of groups that no session and no committed mark own, and
// records of sessions whose session record is gone. Each is confirmed by
// a read before it is removed (listings may lag). It returns the number
// of objects removed. The prune command calls it.
func (d *Driver) RemoveOrphans(ctx context.Context, before time.Time) (int, error) {
	groups := func(prefix string) (map[string]*group, error) {
		out := map[string]*group{}
		err := d.listAll(ctx, prefix, "", "", func(e entry) error {
			id, rest, ok := strings.Cut(strings.TrimPrefix(e.Name, prefix), "/")
			if !ok || !storage.ValidUploadID(id) {
				return nil
			}
			g := out[id]
			if g == nil {
				g = &group{}
				out[id] = g
			}
			g.keys = append(g.keys, e.Name)
			if t := e.modTime(); t.After(g.newest) {
				g.newest = t
			}
			switch rest {
			case "committed":
				g.committed = true
			case "session":
				g.session = true
			}
			return nil
		})
		return out, err
	}
	segs, err := groups("segments/")
	if err != nil {
		return 0, fmt.Errorf("listing segments: %w", err)
	}
	ups, err := groups("uploads/")
	if err != nil {
		return 0, fmt.Errorf("listing uploads: %w", err)
	}
	gone := func(key string) (bool, error) {
		_, err := d.head(ctx, key, true)
		if errors.Is(err, storage.ErrNotFound) {
			return true, nil
		}
		return false, err
	}
	removed := 0
	for id, g := range segs {
		if g.committed || !g.newest.Before(before) || (ups[id] != nil && ups[id].session) {
			continue
		}
		if ok, err := gone(committedKey(id)); err != nil || !ok {
			continue
		}
		if ok, err := gone(sessionKey(id)); err != nil || !ok {
			continue
		}
		d.deleteAll(ctx, g.keys)
		removed += len(g.keys)
	}
	for id, g := range ups {
		if g.session || !g.newest.Before(before) {
			continue
		}
		if ok, err := gone(sessionKey(id)); err != nil || !ok {
			continue
		}
		d.deleteAll(ctx, g.keys)
		removed += len(g.keys)
	}
	return removed, ctx.Err()
}
