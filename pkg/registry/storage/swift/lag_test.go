package swift

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry/prune"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// laggingTransport makes container listings lag behind deletes, as Swift's
// do when a container server misses an update (it is applied later from
// the object server's async pending queue): every object deleted through
// it keeps showing up in listings of its prefix.
type laggingTransport struct {
	base     http.RoundTripper
	mu       sync.Mutex
	deleted  map[string]bool // object names
	injected int
}

func (l *laggingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	// /v1/<account>/<container>[/<object>]
	parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/"), "/", 4)
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodDelete && len(parts) == 4 && resp.StatusCode < 300:
		l.mu.Lock()
		l.deleted[parts[3]] = true
		l.mu.Unlock()
	case req.Method == http.MethodGet && len(parts) == 3 && q.Get("format") == "json" && q.Get("delimiter") == "" && resp.StatusCode == 200:
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		var list []entry
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, err
		}
		limit := maxListing
		if v := q.Get("limit"); v != "" {
			json.Unmarshal([]byte(v), &limit)
		}
		if len(list) < limit {
			listed := map[string]bool{}
			for _, e := range list {
				listed[e.Name] = true
			}
			l.mu.Lock()
			for k := range l.deleted {
				if strings.HasPrefix(k, q.Get("prefix")) && k > q.Get("marker") && !listed[k] {
					list = append(list, entry{Name: k, LastModified: time.Now().UTC().Format("2006-01-02T15:04:05.000000")})
					l.injected++
				}
			}
			l.mu.Unlock()
			slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
		}
		b, _ = json.Marshal(list)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Del("Content-Length")
	}
	return resp, nil
}

// TestLaggingListings runs the driver on listings that keep deleted
// objects: tags, the catalog and prune must not resurrect them.
func TestLaggingListings(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	lag := &laggingTransport{base: sw.HTTPClient().Transport, deleted: map[string]bool{}}
	d := newDriver(t, v1Config(t, sw), WithTransport(lag))
	ctx := t.Context()

	for _, tag := range []string{"a", "b", "c"} {
		if err := d.PutEntry(ctx, "team/app", storage.Tags, tag, []byte("sha256:x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.DeleteEntry(ctx, "team/app", storage.Tags, "b"); err != nil {
		t.Fatal(err)
	}
	es, err := d.ListEntries(ctx, "team/app", storage.Tags, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(es); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("ListEntries = %v, want [a c]", got)
	}
	if es, _ := d.ListEntries(ctx, "team/app", storage.Tags, "a", 1); !slices.Equal(keysOf(es), []string{"c"}) {
		t.Fatalf("ListEntries after a, n=1 = %v, want [c]", keysOf(es))
	}
	for _, repo := range []string{"gone", "kept"} {
		if err := d.PutEntry(ctx, repo, storage.Manifests, "sha256:m", []byte("mt")); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.DeleteEntry(ctx, "gone", storage.Manifests, "sha256:m"); err != nil {
		t.Fatal(err)
	}
	names, err := d.Repositories(ctx, "", -1)
	if err != nil || !slices.Equal(names, []string{"kept"}) {
		t.Fatalf("Repositories = %v, %v; want [kept]", names, err)
	}
	content := []byte("deleted blob")
	dg := digest.FromBytes(content)
	if err := d.PutBlob(ctx, dg, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteBlob(ctx, dg); err != nil {
		t.Fatal(err)
	}
	rep, err := prune.Run(context.Background(), d, prune.Policy{GracePeriod: -1})
	if err != nil {
		t.Fatalf("prune on lagging listings: %v", err)
	}
	if rep.Blobs != 0 || rep.Repositories != 1 {
		t.Fatalf("prune on lagging listings: %s; want 1 repository, 0 blobs", rep)
	}
	if lag.injected == 0 {
		t.Fatal("the transport injected no stale name: the test proves nothing")
	}
	t.Logf("%d stale names injected into listings", lag.injected)
}

func keysOf(es []storage.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

// TestBlobURL signs temp URLs for a plain and a large (SLO) blob and
// fetches them without credentials: the whole blob, a range, a HEAD; an
// edited URL is refused, and so is an expired one. The temp URL key is
// set on the container from the configuration.
func TestBlobURL(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	cfg := v1Config(t, sw)
	if _, err := New(t.Context(), Config{Container: cfg.Container, Auth: cfg.Auth, CAFile: cfg.CAFile, Redirect: true}); err == nil ||
		!strings.Contains(err.Error(), "temp_url_key") {
		t.Fatalf("New with redirect and no key anywhere: %v, want an error naming temp_url_key", err)
	}
	cfg.Redirect, cfg.TempURLKey, cfg.URLExpiry = true, "k-"+testenv.RandomString(t, 16), 3*time.Second
	d := newDriver(t, cfg)
	if _, h, _ := sw.Do(t, http.MethodHead, "/"+cfg.Container, nil, nil); h.Get("X-Container-Meta-Temp-Url-Key") != cfg.TempURLKey {
		t.Fatal("the temp URL key was not set on the container")
	}
	client := &http.Client{Transport: sw.HTTPClient().Transport}
	for _, size := range []int{1000, 2*MinSegmentSize + 5} {
		content := randomBytes(t, size)
		dg := digest.FromBytes(content)
		if err := d.PutBlob(t.Context(), dg, -1, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		get, err := d.BlobURL(t.Context(), dg, http.MethodGet)
		if err != nil {
			t.Fatal(err)
		}
		if status, body := fetch(t, client, http.MethodGet, get, ""); status != 200 || !bytes.Equal(body, content) {
			t.Errorf("GET of %d bytes: %d, %d bytes", size, status, len(body))
		}
		if status, body := fetch(t, client, http.MethodGet, get, "bytes=10-19"); status != 206 || !bytes.Equal(body, content[10:20]) {
			t.Errorf("ranged GET: %d %q", status, body)
		}
		head, _ := d.BlobURL(t.Context(), dg, http.MethodHead)
		if status, _ := fetch(t, client, http.MethodHead, head, ""); status != 200 {
			t.Errorf("HEAD: %d", status)
		}
		u, _ := url.Parse(get)
		q := u.Query()
		q.Set("temp_url_expires", q.Get("temp_url_expires")+"0")
		u.RawQuery = q.Encode()
		if status, _ := fetch(t, client, http.MethodGet, u.String(), ""); status != http.StatusUnauthorized {
			t.Errorf("GET of an edited URL: %d, want 401", status)
		}
		if size > MinSegmentSize {
			testenv.WaitFor(t, "the URL to expire", 30*time.Second, nil, func() error {
				if status, _ := fetch(t, client, http.MethodGet, get, ""); status != http.StatusUnauthorized {
					return fmt.Errorf("GET answers %d, want 401", status)
				}
				return nil
			})
		}
	}
}

func fetch(t *testing.T, c *http.Client, method, u, rng string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
