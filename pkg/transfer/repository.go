package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Limits on what a Repository reads into memory, so that a misbehaving
// registry cannot exhaust it: the distribution spec lets registries refuse
// manifests over 4 MiB, and so do we; a config blob read whole is an image
// configuration.
const (
	maxManifestSize = 4 << 20
	maxBlobSize     = 8 << 20
	maxTagsPage     = 64 << 20
	maxTagPages     = 100000
	// requestTimeout bounds one request that is not a blob transfer.
	requestTimeout = 5 * time.Minute
)

// Manifest is a manifest as the registry stores it: its exact bytes, their
// digest, and its media type.
type Manifest struct {
	MediaType string
	Digest    string
	Body      []byte
}

// Descriptor is what a reference points at.
type Descriptor struct {
	Digest    string
	MediaType string
	Size      int64
}

// Repository is one repository of one registry, with the access it was
// opened with (Client.Repository, Client.Repositories, or a copy's
// scopes). It speaks the distribution API over https, or over plain http
// only to a loopback or declared insecure registry that does not answer
// https (docker's conventions, conventions.go); go-containerregistry's
// guess of plain http for private addresses is not used. It is safe for
// concurrent use.
type Repository struct {
	host string // host[:port] as it appears in URLs
	// scheme is https, or http for a loopback or insecure registry that
	// answered only over plain HTTP (see conventions.go).
	scheme string
	name   string
	// hc sends requests with small answers, each bounded by
	// requestTimeout; stream sends blob transfers, bounded by their
	// context only. Both follow redirects to https URLs only, and only the
	// registry's own host receives its credentials.
	hc, stream *http.Client
	pageSize   int

	grantsKnown, pushGranted, pullGranted bool
}

func (c *Client) newRepository(host, scheme, repo string, rt http.RoundTripper, g grants) *Repository {
	redirect := func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		// Never from https down to http; a plain-HTTP registry's own
		// redirects are left to the transport's guard.
		if req.URL.Scheme != "https" && via[len(via)-1].URL.Scheme == "https" {
			return fmt.Errorf("redirect to %s://%s%s: %w", req.URL.Scheme, req.URL.Host, req.URL.Path, ErrPlainHTTP)
		}
		return nil
	}
	r := &Repository{host: host, scheme: scheme, name: repo, pageSize: c.pageSize,
		hc:     &http.Client{Transport: rt, CheckRedirect: redirect, Timeout: requestTimeout},
		stream: &http.Client{Transport: rt, CheckRedirect: redirect}}
	if g != nil {
		r.grantsKnown = true
		r.pushGranted = g.allows(repo, true)
		r.pullGranted = g.allows(repo, false)
	}
	return r
}

// Name is the repository's name.
func (r *Repository) Name() string { return r.name }

// PushGranted reports what the registry's token says of push access: known
// is false when the token does not say (an opaque token, basic
// authentication); then only CheckPush can tell.
func (r *Repository) PushGranted() (granted, known bool) { return r.pushGranted, r.grantsKnown }

// Ref is host/name:ref, or host/name@ref for a digest, for messages.
func (r *Repository) Ref(ref string) string {
	if oci.IsDigest(ref) {
		return r.host + "/" + r.name + "@" + ref
	}
	return r.host + "/" + r.name + ":" + ref
}

func (r *Repository) url(parts ...string) string {
	return r.scheme + "://" + r.host + "/v2/" + r.name + "/" + strings.Join(parts, "/")
}

// do sends a request with a small answer. op names it in errors.
func (r *Repository) do(ctx context.Context, op, method, u string, body []byte, hdr map[string]string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body) // replayable: NewRequest sets GetBody
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, unwrapURLError(err))
	}
	return resp, nil
}

// unwrapURLError drops the *url.Error of http.Client, whose message
// repeats the URL (with an upload session's query) after the operation.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Head returns the descriptor of the manifest ref (a tag or digest); an
// absent one is an error matching oci.ErrNotFound. A registry whose HEAD
// omits Docker-Content-Digest or Content-Type (zuul-registry does) is
// asked with a GET instead.
func (r *Repository) Head(ctx context.Context, ref string) (Descriptor, error) {
	op := "HEAD manifest " + r.Ref(ref)
	resp, err := r.do(ctx, op, http.MethodHead, r.url("manifests", ref), nil, map[string]string{"Accept": oci.AcceptManifests})
	if err != nil {
		return Descriptor{}, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		return Descriptor{}, err
	}
	d := Descriptor{MediaType: oci.MediaType(resp.Header.Get("Content-Type")), Digest: resp.Header.Get("Docker-Content-Digest"), Size: resp.ContentLength}
	if _, err := oci.ParseDigest(d.Digest); err == nil && !oci.IsGeneric(d.MediaType) {
		return d, nil
	}
	m, err := r.Get(ctx, ref)
	if err != nil {
		return Descriptor{}, err
	}
	return Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}, nil
}

