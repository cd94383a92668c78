package swift

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// conn sends requests to one container of an account, with the token
// gophercloud keeps (and renews: on a 401, and before it expires).
type conn struct {
	pc        *gophercloud.ProviderClient
	base      string // the storage URL, ending in "/"
	container string
	source    string // where the credentials came from, for messages
}

func newConn(pc *gophercloud.ProviderClient, storageURL, container, source string) *conn {
	if !strings.HasSuffix(storageURL, "/") {
		storageURL += "/"
	}
	return &conn{pc: pc, base: storageURL, container: container, source: source}
}

func (c *conn) storageURL() string { return strings.TrimSuffix(c.base, "/") }

// redactedURL is the storage URL without its query (there is none in
// practice): safe to show.
func (c *conn) redactedURL() string {
	u, err := url.Parse(c.storageURL())
	if err != nil {
		return "the storage URL"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}

// req is one request to the account, the container or an object.
type req struct {
	method    string
	key       string // object key, unless container or account
	container bool   // the container itself
	account   bool   // the account itself
	query     url.Values
	header    map[string]string
	// body is nil, a *bytes.Reader (sent again after a renewed token), or
	// a stream (stream true): sent once, with chunked transfer encoding,
	// the final chunk only after the stream's io.EOF.
	body   io.Reader
	stream bool
	ok     []int // statuses that succeed (default: 2xx)
}

// objectURL returns the URL of the container, or of one of its objects.
func (c *conn) url(r req) string {
	u := c.base
	if !r.account {
		u += escapePath(c.container)
		if !r.container {
			u += "/" + escapePath(r.key)
		}
	}
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	return u
}

// escapePath escapes what a key may hold beyond unreserved characters,
// slashes and colons.
func escapePath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("-._~/:", ch) >= 0 {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

// statusError is an answer of Swift the driver has no sentinel for.
type statusError struct {
	method, what string
	status       int
	body         string
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s %s: Swift answered %d", e.method, e.what, e.status)
	if e.body != "" {
		msg += ": " + e.body
	}
	return msg
}

// do sends r. On success it returns the response, whose body the caller
// closes. Otherwise the error wraps storage.ErrNotFound (404),
// storage.ErrUnavailable (no answer, 5xx, 429, 498, a token that expired
// under a streamed body) or is a *statusError; a context that ended is
// returned as such.
func (c *conn) do(ctx context.Context, r req) (*http.Response, error) {
	what := "object " + r.key
	switch {
	case r.account:
		what = "the account"
	case r.container:
		what = "container " + c.container
	}
	for attempt := 0; ; attempt++ {
		if r.body != nil && attempt > 0 {
			br, ok := r.body.(*bytes.Reader)
			if !ok {
				return nil, fmt.Errorf("%s %s: %w: the token expired during a streamed request", r.method, what, storage.ErrUnavailable)
			}
			if _, err := br.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
		}
		hreq, err := http.NewRequestWithContext(ctx, r.method, c.url(r), r.body)
		if err != nil {
			return nil, err
		}
		if r.stream {
			// Chunked: Swift keeps nothing of a body whose last chunk
			// never came.
			hreq.ContentLength = -1
		}
		for k, v := range r.header {
			hreq.Header.Set(k, v)
		}
		hreq.Header.Set("User-Agent", "imagegate-registry")
		for k, v := range c.pc.AuthenticatedHeaders() {
			hreq.Header.Set(k, v)
		}
		token := hreq.Header.Get("X-Auth-Token")
		resp, err := c.pc.HTTPClient.Do(hreq)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", r.method, what, ctx.Err())
			}
			return nil, fmt.Errorf("%s %s: %w: %v", r.method, what, storage.ErrUnavailable, netError(err))
		}
		if accepted(resp.StatusCode, r.ok) {
			return resp, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		switch status := resp.StatusCode; {
		case status == http.StatusUnauthorized && attempt == 0 && c.pc.ReauthFunc != nil:
			if err := c.pc.Reauthenticate(ctx, token); err != nil {
				return nil, fmt.Errorf("%s %s: the token was refused and renewing it failed (%s): %w: %v", r.method, what, c.source, storage.ErrUnavailable, err)
			}
			continue
		case status == http.StatusNotFound:
			return nil, fmt.Errorf("%s %s: %w", r.method, what, storage.ErrNotFound)
		case status >= 500 || status == http.StatusTooManyRequests || status == 498:
			return nil, fmt.Errorf("%s %s: %w: Swift answered %d", r.method, what, storage.ErrUnavailable, status)
		default:
			return nil, &statusError{method: r.method, what: what, status: status, body: shortBody(body)}
		}
	}
}

func accepted(status int, ok []int) bool {
	if len(ok) == 0 {
		return status/100 == 2
	}
	for _, s := range ok {
		if s == status {
			return true
		}
	}
	return false
}

// shortBody keeps the text of an error page, without its markup.
func shortBody(b []byte) string {
	s := string(b)
	var out strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
			out.WriteByte(' ')
		case !in:
			out.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(out.String()), " ")
}

