package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// blobKey returns the key of blob dg, after validating the digest so that
// it cannot name anything outside blobs/.
func (d *Driver) blobKey(dg digest.Digest) (string, error) {
	if err := dg.Validate(); err != nil {
		return "", fmt.Errorf("%w: digest %q: %v", storage.ErrInvalid, dg, err)
	}
	return d.key("blobs/" + dg.Algorithm().String() + "/" + dg.Encoded()), nil
}

// StatBlob implements storage.Driver.
func (d *Driver) StatBlob(ctx context.Context, dg digest.Digest) (int64, error) {
	key, err := d.blobKey(dg)
	if err != nil {
		return 0, err
	}
	out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &key})
	if err != nil {
		return 0, wrap(err, "blob %s", dg)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// OpenBlob implements storage.Driver with a ranged GET.
func (d *Driver) OpenBlob(ctx context.Context, dg digest.Digest, offset, length int64) (io.ReadCloser, error) {
	key, err := d.blobKey(dg)
	if err != nil {
		return nil, err
	}
	if length == 0 {
		// An empty range cannot be asked of S3; the blob must exist all the same.
		if _, err := d.StatBlob(ctx, dg); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: &d.bucket, Key: &key}
	switch {
	case offset == 0 && length < 0:
	case length < 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	default:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	}
	out, err := d.client.GetObject(ctx, in)
	if err != nil {
		if code, _ := errorCode(err); code == "InvalidRange" {
			// Reading from the end: nothing, if the blob exists.
			if _, err := d.StatBlob(ctx, dg); err != nil {
				return nil, err
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, wrap(err, "reading blob %s", dg)
	}
	return out.Body, nil
}

// BlobURL implements storage.BlobURLer with a presigned URL (signature
// version 4 in the query string), valid for Config.URLExpiry, addressing
// the bucket as every other request does (path-style or virtual-host, on
// Config.Endpoint). Signing happens locally: no request is sent, except to
// refresh temporary credentials.
func (d *Driver) BlobURL(ctx context.Context, dg digest.Digest, method string) (string, error) {
	key, err := d.blobKey(dg)
	if err != nil {
		return "", err
	}
	var req *v4.PresignedHTTPRequest
	switch method {
	case http.MethodGet:
		req, err = d.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &key})
	case http.MethodHead:
		req, err = d.presign.PresignHeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &key})
	default:
		return "", fmt.Errorf("presigning blob %s: method %q is not GET or HEAD", dg, method)
	}
	if err != nil {
		return "", wrap(err, "presigning blob %s", dg)
	}
	return req.URL, nil
}

// PutBlob implements storage.Driver. A blob of known size up to the part
// size is one PUT of a buffered body; anything else streams through a
// multipart upload on the blob's key, completed only once r has returned
// io.EOF, and aborted on any error.
func (d *Driver) PutBlob(ctx context.Context, dg digest.Digest, size int64, r io.Reader) error {
	key, err := d.blobKey(dg)
	if err != nil {
		return err
	}
	if size >= 0 && size <= d.partSize {
		return d.putSmallBlob(ctx, dg, key, size, r)
	}
	if size >= 0 {
		// One byte more than announced is enough to refuse the blob.
		r = io.LimitReader(r, size+1)
	}
	return d.putLargeBlob(ctx, dg, key, size, r)
}

func (d *Driver) putSmallBlob(ctx context.Context, dg digest.Digest, key string, size int64, r io.Reader) error {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := (*bp)[:size]
	n, eof, err := readPart(ctx, r, buf)
	if err == nil && !eof {
		// The buffer is full: the reader must end here (and may still
		// fail its digest check on this read).
		var one [1]byte
		var m int
		m, _, err = readPart(ctx, r, one[:])
		if err == nil && m > 0 {
			err = fmt.Errorf("%w: blob %s: more than %d bytes", storage.ErrRangeInvalid, dg, size)
		}
	}
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", dg, err)
	}
	if int64(n) != size {
		return fmt.Errorf("writing blob %s: %w: read %d bytes, expected %d", dg, storage.ErrRangeInvalid, n, size)
	}
	_, err = d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: &key,
		Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n))})
	if err != nil {
		return wrap(err, "writing blob %s", dg)
	}
	return nil
}

