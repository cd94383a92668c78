package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// Media types of manifests (OCI image spec; Docker image manifest v2).
const (
	mediaOCIIndex      = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerV2      = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
	mediaDockerSigned  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// acceptManifests is the Accept header of manifest requests: every type
// this package copies, so the registry never converts (distribution spec,
// "Pulling manifests").
var acceptManifests = strings.Join([]string{mediaOCIIndex, mediaDockerList, mediaOCIManifest, mediaDockerV2}, ", ")

// maxManifestSize is the largest manifest read: the distribution spec lets
// registries refuse manifests over 4 MiB, and so do we.
const maxManifestSize = 4 << 20

// repoClient talks to one repository of one registry, with a token (or
// basic credentials) whose scope covers what the operation needs.
type repoClient struct {
	host string // host[:port] as it appears in URLs
	repo string
	hc   *http.Client
}

// ref names repository content for errors: host/repo:tag or host/repo@digest.
func (c *repoClient) ref(id string) string {
	if strings.Contains(id, ":") {
		return c.host + "/" + c.repo + "@" + id
	}
	return c.host + "/" + c.repo + ":" + id
}

func (c *repoClient) url(path string) string { return "https://" + c.host + "/v2/" + c.repo + path }

func (c *repoClient) do(ctx context.Context, method, u string, body []byte, hdr map[string]string) (*http.Response, error) {
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
	return c.hc.Do(req)
}

// manifest is a manifest as the registry returned it.
type manifest struct {
	raw       []byte
	mediaType string
	digest    digest.Digest
	// children are the manifests of an index; blobs the config and layers
	// of an image.
	children []descriptor
	blobs    []descriptor
}

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls,omitempty"`
}

// foreign reports a layer the registry is not expected to hold: Docker's
// foreign layers and OCI non-distributable layers, which skopeo does not
// copy either.
func (d descriptor) foreign() bool {
	return strings.Contains(d.MediaType, "foreign") || strings.Contains(d.MediaType, "nondistributable")
}