// Get fetches the manifest ref (a tag or digest) and checks its bytes
// against the digest asked for, or the one the registry claims
// (Docker-Content-Digest); a mismatch is an error matching
// ErrDigestMismatch. The media type is the Content-Type's, or the
// manifest's own mediaType when the registry sent a generic type, or what
// its shape says.
func (r *Repository) Get(ctx context.Context, ref string) (*Manifest, error) {
	op := "GET manifest " + r.Ref(ref)
	resp, err := r.do(ctx, op, http.MethodGet, r.url("manifests", ref), nil, map[string]string{"Accept": oci.AcceptManifests})
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading the manifest: %w", op, err)
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", op, ErrUnsupportedManifest, maxManifestSize)
	}
	m := &Manifest{MediaType: manifestMediaType(oci.MediaType(resp.Header.Get("Content-Type")), body), Body: body}
	if oci.IsDigest(ref) {
		want, err := oci.ParseDigest(ref)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if _, err := oci.Verify(want, body); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", op, ErrDigestMismatch, err)
		}
		m.Digest = want.String()
		return m, nil
	}
	got := digest.FromBytes(body)
	if claimed, err := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
		if got, err = oci.Verify(claimed, body); err != nil {
			return nil, fmt.Errorf("%s: %w: content has digest %s, the registry said %s", op, ErrDigestMismatch, got, claimed)
		}
	}
	m.Digest = got.String()
	return m, nil
}