func (d *Driver) putLargeBlob(ctx context.Context, dg digest.Digest, key string, size int64, r io.Reader) error {
	mpu, err := d.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &key})
	if err != nil {
		return wrap(err, "writing blob %s", dg)
	}
	done := false
	defer func() {
		if !done {
			d.abortMultipart(ctx, key, mpu.UploadId)
		}
	}()
	var mu sync.Mutex
	var parts []types.CompletedPart
	total, n, err := d.streamParts(ctx, nil, r, func(ctx context.Context, i int, data []byte) error {
		if i > maxParts {
			return fmt.Errorf("blob is larger than %d parts of %d bytes", maxParts, d.partSize)
		}
		out, err := d.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: &d.bucket, Key: &key, UploadId: mpu.UploadId,
			PartNumber: aws.Int32(int32(i)), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
		if err != nil {
			return wrap(err, "uploading part %d", i)
		}
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i))})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", dg, err)
	}
	if size >= 0 && total != size {
		return fmt.Errorf("writing blob %s: %w: read %d bytes, expected %d", dg, storage.ErrRangeInvalid, total, size)
	}
	if n == 0 {
		// An empty stream of unknown size.
		d.abortMultipart(ctx, key, mpu.UploadId)
		done = true
		_, err := d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: &key, Body: bytes.NewReader(nil), ContentLength: aws.Int64(0)})
		if err != nil {
			return wrap(err, "writing blob %s", dg)
		}
		return nil
	}
	if err := d.completeMultipart(ctx, key, mpu.UploadId, parts); err != nil {
		return fmt.Errorf("writing blob %s: %w", dg, err)
	}
	done = true
	return nil
}

func (d *Driver) completeMultipart(ctx context.Context, key string, uploadID *string, parts []types.CompletedPart) error {
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err := d.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &d.bucket, Key: &key,
		UploadId: uploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return wrap(err, "completing the multipart upload")
	}
	return nil
}

// abortMultipart aborts a multipart upload after a failure, even when the
// request's context has ended. A failure is logged: the store's own
// lifecycle rules, or the prune command, remove what is left.
func (d *Driver) abortMultipart(ctx context.Context, key string, uploadID *string) {
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	if _, err := d.client.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: &key, UploadId: uploadID}); err != nil && !isNotFound(err) {
		d.log.Warn("aborting a multipart upload failed", "key", key, "error", err)
	}
}

// DeleteBlob implements storage.Driver.
func (d *Driver) DeleteBlob(ctx context.Context, dg digest.Digest) error {
	key, err := d.blobKey(dg)
	if err != nil {
		return err
	}
	if _, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &key}); err != nil {
		return wrap(err, "blob %s", dg)
	}
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &key}); err != nil {
		return wrap(err, "deleting blob %s", dg)
	}
	return nil
}

// WalkBlobs implements storage.Driver. Listed blobs are not confirmed: on a
// store whose listing lags behind deletes, fn may see a blob that was just
// deleted, and a DeleteBlob of it reports ErrNotFound.
func (d *Driver) WalkBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	prefix := d.key("blobs/")
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return wrap(err, "listing blobs")
		}
		for _, o := range page.Contents {
			alg, enc, ok := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/")
			if !ok {
				continue
			}
			dg := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
			if dg.Validate() != nil {
				continue
			}
			if err := fn(storage.BlobInfo{Digest: dg, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// readPart fills buf from r. It reports how many bytes it read and whether
// r reached its end; a read error other than io.EOF, or the end of ctx,
// is returned as is.
func readPart(ctx context.Context, r io.Reader, buf []byte) (int, bool, error) {
	n := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, false, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// streamParts cuts head followed by r's content into parts of the part
// size and calls upload for each (numbered from 1), in order, the upload of
// one part overlapping the read of the next: two buffers, never more. head
// fills the start of the first part (it must be shorter than a part). It
// returns the number of bytes read from r and the number of parts, once
// every upload has finished; on an error, after the uploads in flight
// have ended.
func (d *Driver) streamParts(ctx context.Context, head func(buf []byte) (int, error), r io.Reader, upload func(ctx context.Context, i int, data []byte) error) (int64, int, error) {
	bufs := [2]*[]byte{d.bufs.Get().(*[]byte), d.bufs.Get().(*[]byte)}
	ctx, cancel := context.WithCancel(ctx)
	var inflight chan error
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	defer func() {
		cancel()
		_ = wait()
		d.bufs.Put(bufs[0])
		d.bufs.Put(bufs[1])
	}()
	n := 0
	if head != nil {
		var err error
		if n, err = head(*bufs[0]); err != nil {
			return 0, 0, err
		}
	}
	var total int64
	parts, idx := 0, 0
	for {
		m, eof, err := readPart(ctx, r, (*bufs[idx])[n:])
		total += int64(m)
		n += m
		if err != nil {
			return total, parts, err
		}
		if n > 0 {
			// Wait for the previous part before starting this one: its
			// buffer is the next one to fill.
			if err := wait(); err != nil {
				return total, parts, err
			}
			parts++
			i, data := parts, (*bufs[idx])[:n]
			inflight = make(chan error, 1)
			go func(c chan error) { c <- upload(ctx, i, data) }(inflight)
		}
		if eof {
			break
		}
		idx, n = 1-idx, 0
	}
	if err := wait(); err != nil {
		return total, parts, err
	}
	return total, parts, nil
}

// errShortSession reports a session record whose segments do not add up.
var errShortSession = errors.New("session segments do not cover its size")