// netError describes a transport error without the request's URL (a temp
// URL is a credential; a storage URL is merely long).
func netError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}

// status returns the HTTP status of a *statusError in err, 0 otherwise.
func status(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.status
	}
	return 0
}

// closeBody drains a little and closes, so the connection is reused.
func closeBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
}

// putBytes writes a small object in one request.
func (d *Driver) putBytes(ctx context.Context, key string, body []byte, header map[string]string) error {
	h := map[string]string{"Content-Type": "application/octet-stream"}
	for k, v := range header {
		h[k] = v
	}
	resp, err := d.conn.do(ctx, req{method: http.MethodPut, key: key, body: bytes.NewReader(body), header: h})
	if err != nil {
		return err
	}
	closeBody(resp)
	return nil
}

// getBytes reads a small object (at most limit bytes) with X-Newest, so
// that a replica that missed the last write is not believed.
func (d *Driver) getBytes(ctx context.Context, key string, limit int64) ([]byte, http.Header, error) {
	resp, err := d.conn.do(ctx, req{method: http.MethodGet, key: key, header: map[string]string{"X-Newest": "true"}})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, fmt.Errorf("reading object %s: %w: %v", key, storage.ErrUnavailable, err)
	}
	return b, resp.Header, nil
}

// head returns the headers of an object.
func (d *Driver) head(ctx context.Context, key string, newest bool) (http.Header, error) {
	r := req{method: http.MethodHead, key: key}
	if newest {
		r.header = map[string]string{"X-Newest": "true"}
	}
	resp, err := d.conn.do(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp.Header, nil
}

// deleteObject deletes one object (ErrNotFound when missing).
func (d *Driver) deleteObject(ctx context.Context, key string) error {
	resp, err := d.conn.do(ctx, req{method: http.MethodDelete, key: key})
	if err != nil {
		return err
	}
	closeBody(resp)
	return nil
}

// deleteAll deletes objects, logging failures other than "missing".
func (d *Driver) deleteAll(ctx context.Context, keys []string) {
	_ = storage.ForEach(ctx, d.parallel, keys, func(ctx context.Context, _ int, k string) error {
		if err := d.deleteObject(ctx, k); err != nil && !errors.Is(err, storage.ErrNotFound) {
			d.log.Warn("deleting an object failed", "key", k, "error", err)
		}
		return nil
	})
}

// entry is one line of a container listing: an object, or (with a
// delimiter) a subdir.
type entry struct {
	Name         string `json:"name"`
	Bytes        int64  `json:"bytes"`
	Hash         string `json:"hash"`
	LastModified string `json:"last_modified"`
	Subdir       string `json:"subdir"`
}

// modTime parses the listing's last_modified (UTC, microseconds).
func (e entry) modTime() time.Time {
	t, err := time.Parse("2006-01-02T15:04:05.999999", e.LastModified)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// listing is one container listing request.
type listing struct {
	prefix, delimiter, marker string
	limit                     int
}

// maxListing is Swift's default (and largest) page of a listing.
const maxListing = 10000

// list returns one page of the container's listing.
func (d *Driver) list(ctx context.Context, l listing) ([]entry, error) {
	q := url.Values{"format": {"json"}}
	if l.prefix != "" {
		q.Set("prefix", l.prefix)
	}
	if l.delimiter != "" {
		q.Set("delimiter", l.delimiter)
	}
	if l.marker != "" {
		q.Set("marker", l.marker)
	}
	if l.limit > 0 {
		q.Set("limit", strconv.Itoa(l.limit))
	}
	resp, err := d.conn.do(ctx, req{method: http.MethodGet, container: true, query: q})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var out []entry
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("listing %s: %w: %v", l.prefix, storage.ErrUnavailable, err)
	}
	return out, nil
}

// listAll calls fn for every entry of the listing under prefix, page by
// page, starting after marker.
func (d *Driver) listAll(ctx context.Context, prefix, delimiter, marker string, fn func(entry) error) error {
	for {
		page, err := d.list(ctx, listing{prefix: prefix, delimiter: delimiter, marker: marker, limit: maxListing})
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < maxListing {
			return nil
		}
		last := page[len(page)-1]
		marker = last.Name
		if last.Subdir != "" {
			marker = last.Subdir
		}
	}
}

// timestamp reads X-Timestamp (seconds, with fractions), falling back to
// Last-Modified.
func timestamp(h http.Header) time.Time {
	if ts := h.Get("X-Timestamp"); ts != "" {
		if f, err := strconv.ParseFloat(ts, 64); err == nil {
			sec := int64(f)
			return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()
		}
	}
	t, _ := http.ParseTime(h.Get("Last-Modified"))
	return t.UTC()
}
