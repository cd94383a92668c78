package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	rg, err := New(drv, WithUsers(User{Name: "zuul", Password: "pw", Access: AccessWrite}), withClock(clock), WithTokenTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	grants := []grant{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}
	tok, _ := rg.issueToken(principal{name: "zuul", access: AccessWrite, grants: grants})
	if p, ok := rg.verifyToken(tok); !ok || p.name != "zuul" || !p.token || !reflect.DeepEqual(p.grants, grants) {
		t.Fatalf("fresh token: %+v, %v", p, ok)
	}
	now = now.Add(59 * time.Second)
	if _, ok := rg.verifyToken(tok); !ok {
		t.Fatal("token refused before its expiry")
	}
	now = now.Add(time.Second)
	if _, ok := rg.verifyToken(tok); ok {
		t.Fatal("expired token accepted")
	}
	// A changed payload (more access, later expiry) breaks the signature.
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2]
	if _, ok := rg.verifyToken(forged); ok {
		t.Fatal("forged token accepted")
	}
	for _, bad := range []string{"", "a.b", "a.b.c", parts[0] + ".." + parts[2]} {
		if _, ok := rg.verifyToken(bad); ok {
			t.Fatalf("token %q accepted", bad)
		}
	}
}

func TestScopeAccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scopes    []string
		need      Access
		requested bool
	}{
		{nil, AccessRead, false},
		{[]string{"repository:a/b:pull"}, AccessRead, true},
		{[]string{"repository:a/b:pull,push"}, AccessWrite, true},
		{[]string{"repository:a/b:pull repository:c:push"}, AccessWrite, true},
		{[]string{"repository:a:pull", "repository:b:delete"}, AccessWrite, true},
		{[]string{"repository:host:5000/a:pull"}, AccessRead, true},
		{[]string{"repository:host:5000/a:*"}, AccessWrite, true},
		{[]string{"registry:catalog:*"}, AccessRead, true},
	} {
		need, requested := scopeAccess(tc.scopes)
		if need != tc.need || requested != tc.requested {
			t.Errorf("scopeAccess(%q) = %s, %v; want %s, %v", tc.scopes, need, requested, tc.need, tc.requested)
		}
	}
}

func TestParseRoute(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: routeBase}},
		{"/v2/_catalog", route{kind: routeCatalog}},
		{"/auth/token", route{kind: routeToken}},
		{"/v2/a/blobs/uploads/", route{kind: routeUploads, name: "a"}},
		{"/v2/a/b/blobs/uploads", route{kind: routeUploads, name: "a/b"}},
		{"/v2/a/blobs/uploads/id", route{kind: routeUpload, name: "a", ref: "id"}},
		{"/v2/a/blobs/sha256:x", route{kind: routeBlob, name: "a", ref: "sha256:x"}},
		{"/v2/blobs/uploads/x/blobs/d", route{kind: routeBlob, name: "blobs/uploads/x", ref: "d"}},
		{"/v2/a/manifests/b/manifests/latest", route{kind: routeManifest, name: "a/manifests/b", ref: "latest"}},
		{"/v2/a/blobs/manifests/latest", route{kind: routeManifest, name: "a/blobs", ref: "latest"}},
		{"/v2/tags/tags/list", route{kind: routeTags, name: "tags"}},
		{"/v2/a/referrers/sha256:x", route{kind: routeReferrers, name: "a", ref: "sha256:x"}},
	} {
		got, err := parseRoute(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
		}
	}
	for _, p := range []string{"/", "/v1/", "/v2/a", "/v2/a/tags", "/v2/manifests/x", "/v2/../x/tags/list"} {
		if _, err := parseRoute(p); err == nil {
			t.Errorf("parseRoute(%q) succeeded", p)
		}
	}
}

// failingDriver fails every storage call after the wrapped driver with
// errOutage, as a store in an outage does, or with err when set.
type failingDriver struct {
	storage.Driver
	fail bool
	err  error
}

