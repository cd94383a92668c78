package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// session is the JSON record of an upload session.
type session struct {
	Repository string    `json:"repository"`
	Size       int64     `json:"size"`
	State      []byte    `json:"state"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
	Segments   []segment `json:"segments"`
}

// segment is one object holding content of a session: bytes [Offset,
// Offset+Size) of the upload.
type segment struct {
	Key    string `json:"key"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

func (s *session) upload(id string) storage.Upload {
	return storage.Upload{ID: id, Repository: s.Repository, Size: s.Size, State: s.State, Started: s.Started, Updated: s.Updated}
}

// tail returns the index of the first of the trailing segments smaller
// than MinPartSize: those are merged into the next full segment or part.
func (s *session) tail() int {
	i := len(s.Segments)
	for i > 0 && s.Segments[i-1].Size < MinPartSize {
		i--
	}
	return i
}

func (d *Driver) sessionKey(id string) string { return d.key("uploads/" + id + "/session") }

func (d *Driver) segmentPrefix(id string) string { return d.key("uploads/" + id + "/segments/") }

// readSession returns session id and the ETag of its record.
func (d *Driver) readSession(ctx context.Context, id string) (*session, string, error) {
	if !storage.ValidUploadID(id) {
		return nil, "", fmt.Errorf("%w: %q", storage.ErrUploadUnknown, id)
	}
	key := d.sessionKey(id)
	out, err := d.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &key})
	if err != nil {
		if isNotFound(err) {
			return nil, "", fmt.Errorf("%w: %s", storage.ErrUploadUnknown, id)
		}
		return nil, "", wrap(err, "reading upload %s", id)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 16<<20))
	if err != nil {
		return nil, "", wrap(err, "reading upload %s", id)
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("reading upload %s: %w", id, err)
	}
	return &s, aws.ToString(out.ETag), nil
}

// writeSession writes the record of session id: created when etag is "",
// replaced only if its ETag is still etag otherwise. It reports false when
// another writer got there first.
func (d *Driver) writeSession(ctx context.Context, id string, s *session, etag string) (bool, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	key := d.sessionKey(id)
	in := &s3.PutObjectInput{Bucket: &d.bucket, Key: &key, Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b)))}
	if etag == "" {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = aws.String(etag)
	}
	if _, err := d.client.PutObject(ctx, in); err != nil {
		if isPreconditionFailed(err) {
			return false, nil
		}
		return false, wrap(err, "writing upload %s", id)
	}
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
	now := time.Now().UTC()
	s := &session{Repository: repo, State: state, Started: now, Updated: now}
	ok, err := d.writeSession(ctx, id, s, "")
	if err != nil {
		return storage.Upload{}, fmt.Errorf("creating upload: %w", err)
	}
	if !ok {
		return storage.Upload{}, fmt.Errorf("creating upload: session %s exists", id)
	}
	return s.upload(id), nil
}

// GetUpload implements storage.Driver.
func (d *Driver) GetUpload(ctx context.Context, id string) (storage.Upload, error) {
	s, _, err := d.readSession(ctx, id)
	if err != nil {
		return storage.Upload{}, err
	}
	return s.upload(id), nil
}