// manifestMediaType is a manifest's media type: the Content-Type unless it
// is generic, then the manifest's mediaType field, then its shape.
func manifestMediaType(contentType string, body []byte) string {
	if !oci.IsGeneric(contentType) {
		return contentType
	}
	var doc struct {
		MediaType string          `json:"mediaType"`
		Config    json.RawMessage `json:"config"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return contentType
	}
	switch {
	case doc.MediaType != "":
		return doc.MediaType
	case doc.Manifests != nil:
		return oci.MediaTypeOCIIndex
	case doc.Config != nil:
		return oci.MediaTypeOCIManifest
	}
	return contentType
}

// Put stores m under ref (a tag, or m's digest), byte for byte, and checks
// that the registry computed the same digest. No blob moves: the
// repository must already hold everything m references.
func (r *Repository) Put(ctx context.Context, ref string, m *Manifest) error {
	op := fmt.Sprintf("PUT manifest %s (%s)", r.Ref(ref), m.Digest)
	resp, err := r.do(ctx, op, http.MethodPut, r.url("manifests", ref), m.Body, map[string]string{"Content-Type": m.MediaType})
	if err != nil {
		return err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusCreated, http.StatusOK, http.StatusAccepted); err != nil {
		return err
	}
	if h, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		if want, err := digest.Parse(m.Digest); err == nil && h.Algorithm() == want.Algorithm() && h != want {
			return fmt.Errorf("%s: %w: the registry stored digest %s", op, ErrDigestMismatch, h)
		}
	}
	return nil
}

// Delete deletes the manifest reference ref (DELETE
// /v2/<name>/manifests/<ref>). For a tag, spec-conforming registries remove
// only the tag; a registry that cannot answers an error matching
// oci.ErrUnsupported. Callers must never fall back to deleting by digest,
// which would remove every tag of the manifest.
func (r *Repository) Delete(ctx context.Context, ref string) error {
	op := "DELETE manifest " + r.Ref(ref)
	resp, err := r.do(ctx, op, http.MethodDelete, r.url("manifests", ref), nil, nil)
	if err != nil {
		return err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusAccepted, http.StatusOK, http.StatusNoContent); err != nil {
		if !oci.IsDigest(ref) && oci.StatusCode(err) == http.StatusBadRequest && oci.HasCode(err, oci.CodeDigestInvalid) {
			// distribution 2.x parses the reference as a digest and
			// rejects a tag: it can delete manifests only by digest.
			return fmt.Errorf("%w: the registry deletes manifests only by digest, not single tags (%w)", oci.ErrUnsupported, err)
		}
		return err
	}
	return nil
}

// Tags lists every tag of the repository, following the Link header page
// by page (distribution-spec, "Listing Tags"; oci.NextLink). A next link to
// another host is refused.
func (r *Repository) Tags(ctx context.Context) ([]string, error) {
	op := "listing tags of " + r.host + "/" + r.name
	next := r.url("tags", "list")
	if r.pageSize > 0 {
		next += "?n=" + strconv.Itoa(r.pageSize)
	}
	seen := map[string]bool{}
	var tags []string
	for page := 0; next != ""; page++ {
		if page >= maxTagPages || seen[next] {
			return nil, fmt.Errorf("%s: pagination does not end at page %d", op, page+1)
		}
		seen[next] = true
		resp, err := r.do(ctx, op, http.MethodGet, next, nil, map[string]string{"Accept": "application/json"})
		if err != nil {
			return nil, err
		}
		if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
			drain(resp)
			return nil, err
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxTagsPage)).Decode(&body)
		links, pageURL := resp.Header.Values("Link"), resp.Request.URL
		drain(resp)
		if err != nil {
			return nil, fmt.Errorf("%s: decoding page %d: %w", op, page+1, err)
		}
		tags = append(tags, body.Tags...)
		nu, err := oci.NextLink(pageURL, links...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		next = ""
		if nu != nil {
			next = nu.String()
		}
	}
	return tags, nil
}

// Blob reads a small blob whole (an image configuration, at most 8 MiB)
// and checks its digest.
func (r *Repository) Blob(ctx context.Context, dgst string) ([]byte, error) {
	op := "GET blob " + r.Ref(dgst)
	want, err := oci.ParseDigest(dgst)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := r.do(ctx, op, http.MethodGet, r.url("blobs", dgst), nil, nil)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBlobSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(b) > maxBlobSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", op, maxBlobSize)
	}
	if _, err := oci.Verify(want, b); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", op, ErrDigestMismatch, err)
	}
	return b, nil
}

// CheckPush proves the credentials may push to the repository without
// publishing anything: it opens a blob upload session and cancels it
// (distribution-spec, "Pushing blobs" and "Canceling an upload").
func (r *Repository) CheckPush(ctx context.Context) error {
	loc, _, err := r.startUpload(ctx, "", "")
	if err != nil {
		return fmt.Errorf("checking push access to %s/%s: %w", r.host, r.name, err)
	}
	r.cancelUpload(loc)
	return nil
}

// blobExists reports whether the repository holds the blob.
func (r *Repository) blobExists(ctx context.Context, d digest.Digest) (bool, error) {
	op := "HEAD blob " + r.Ref(d.String())
	resp, err := r.do(ctx, op, http.MethodHead, r.url("blobs", d.String()), nil, nil)
	if err != nil {
		return false, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK, http.StatusNotFound); err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusOK, nil
}

// openBlob starts reading a blob; the caller streams and closes the body.
func (r *Repository) openBlob(ctx context.Context, d descriptor) (io.ReadCloser, error) {
	op := "GET blob " + r.Ref(d.Digest.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("blobs", d.Digest.String()), nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.stream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, unwrapURLError(err))
	}
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if resp.ContentLength >= 0 && d.Size > 0 && resp.ContentLength != d.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w: the manifest says %d bytes, the registry sends %d", op, ErrDigestMismatch, d.Size, resp.ContentLength)
	}
	return resp.Body, nil
}

// startUpload opens an upload session (distribution spec, "Pushing
// blobs"). With from set it asks to mount d from that repository instead
// and reports mounted when the registry did; a registry that cannot mount
// opens a session, whose location is returned.
func (r *Repository) startUpload(ctx context.Context, d digest.Digest, from string) (loc string, mounted bool, err error) {
	op := "POST blob upload to " + r.host + "/" + r.name
	u := r.url("blobs", "uploads") + "/"
	if from != "" {
		op = "mounting blob " + d.String() + " from " + from + " into " + r.host + "/" + r.name
		u += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	resp, err := r.do(ctx, op, http.MethodPost, u, nil, nil)
	if err != nil {
		return "", false, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusCreated, http.StatusAccepted); err != nil {
		return "", false, err
	}
	if resp.StatusCode == http.StatusCreated {
		if from != "" {
			return "", true, nil
		}
		return "", false, fmt.Errorf("%s: the registry answered 201 Created to an upload request without a mount", op)
	}
	if loc, err = location(resp); err != nil {
		return "", false, fmt.Errorf("%s: %w", op, err)
	}
	return loc, false, nil
}

// location resolves an upload session's Location header. A registry may
// only send the client to another https URL (it may be a storage host).
func location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("the registry opened an upload session without a Location header")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload location %q: %w", loc, err)
	}
	if u.Scheme != "https" && resp.Request.URL.Scheme == "https" {
		return "", fmt.Errorf("upload location %s://%s%s: %w", u.Scheme, u.Host, u.Path, ErrPlainHTTP)
	}
	return u.String(), nil
}

// putBlob completes an upload session with the whole blob in one PUT
// (distribution spec, "Pushing a blob monolithically", POST then PUT).
// body is streamed: the request is not replayable, so the retry layer
// lets it through untouched.
func (r *Repository) putBlob(ctx context.Context, loc string, d descriptor, body io.Reader) error {
	op := "PUT blob " + r.Ref(d.Digest.String())
	u, err := url.Parse(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d.Digest.String())
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), io.NopCloser(body))
	if err != nil {
		return err
	}
	req.ContentLength = d.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.stream.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, unwrapURLError(err))
	}
	defer drain(resp)
	return oci.CheckResponse(resp, op, http.StatusCreated)
}

// cancelUpload deletes an unfinished upload session, so a failed attempt
// leaves nothing behind. Errors are ignored: the registry purges stale
// sessions anyway.
func (r *Repository) cancelUpload(loc string) {
	if loc == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, loc, nil)
	if err != nil {
		return
	}
	if resp, err := r.hc.Do(req); err == nil {
		drain(resp)
	}
}
