package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

// flight is one piece of work of an operation that several jobs may
// need: placing a blob in a repository or on a registry, writing a child
// manifest. The first job does it; the others wait for its outcome.
type flight struct {
	done chan struct{}
	// val is the leader's result (the repository a blob landed in), err
	// its failure; both are set before done is closed.
	val string
	err error
}

// once runs fn for the first caller of key and makes concurrent and later
// callers wait for its outcome, so that work is done once per operation.
// After a failure the next waiting caller tries itself. Waiting holds no
// transfer slot: a leader holds one only while it works and never waits,
// so the pool cannot deadlock.
func (s *session) once(ctx context.Context, key string, fn func() (string, error)) (val string, leader bool, err error) {
	for {
		s.mu.Lock()
		f := s.flights[key]
		if f == nil {
			f = &flight{done: make(chan struct{})}
			s.flights[key] = f
			s.mu.Unlock()
			val, err := fn()
			s.mu.Lock()
			if err != nil {
				delete(s.flights, key)
			}
			f.val, f.err = val, err
			s.mu.Unlock()
			close(f.done)
			return val, true, err
		}
		s.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", false, ctx.Err()
		}
		if f.err == nil {
			return f.val, false, nil
		}
	}
}

// ensureBlob makes the target repository of dc hold blob d. Jobs that
// need the blob in the same repository wait for the first (concurrent
// writes of one repository's blob link race in distribution's filesystem
// driver); the first places it on the registry, or mounts it from the
// repository where another job of the operation placed it. That is how an
// operation uploads each shared layer once across registries, where
// go-containerregistry mounts only from the source repository.
func (s *session) ensureBlob(ctx context.Context, sc source, dc *Repository, d descriptor, cnt *counters) error {
	host := oci.CanonicalHost(dc.host)
	_, leader, err := s.once(ctx, "blob "+host+"/"+dc.name+"@"+d.Digest.String(), func() (string, error) {
		from, first, err := s.once(ctx, "registry blob "+host+"@"+d.Digest.String(), func() (string, error) {
			return dc.name, s.placeBlob(ctx, sc, dc, d, cnt)
		})
		switch {
		case err != nil:
			return "", err
		case first:
			return "", nil
		case from == dc.name:
			cnt.existing.Add(1)
			return "", nil
		}
		return "", s.mountBlob(ctx, sc, dc, d, from, cnt)
	})
	if err != nil {
		return s.fail(dc.host+"/"+dc.name, StepBlob, d.Digest.String(), err)
	}
	if !leader {
		cnt.existing.Add(1)
	}
	return nil
}

// acquire takes a slot of sem, the pool of blob transfers or the pool of
// mounts.
func (s *session) acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// placeBlob is the first placement of a blob on the target registry in
// this operation.
func (s *session) placeBlob(ctx context.Context, sc source, dc *Repository, d descriptor, cnt *counters) error {
	ref := dc.host + "/" + dc.name
	if err := s.acquire(ctx, s.blobSem); err != nil {
		return s.fail(ref, StepBlob, d.Digest.String(), err)
	}
	defer func() { <-s.blobSem }()
	ok, err := dc.blobExists(ctx, d.Digest)
	if err != nil {
		return s.fail(ref, StepBlob, d.Digest.String(), err)
	}
	if ok {
		cnt.existing.Add(1)
		return nil
	}
	location := ""
	if srcHost, srcName := sc.location(); oci.CanonicalHost(srcHost) == oci.CanonicalHost(dc.host) && srcName != dc.name {
		loc, mounted, err := dc.startUpload(ctx, d.Digest, srcName)
		if err != nil {
			return s.fail(ref, StepMount, d.Digest.String(), err)
		}
		if mounted {
			cnt.mounted.Add(1)
			s.c.log.Debug("mounted blob", "digest", d.Digest, "from", srcName, "to", ref)
			return nil
		}
		location = loc
	}
	return s.upload(ctx, sc, dc, d, location, cnt)
}

// mountBlob mounts a blob another job of this operation placed in repo
// on the same registry; a registry that will not mount gets an upload.
// Mounts take a slot of their own, larger pool: they move no data, and
// their cost is the registry's metadata writes, which overlap well, and
// they should not wait behind the layer uploads they follow.
func (s *session) mountBlob(ctx context.Context, sc source, dc *Repository, d descriptor, from string, cnt *counters) error {
	ref := dc.host + "/" + dc.name
	if err := s.acquire(ctx, s.mountSem); err != nil {
		return s.fail(ref, StepMount, d.Digest.String(), err)
	}
	loc, mounted, err := dc.startUpload(ctx, d.Digest, from)
	<-s.mountSem
	if err != nil {
		return s.fail(ref, StepMount, d.Digest.String(), err)
	}
	if mounted {
		cnt.mounted.Add(1)
		s.c.log.Debug("mounted blob", "digest", d.Digest, "from", from, "to", ref)
		return nil
	}
	if err := s.acquire(ctx, s.blobSem); err != nil {
		dc.cancelUpload(loc)
		return s.fail(ref, StepBlob, d.Digest.String(), err)
	}
	defer func() { <-s.blobSem }()
	return s.upload(ctx, sc, dc, d, loc, cnt)
}