// AppendUpload implements storage.Driver. The chunk goes into new segment
// objects; the session record is then replaced on the condition that
// nobody replaced it meanwhile. Trailing small segments are merged into the
// chunk's first segment unless the chunk is known to stay small.
func (d *Driver) AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(size int64) ([]byte, error)) (storage.Upload, error) {
	s, etag, err := d.readSession(ctx, id)
	if err != nil {
		return storage.Upload{}, err
	}
	if offset != s.Size {
		return s.upload(id), fmt.Errorf("%w: upload %s holds %d bytes, chunk starts at %d", storage.ErrRangeInvalid, id, s.Size, offset)
	}
	keep := len(s.Segments)
	var tail []segment
	tailStart := offset
	if t := s.tail(); t < keep {
		tailSize := s.Size - s.Segments[t].Offset
		if length < 0 || tailSize+length >= MinPartSize {
			keep, tail, tailStart = t, s.Segments[t:], s.Segments[t].Offset
		}
	}
	var head func([]byte) (int, error)
	if len(tail) > 0 {
		head = func(buf []byte) (int, error) { return d.readSegments(ctx, tail, buf) }
	}
	prefix := d.segmentPrefix(id)
	tag := nonce()
	var mu sync.Mutex
	var written []segment
	cleanup := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		d.deleteSegments(cctx, written)
	}
	total, _, err := d.streamParts(ctx, head, r, func(ctx context.Context, i int, data []byte) error {
		seg := segment{Offset: tailStart + int64(i-1)*d.partSize, Size: int64(len(data))}
		seg.Key = fmt.Sprintf("%s%016x-%s", prefix, seg.Offset, tag)
		mu.Lock()
		written = append(written, seg)
		mu.Unlock()
		if err := d.putObject(ctx, seg.Key, data); err != nil {
			return wrap(err, "storing a segment")
		}
		return nil
	})
	if err == nil && length >= 0 && total != length {
		err = fmt.Errorf("%w: chunk of %d bytes, expected %d", storage.ErrRangeInvalid, total, length)
	}
	if err == nil && keep+len(written) > maxParts {
		err = fmt.Errorf("upload %s would exceed %d parts of %d bytes", id, maxParts, d.partSize)
	}
	var st []byte
	if err == nil {
		st, err = state(s.Size + total)
	}
	if err != nil {
		cleanup()
		return s.upload(id), fmt.Errorf("appending to upload %s: %w", id, err)
	}
	slices.SortFunc(written, func(a, b segment) int { return int(a.Offset - b.Offset) })
	next := *s
	next.Size, next.State, next.Updated = s.Size+total, st, time.Now().UTC()
	next.Segments = append(slices.Clone(s.Segments[:keep]), written...)
	ok, err := d.writeSession(ctx, id, &next, etag)
	if err != nil {
		// The write may have been applied with its answer lost: the
		// record says which.
		cur, _, rerr := d.readSession(ctx, id)
		switch {
		case rerr == nil && holds(cur, written):
			ok, err = true, nil
		case rerr == nil:
			cleanup()
			return cur.upload(id), fmt.Errorf("appending to upload %s: %w", id, err)
		default:
			// Unknown: leave the segments to prune's orphan removal.
			return s.upload(id), fmt.Errorf("appending to upload %s: %w", id, err)
		}
	}
	if !ok {
		cleanup()
		cur, _, rerr := d.readSession(ctx, id)
		if rerr != nil {
			return storage.Upload{}, rerr
		}
		return cur.upload(id), fmt.Errorf("%w: upload %s changed while the chunk at %d was stored", storage.ErrRangeInvalid, id, offset)
	}
	if len(tail) > 0 {
		cctx, cancel := cleanupContext(ctx)
		d.deleteSegments(cctx, tail)
		cancel()
	}
	return next.upload(id), nil
}

// holds reports whether session s records every one of segs.
func holds(s *session, segs []segment) bool {
	keys := map[string]bool{}
	for _, sg := range s.Segments {
		keys[sg.Key] = true
	}
	for _, sg := range segs {
		if !keys[sg.Key] {
			return false
		}
	}
	return len(segs) > 0
}

// readSegments reads segments (small ones: they fit buf) into buf.
func (d *Driver) readSegments(ctx context.Context, segs []segment, buf []byte) (int, error) {
	n := 0
	for _, sg := range segs {
		if int64(n)+sg.Size > int64(len(buf)) {
			return n, fmt.Errorf("segments exceed the part size")
		}
		out, err := d.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: aws.String(sg.Key)})
		if err != nil {
			return n, wrap(err, "reading a segment")
		}
		m, err := io.ReadFull(out.Body, buf[n:n+int(sg.Size)])
		out.Body.Close()
		if err != nil {
			return n, wrap(err, "reading a segment: %d of %d bytes", m, sg.Size)
		}
		n += m
	}
	return n, nil
}

// deleteSegments removes segment objects, logging failures: prune removes
// what is left.
func (d *Driver) deleteSegments(ctx context.Context, segs []segment) {
	_ = storage.ForEach(ctx, d.parallel, segs, func(ctx context.Context, _ int, sg segment) error {
		if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: aws.String(sg.Key)}); err != nil {
			d.log.Warn("deleting an upload segment failed", "key", sg.Key, "error", err)
		}
		return nil
	})
}