func (f *failingDriver) failure() error {
	if f.err != nil {
		return f.err
	}
	return errOutage
}

var errOutage = errors.New("connection refused by /secret/path/on/server")

func (f *failingDriver) GetEntry(ctx context.Context, repo string, table storage.Table, key string) ([]byte, error) {
	if f.fail {
		return nil, f.failure()
	}
	return f.Driver.GetEntry(ctx, repo, table, key)
}

func (f *failingDriver) NewUpload(ctx context.Context, repo string, state []byte) (storage.Upload, error) {
	if f.fail {
		return storage.Upload{}, f.failure()
	}
	return f.Driver.NewUpload(ctx, repo, state)
}

func (f *failingDriver) AppendUpload(ctx context.Context, id string, offset, length int64, r io.Reader, state func(int64) ([]byte, error)) (storage.Upload, error) {
	if f.fail {
		io.Copy(io.Discard, r)
		return storage.Upload{}, f.failure()
	}
	return f.Driver.AppendUpload(ctx, id, offset, length, r, state)
}

func (f *failingDriver) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if f.fail {
		io.Copy(io.Discard, r)
		return f.failure()
	}
	return f.Driver.PutBlob(ctx, d, size, r)
}

// TestStorageFailuresAreRetryable checks that a storage outage is answered
// with the spec envelope, 503 and Retry-After, without the cause (which may
// name server paths) in the body.
func TestStorageFailuresAreRetryable(t *testing.T) {
	t.Parallel()
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	drv := &failingDriver{Driver: fs}
	rg, err := New(drv, WithUsers(User{Name: "zuul", Password: "pw", Access: AccessWrite}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rg)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/v2/team/app/blobs/uploads/", nil)
	req.SetBasicAuth("zuul", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	drv.fail = true
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v2/team/app/manifests/latest", ""},
		{"GET", "/v2/team/app/blobs/" + digest.FromString("x").String(), ""},
		{"POST", "/v2/team/app/blobs/uploads/", ""},
		{"POST", "/v2/team/app/blobs/uploads/?digest=" + digest.FromString("abc").String(), "abc"},
		{"PATCH", loc, "some bytes"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.SetBasicAuth("zuul", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"code":"UNAVAILABLE"`) {
			t.Errorf("%s %s in an outage: %d (Retry-After %q) %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		if strings.Contains(string(b), "/secret/path") {
			t.Errorf("%s %s: the storage error's cause reached the client: %s", tc.method, tc.path, b)
		}
	}
}

// TestFullStorageIsFinal: a store that is out of space (the driver's
// storage.ErrNoSpace, here wrapping a real ENOSPC) is answered with 507
// Insufficient Storage and DENIED, saying so, without Retry-After: a
// retry cannot succeed until someone frees space, and clients that honour
// Retry-After would otherwise retry forever.
func TestFullStorageIsFinal(t *testing.T) {
	t.Parallel()
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	full := &os.PathError{Op: "write", Path: "/secret/path/blob-123", Err: syscall.ENOSPC}
	drv := &failingDriver{Driver: fs, err: fmt.Errorf("writing blob: %w: %w", storage.ErrNoSpace, full)}
	rg, err := New(drv, WithUsers(User{Name: "zuul", Password: "pw", Access: AccessWrite}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rg)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/v2/team/app/blobs/uploads/", nil)
	req.SetBasicAuth("zuul", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	drv.fail = true
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v2/team/app/blobs/uploads/", ""},
		{"POST", "/v2/team/app/blobs/uploads/?digest=" + digest.FromString("abc").String(), "abc"},
		{"PATCH", loc, "some bytes"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.SetBasicAuth("zuul", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInsufficientStorage || resp.Header.Get("Retry-After") != "" ||
			!strings.Contains(string(b), `"code":"DENIED"`) || !strings.Contains(string(b), "no space left on the registry's storage") {
			t.Errorf("%s %s on a full store: %d (Retry-After %q) %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		if strings.Contains(string(b), "/secret/path") {
			t.Errorf("%s %s: the storage error's cause reached the client: %s", tc.method, tc.path, b)
		}
	}
}

func TestParseScopesAndGrants(t *testing.T) {
	t.Parallel()
	got := parseScopes([]string{"repository:a/b:pull repository:host:5000/c:pull,push", "repository:a/b:push,pull", "registry:catalog:*",
		"repository(plugin):p:pull", "nonsense", "repository::pull"})
	want := []grant{
		{Type: "repository", Name: "a/b", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "host:5000/c", Actions: []string{"pull", "push"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseScopes = %+v\nwant %+v", got, want)
	}
	// A reader gets the pulls; the invalid name and the unknown resource
	// and action are left out.
	req := append(want, grant{Type: "repository", Name: "Bad Name", Actions: []string{"pull"}},
		grant{Type: "user", Name: "x", Actions: []string{"pull"}}, grant{Type: "repository", Name: "d", Actions: []string{"sudo"}})
	if g := grantable(req, AccessRead); !reflect.DeepEqual(g, []grant{
		{Type: "repository", Name: "a/b", Actions: []string{"pull"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}) {
		t.Errorf("grantable(read) = %+v", g)
	}
	// host:5000/c is not a repository name of this registry (names carry
	// no host).
	if g := grantable(req, AccessWrite); !reflect.DeepEqual(g, []grant{want[0], want[2]}) {
		t.Errorf("grantable(write) = %+v", g)
	}
	// Coverage: push covers delete; * covers everything; nothing else
	// crosses repositories or actions.
	gs := []grant{{Type: "repository", Name: "a", Actions: []string{"push"}}, {Type: "repository", Name: "b", Actions: []string{"*"}}}
	for _, tc := range []struct {
		q    requirement
		want bool
	}{
		{requirement{"repository", "a", "push"}, true},
		{requirement{"repository", "a", "delete"}, true},
		{requirement{"repository", "a", "pull"}, false},
		{requirement{"repository", "b", "pull"}, true},
		{requirement{"repository", "b", "delete"}, true},
		{requirement{"repository", "c", "pull"}, false},
		{requirement{"registry", "catalog", "*"}, false},
	} {
		if got := covers(gs, tc.q); got != tc.want {
			t.Errorf("covers(%+v) = %v", tc.q, got)
		}
	}
}

func TestParseRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h          string
		size       int64
		start, end int64
		ok, err    bool
	}{
		{"bytes=0-0", 10, 0, 0, true, false},
		{"bytes=0-", 10, 0, 9, true, false},
		{"bytes=-3", 10, 7, 9, true, false},
		{"bytes=-30", 10, 0, 9, true, false},
		{"bytes=5-100", 10, 5, 9, true, false},
		{"bytes=10-", 10, 0, 0, false, true},
		{"bytes=-1", 0, 0, 0, false, true},
		{"bytes=3-2", 10, 0, 0, false, true},
		{"bytes=x-2", 10, 0, 0, false, true},
		{"bytes=1", 10, 0, 0, false, true},
		{"bytes=0-1,3-4", 10, 0, 0, false, false},
		{"lines=0-1", 10, 0, 0, false, false},
	} {
		start, end, ok, err := parseRange(tc.h, tc.size)
		if start != tc.start || end != tc.end || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v, %v", tc.h, tc.size, start, end, ok, err)
		}
	}
}

func TestRouteNames(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"/v2/":                        "base",
		"/auth/token":                 "token",
		"/v2/a/b/manifests/latest":    "manifest",
		"/v2/a/blobs/uploads/":        "uploads",
		"/v2/a/blobs/uploads/x":       "upload",
		"/v2/Bad/manifests/latest":    "manifest",
		"/metrics":                    "unknown",
		"/v2/a/things/x":              "unknown",
		"/v2/a/referrers/sha256:abcd": "referrers",
	} {
		if got := Route(path); got != want {
			t.Errorf("Route(%q) = %q, want %q", path, got, want)
		}
	}
}