// upload streams a blob from the source into the target: GET, then one
// PUT to the upload session (location, or a new one). The PUT body is the
// GET body, so a layer is never held in memory. A failure that may pass
// (a reset, a 5xx, a body cut short, content that does not match its
// digest) restarts the transfer with the retry policy's backoff; a failed
// attempt's session is cancelled.
//
// The content is checked on the way for its size only; its digest is
// checked by the target. The PUT names the digest, and a registry hashes
// what it receives and refuses to commit content that does not match it
// (DIGEST_INVALID, distribution spec "Pushing blobs"): imagegate's
// registry, distribution and zuul-registry all do, before the blob
// becomes visible. Hashing here too would be a second SHA-256 of every
// byte, a third of this process's CPU in a copy, for no content the
// target would not refuse anyway. What the client keeps is what the
// target cannot know: the size the manifest gives (the PUT announces it;
// a shorter stream fails the PUT before its body is complete, a longer
// one is cut at the size) and the attribution of a mismatch to the
// source (the target's DIGEST_INVALID becomes ErrDigestMismatch, and the
// transfer is retried).
func (s *session) upload(ctx context.Context, sc source, dc *Repository, d descriptor, location string, cnt *counters) error {
	ref := dc.host + "/" + dc.name
	p := s.c.retry
	for attempt := 0; ; attempt++ {
		n, err := s.uploadOnce(ctx, sc, dc, d, location)
		if err == nil {
			cnt.copied.Add(1)
			cnt.bytes.Add(n)
			s.c.log.Debug("uploaded blob", "digest", d.Digest, "to", ref, "bytes", n)
			return nil
		}
		location = ""
		if !retryableBlobError(err) || attempt+1 >= p.Attempts || ctx.Err() != nil {
			return s.fail(ref, StepBlob, d.Digest.String(), err)
		}
		wait := p.wait(attempt, nil)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return s.fail(ref, StepBlob, d.Digest.String(), fmt.Errorf("%w (not retrying: the next try would be after the deadline)", err))
		}
		s.c.log.Info("retrying blob transfer", "digest", d.Digest, "to", ref, "reason", err, "attempt", attempt+2, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return s.fail(ref, StepBlob, d.Digest.String(), fmt.Errorf("%w; last attempt: %v", ctx.Err(), err))
		}
	}
}

func (s *session) uploadOnce(ctx context.Context, sc source, dc *Repository, d descriptor, location string) (int64, error) {
	if location == "" {
		loc, _, err := dc.startUpload(ctx, d.Digest, "")
		if err != nil {
			return 0, err
		}
		location = loc
	}
	body, err := sc.openBlob(ctx, d)
	if err != nil {
		dc.cancelUpload(location)
		return 0, err
	}
	defer body.Close()
	sr := &sizedReader{r: body, want: d}
	if err := dc.putBlob(ctx, location, d, sr); err != nil {
		dc.cancelUpload(location)
		if sr.err != nil {
			return 0, sr.err // the source's fault, not the target's
		}
		if oci.HasCode(err, oci.CodeDigestInvalid) {
			return 0, fmt.Errorf("%w: blob %s: the target registry found another digest in the content the source sent (%v)",
				ErrDigestMismatch, d.Digest, err)
		}
		return 0, err
	}
	return sr.n, nil
}

// retryableBlobError reports whether a blob transfer is worth restarting.
func retryableBlobError(err error) bool {
	if code := oci.StatusCode(err); code != 0 {
		return retryableStatus(code)
	}
	return errors.Is(err, ErrDigestMismatch) || retryableError(err)
}

// sizedReader passes a blob through, counting it; it fails, instead of
// returning EOF, when the blob is not the descriptor's size, and fails a
// read error of the source as its own. A short or broken stream fails the
// PUT before its body is complete, so the target commits nothing; of a
// longer one the target receives the announced size only, which it
// checks against the digest.
type sizedReader struct {
	r    io.Reader
	want descriptor
	n    int64
	err  error
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.want.Size > 0 && r.n > r.want.Size {
		r.err = fmt.Errorf("%w: blob %s is longer than its %d bytes", ErrDigestMismatch, r.want.Digest, r.want.Size)
		return 0, r.err
	}
	switch {
	case err == io.EOF && r.want.Size > 0 && r.n != r.want.Size:
		r.err = fmt.Errorf("%w: blob %s: read %d of %d bytes", ErrDigestMismatch, r.want.Digest, r.n, r.want.Size)
		return n, r.err
	case err != nil && err != io.EOF:
		r.err = fmt.Errorf("reading blob %s from the source: %w", r.want.Digest, err)
		return n, r.err
	}
	return n, err
}