// CommitUpload implements storage.Driver: the blob is assembled from the
// segments on the store's side, then the session is removed.
func (d *Driver) CommitUpload(ctx context.Context, id string, size int64, dg digest.Digest) error {
	key, err := d.blobKey(dg)
	if err != nil {
		return err
	}
	s, _, err := d.readSession(ctx, id)
	if err != nil {
		return err
	}
	if s.Size != size {
		return fmt.Errorf("%w: upload %s holds %d bytes, commit expects %d", storage.ErrRangeInvalid, id, s.Size, size)
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("committing upload %s: %w", id, err)
	}
	_, err = d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &key})
	switch {
	case isNotFound(err):
		if err := d.assemble(ctx, key, s); err != nil {
			return fmt.Errorf("committing upload %s: %w", id, err)
		}
	case err != nil:
		return wrap(err, "committing upload %s", id)
	}
	return d.removeSession(ctx, id)
}

// check verifies that the segments cover the session's bytes, in order.
func (s *session) check() error {
	var off int64
	for _, sg := range s.Segments {
		if sg.Offset != off {
			return fmt.Errorf("%w: segment at %d, expected %d", errShortSession, sg.Offset, off)
		}
		off += sg.Size
	}
	if off != s.Size {
		return fmt.Errorf("%w: %d bytes in segments, %d recorded", errShortSession, off, s.Size)
	}
	return nil
}

// assemble writes the session's content as the object key: a copy of a
// single segment, a PUT of small content, or a multipart upload of copied
// segments and a last part merged from the small trailing ones.
func (d *Driver) assemble(ctx context.Context, key string, s *session) error {
	segs := s.Segments
	t := s.tail()
	switch {
	case len(segs) == 0:
		return wrapNil(d.putObject(ctx, key, nil), "writing an empty blob")
	case len(segs) == 1:
		_, err := d.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &d.bucket, Key: &key, CopySource: aws.String(d.copySource(segs[0].Key))})
		return wrapNil(err, "copying the upload's content")
	case t == 0:
		// Everything is small: merge it in memory (under MinPartSize).
		bp := d.bufs.Get().(*[]byte)
		defer d.bufs.Put(bp)
		n, err := d.readSegments(ctx, segs, *bp)
		if err != nil {
			return err
		}
		return wrapNil(d.putObject(ctx, key, (*bp)[:n]), "writing the blob")
	}
	mpu, err := d.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &key})
	if err != nil {
		return wrap(err, "starting the blob's multipart upload")
	}
	done := false
	defer func() {
		if !done {
			d.abortMultipart(ctx, key, mpu.UploadId)
		}
	}()
	parts := make([]types.CompletedPart, t, t+1)
	err = storage.ForEach(ctx, min(d.parallel, 8), segs[:t], func(ctx context.Context, i int, sg segment) error {
		out, err := d.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: &d.bucket, Key: &key, UploadId: mpu.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), CopySource: aws.String(d.copySource(sg.Key))})
		if err != nil {
			return wrap(err, "copying part %d", i+1)
		}
		if out.CopyPartResult == nil || out.CopyPartResult.ETag == nil {
			return fmt.Errorf("copying part %d: no ETag in the answer", i+1)
		}
		parts[i] = types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(int32(i + 1))}
		return nil
	})
	if err != nil {
		return err
	}
	if t < len(segs) {
		bp := d.bufs.Get().(*[]byte)
		defer d.bufs.Put(bp)
		n, err := d.readSegments(ctx, segs[t:], *bp)
		if err != nil {
			return err
		}
		pn := int32(t + 1)
		out, err := d.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: &d.bucket, Key: &key, UploadId: mpu.UploadId,
			PartNumber: aws.Int32(pn), Body: bytes.NewReader((*bp)[:n]), ContentLength: aws.Int64(int64(n))})
		if err != nil {
			return wrap(err, "uploading the last part")
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(pn)})
	}
	if err := d.completeMultipart(ctx, key, mpu.UploadId, parts); err != nil {
		return err
	}
	done = true
	return nil
}