// parseManifest reads the descriptors of raw. mediaType comes from the
// response's Content-Type, or the manifest's own mediaType field.
func parseManifest(raw []byte, mediaType string) (*manifest, error) {
	var doc struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        *descriptor  `json:"config"`
		Layers        []descriptor `json:"layers"`
		Manifests     []descriptor `json:"manifests"`
		Blobs         []descriptor `json:"blobs"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrUnsupportedManifest, err)
	}
	if mediaType == "" || mediaType == "application/json" || mediaType == "text/plain" || mediaType == "application/octet-stream" {
		mediaType = doc.MediaType
	}
	if mediaType == "" {
		switch {
		case doc.Manifests != nil:
			mediaType = mediaOCIIndex
		case doc.Config != nil:
			mediaType = mediaOCIManifest
		}
	}
	m := &manifest{raw: raw, mediaType: mediaType, digest: digest.FromBytes(raw)}
	switch mediaType {
	case mediaDockerSchema1, mediaDockerSigned:
		return nil, fmt.Errorf("%w: Docker schema 1 (%s) cannot be copied unchanged; rebuild or push the image with a current client", ErrUnsupportedManifest, mediaType)
	case mediaOCIIndex, mediaDockerList:
		m.children = doc.Manifests
	case "":
		return nil, fmt.Errorf("%w: no media type, and neither manifests nor config", ErrUnsupportedManifest)
	default:
		// Image manifests, and artifact manifests of other types that
		// follow the image manifest's shape.
		if doc.Config == nil && doc.Layers == nil && doc.Blobs == nil {
			return nil, fmt.Errorf("%w: media type %s with no config or layers", ErrUnsupportedManifest, mediaType)
		}
		if doc.Config != nil {
			m.blobs = append(m.blobs, *doc.Config)
		}
		m.blobs = append(m.blobs, doc.Layers...)
		m.blobs = append(m.blobs, doc.Blobs...)
	}
	for _, d := range append(append([]descriptor{}, m.children...), m.blobs...) {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: descriptor digest %q: %v", ErrUnsupportedManifest, d.Digest, err)
		}
	}
	return m, nil
}

// getManifest fetches a manifest by tag or digest and checks its digest:
// against the digest asked for, and against Docker-Content-Digest.
func (c *repoClient) getManifest(ctx context.Context, id string) (*manifest, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url("/manifests/"+id), nil, map[string]string{"Accept": acceptManifests})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading manifest body: %w", err)
	}
	if len(raw) > maxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrUnsupportedManifest, maxManifestSize)
	}
	m, err := parseManifest(raw, contentType(resp.Header))
	if err != nil {
		return nil, err
	}
	if want, err := digest.Parse(id); err == nil {
		if !want.Algorithm().Available() || want.Algorithm().FromBytes(raw) != want {
			return nil, fmt.Errorf("%w: asked for %s, the content does not match", ErrDigestMismatch, want)
		}
		m.digest = want
		return m, nil
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		if hd, err := digest.Parse(h); err == nil && hd.Algorithm() == m.digest.Algorithm() && hd != m.digest {
			return nil, fmt.Errorf("%w: registry says %s, content is %s", ErrDigestMismatch, hd, m.digest)
		}
	}
	return m, nil
}

// headManifest returns the digest a tag or digest points at, or "" when
// the registry has no such manifest.
func (c *repoClient) headManifest(ctx context.Context, id string) (digest.Digest, error) {
	resp, err := c.do(ctx, http.MethodHead, c.url("/manifests/"+id), nil, map[string]string{"Accept": acceptManifests})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return "", err
	}
	if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		return d, nil
	}
	// The header is optional (zuul-registry leaves it out of HEAD
	// answers): read the manifest to know.
	m, err := c.getManifest(ctx, id)
	if err != nil {
		return "", err
	}
	return m.digest, nil
}

// putManifest stores raw under id (a tag or its digest) with its media type.
func (c *repoClient) putManifest(ctx context.Context, id string, raw []byte, mediaType string, want digest.Digest) error {
	resp, err := c.do(ctx, http.MethodPut, c.url("/manifests/"+id), raw, map[string]string{"Content-Type": mediaType})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated, http.StatusOK, http.StatusAccepted); err != nil {
		return err
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		if hd, err := digest.Parse(h); err == nil && hd.Algorithm() == want.Algorithm() && hd != want {
			return fmt.Errorf("%w: the registry stored the manifest as %s, expected %s", ErrDigestMismatch, hd, want)
		}
	}
	return nil
}

// blobExists reports whether the repository holds the blob.
func (c *repoClient) blobExists(ctx context.Context, d digest.Digest) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, c.url("/blobs/"+d.String()), nil, nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound); err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusOK, nil
}

// openBlob starts reading a blob; the caller streams and closes the body.
func (c *repoClient) openBlob(ctx context.Context, d descriptor) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url("/blobs/"+d.Digest.String()), nil, nil)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if resp.ContentLength >= 0 && d.Size > 0 && resp.ContentLength != d.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: the manifest says %d bytes, the registry sends %d", ErrDigestMismatch, d.Size, resp.ContentLength)
	}
	return resp.Body, nil
}

// startUpload opens an upload session (distribution spec, "Pushing
// blobs"). With from set it asks to mount d from that repository instead
// and reports mounted when the registry did; a registry that cannot mount
// opens a session, whose location is returned.
func (c *repoClient) startUpload(ctx context.Context, d digest.Digest, from string) (location string, mounted bool, err error) {
	u := c.url("/blobs/uploads/")
	if from != "" {
		u += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	resp, err := c.do(ctx, http.MethodPost, u, nil, nil)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated, http.StatusAccepted); err != nil {
		return "", false, err
	}
	if resp.StatusCode == http.StatusCreated {
		if from != "" {
			return "", true, nil
		}
		return "", false, fmt.Errorf("registry answered 201 Created to an upload request without a mount")
	}
	loc, err := c.location(resp)
	return loc, false, err
}

// location resolves an upload session's Location header. A registry may
// only send the client to another https URL (it may be a storage host).
func (c *repoClient) location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("registry opened an upload session without a Location header")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload location %q: %w", loc, err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("upload location %s://%s%s: %w", u.Scheme, u.Host, u.Path, ErrPlainHTTP)
	}
	return u.String(), nil
}

// putBlob completes an upload session with the whole blob in one PUT
// (distribution spec, "Pushing a blob monolithically", POST then PUT).
// body is streamed: the request is not replayable, so the retry layer
// lets it through untouched.
func (c *repoClient) putBlob(ctx context.Context, location string, d descriptor, body io.Reader) error {
	u, err := url.Parse(location)
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
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusCreated)
}

// cancelUpload deletes an unfinished upload session, so a failed attempt
// leaves nothing behind. Errors are ignored: the registry purges stale
// sessions anyway.
func (c *repoClient) cancelUpload(location string) {
	if location == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err != nil {
		return
	}
	if resp, err := c.hc.Do(req); err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}
}

// listTags lists the repository's tags, following Link headers (distribution
// spec, "Listing tags"). Each next page must be on the same registry, and
// is fetched over https whatever the Link says: go-containerregistry
// builds http:// URLs for registries on loopback and private addresses,
// which is the trap this avoids.
func (c *repoClient) listTags(ctx context.Context, pageSize int) ([]string, error) {
	u := c.url("/tags/list")
	if pageSize > 0 {
		u += "?n=" + strconv.Itoa(pageSize)
	}
	var tags []string
	for pages := 0; u != ""; pages++ {
		if pages > 100000 {
			return nil, errors.New("tag listing does not end")
		}
		resp, err := c.do(ctx, http.MethodGet, u, nil, map[string]string{"Accept": "application/json"})
		if err != nil {
			return nil, err
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		err = transport.CheckError(resp, http.StatusOK)
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&page)
		}
		next := resp.Header.Get("Link")
		reqURL := resp.Request.URL
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		tags = append(tags, page.Tags...)
		u, err = c.nextPage(reqURL, next)
		if err != nil {
			return nil, err
		}
	}
	return tags, nil
}

// nextPage reads the rel="next" target of a Link header (RFC 8288),
// relative to the page's URL.
func (c *repoClient) nextPage(base *url.URL, link string) (string, error) {
	for _, part := range strings.Split(link, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, "<") {
			continue
		}
		end := strings.Index(part, ">")
		if end < 0 {
			continue
		}
		target, params := part[1:end], part[end+1:]
		isNext := false
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "next" {
				isNext = true
			}
		}
		if !isNext {
			continue
		}
		u, err := base.Parse(target)
		if err != nil {
			return "", fmt.Errorf("tag listing: next page %q: %w", target, err)
		}
		if canonicalHost(u.Host) != canonicalHost(c.host) {
			return "", fmt.Errorf("tag listing: next page %s is on another host than %s", u.Host, c.host)
		}
		u.Scheme, u.Host = "https", c.host
		return u.String(), nil
	}
	return "", nil
}

func contentType(h http.Header) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}