// copySource is the x-amz-copy-source value of a key of the bucket. Keys
// hold only [A-Za-z0-9/._:-] (and the configured prefix), which need no
// escaping but for the prefix.
func (d *Driver) copySource(key string) string {
	return d.bucket + "/" + escapeKey(key)
}

func escapeKey(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func wrapNil(err error, what string) error {
	if err == nil {
		return nil
	}
	return wrap(err, "%s", what)
}

// removeSession deletes the record first (the session is then gone for
// every replica), then its segments.
func (d *Driver) removeSession(ctx context.Context, id string) error {
	key := d.sessionKey(id)
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &key}); err != nil {
		return wrap(err, "removing upload %s", id)
	}
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	segs, err := d.listSegments(cctx, id)
	if err != nil {
		d.log.Warn("listing the segments of a removed upload failed", "upload", id, "error", err)
		return nil
	}
	d.deleteSegments(cctx, segs)
	return nil
}

// listSegments lists the segment objects of session id, including those
// of appends that lost or crashed.
func (d *Driver) listSegments(ctx context.Context, id string) ([]segment, error) {
	prefix := d.segmentPrefix(id)
	var segs []segment
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			segs = append(segs, segment{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size)})
		}
	}
	return segs, nil
}

// AbortUpload implements storage.Driver.
func (d *Driver) AbortUpload(ctx context.Context, id string) error {
	if _, _, err := d.readSession(ctx, id); err != nil {
		return err
	}
	return d.removeSession(ctx, id)
}

// WalkUploads implements storage.Driver. Sessions are found by a listing
// of uploads/ by prefix, each confirmed by reading its record.
func (d *Driver) WalkUploads(ctx context.Context, fn func(storage.Upload) error) error {
	ids, err := d.uploadIDs(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s, _, err := d.readSession(ctx, id)
		if err != nil {
			continue // removed meanwhile, or a stale listing
		}
		if err := fn(s.upload(id)); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) uploadIDs(ctx context.Context) ([]string, error) {
	prefix := d.key("uploads/")
	var ids []string
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix, Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap(err, "listing uploads")
		}
		for _, cp := range page.CommonPrefixes {
			id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/")
			if storage.ValidUploadID(id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// RemoveOrphans removes what failed or interrupted writes left in the
// bucket, when older than before: segments of sessions that no longer
// exist or that no session record refers to, and multipart uploads never
// completed nor aborted. It returns the number of objects and multipart
// uploads removed. The prune command calls it.
func (d *Driver) RemoveOrphans(ctx context.Context, before time.Time) (int, error) {
	ids, err := d.uploadIDs(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, id := range ids {
		segs, err := d.listSegmentObjects(ctx, id)
		if err != nil {
			return removed, wrap(err, "listing upload %s", id)
		}
		s, _, err := d.readSession(ctx, id)
		var live map[string]bool
		switch {
		case err == nil:
			live = map[string]bool{}
			for _, sg := range s.Segments {
				live[sg.Key] = true
			}
		case isUploadUnknown(err):
		default:
			return removed, err
		}
		var dead []segment
		for _, o := range segs {
			if !live[aws.ToString(o.Key)] && aws.ToTime(o.LastModified).Before(before) {
				dead = append(dead, segment{Key: aws.ToString(o.Key)})
			}
		}
		d.deleteSegments(ctx, dead)
		removed += len(dead)
	}
	prefix := d.key("")
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket}
	if prefix != "" {
		in.Prefix = &prefix
	}
	for {
		out, err := d.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return removed, wrap(err, "listing multipart uploads")
		}
		for _, u := range out.Uploads {
			if aws.ToTime(u.Initiated).Before(before) {
				d.abortMultipart(ctx, aws.ToString(u.Key), u.UploadId)
				removed++
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
	return removed, nil
}

func (d *Driver) listSegmentObjects(ctx context.Context, id string) ([]types.Object, error) {
	prefix := d.segmentPrefix(id)
	var objs []types.Object
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		objs = append(objs, page.Contents...)
	}
	return objs, nil
}

func isUploadUnknown(err error) bool { return errors.Is(err, storage.ErrUploadUnknown) }
