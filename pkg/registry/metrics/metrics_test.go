package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/storagetest"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/metrics"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// TestDriverConformance runs the storage suite through the metered
// decorator: it must forward every call unchanged.
func TestDriverConformance(t *testing.T) {
	m := metrics.New()
	// The suite's subtests are parallel: they run after this function
	// returns, and before its cleanups.
	t.Cleanup(func() {
		if !strings.Contains(m.Text(), `imagegate_registry_storage_operations_total{operation="put_blob"}`) {
			t.Error("storage operations were not counted")
		}
	})
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		root := t.TempDir()
		return func(t *testing.T) storage.Driver {
			d, err := filesystem.New(root)
			if err != nil {
				t.Fatal(err)
			}
			return m.Driver(d)
		}
	})
}

// sampleRE is a sample line of the text format.
var sampleRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? [-+0-9.eEInfNa]+$`)

func value(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, text)
	return 0
}

// TestHandler pushes and pulls a blob through the instrumented registry and
// checks the exposition: valid lines, requests by route and status, bytes
// in and out, the upload histogram, and storage errors once the storage
// fails.
func TestHandler(t *testing.T) {
	root := t.TempDir()
	fs, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	reg, err := registry.New(m.Driver(fs), registry.WithUsers(registry.User{Name: "u", Password: "p", Access: registry.AccessWrite}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler(reg))
	defer srv.Close()
	do := func(method, path string, body []byte) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		req.SetBasicAuth("u", "p")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	blob := bytes.Repeat([]byte("x"), 12345)
	dg := digest.FromBytes(blob)
	if r := do("POST", "/v2/team/app/blobs/uploads/?digest="+dg.String(), blob); r.StatusCode != 201 {
		t.Fatalf("push: %d", r.StatusCode)
	}
	if r := do("GET", "/v2/team/app/blobs/"+dg.String(), nil); r.StatusCode != 200 {
		t.Fatalf("pull: %d", r.StatusCode)
	}
	do("GET", "/v2/team/app/manifests/nope", nil)

	text := m.Text()
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(line, "# ") && !sampleRE.MatchString(line) {
			t.Errorf("invalid exposition line %q", line)
		}
	}
	checks := map[string]float64{
		`imagegate_registry_requests_total{route="uploads",method="POST",status="201"}`: 1,
		`imagegate_registry_requests_total{route="blob",method="GET",status="200"}`:     1,
		`imagegate_registry_requests_total{route="manifest",method="GET",status="404"}`: 1,
		`imagegate_registry_request_bytes_total{route="uploads"}`:                       12345,
		`imagegate_registry_response_bytes_total{route="blob"}`:                         12345,
		`imagegate_registry_upload_duration_seconds_count{method="POST"}`:               1,
		`imagegate_registry_upload_duration_seconds_bucket{method="POST",le="+Inf"}`:    1,
		`imagegate_registry_request_duration_seconds_count{route="blob",method="GET"}`:  1,
		`imagegate_registry_storage_operations_total{operation="put_blob"}`:             1,
		`imagegate_registry_inflight_requests`:                                          0,
	}
	for series, want := range checks {
		if got := value(t, text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if strings.Contains(text, "storage_errors_total{") {
		t.Fatalf("storage errors counted while the storage worked:\n%s", text)
	}

	// Break the storage: the blobs directory becomes a file.
	if err := os.RemoveAll(filepath.Join(root, "blobs")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "blobs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := []byte("other content")
	r := do("POST", "/v2/team/app/blobs/uploads/?digest="+digest.FromBytes(other).String(), other)
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("push to broken storage: %d, want 503", r.StatusCode)
	}
	text = m.Text()
	if got := value(t, text, `imagegate_registry_storage_errors_total{operation="put_blob",kind="error"}`); got != 1 {
		t.Errorf("put_blob errors = %v, want 1", got)
	}
	if got := value(t, text, `imagegate_registry_requests_total{route="uploads",method="POST",status="503"}`); got != 1 {
		t.Errorf("503 answers = %v, want 1", got)
	}
}

// TestDigestMismatchIsNotAStorageError checks that a client's bad content
// is not counted against the store.
func TestDigestMismatchIsNotAStorageError(t *testing.T) {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	d := m.Driver(fs)
	wrong := digest.FromString("something else")
	err = d.PutBlob(t.Context(), wrong, 5, &failing{r: strings.NewReader("hello")})
	if err == nil {
		t.Fatal("PutBlob succeeded")
	}
	if strings.Contains(m.Text(), "storage_errors_total{") {
		t.Fatalf("a reader failure was counted as a storage error:\n%s", m.Text())
	}
}

var errBadContent = errors.New("bad content")

type failing struct{ r io.Reader }

func (f *failing) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errBadContent
	}
	return n, err
}

// chunky and urler add the optional driver interfaces to a driver.
type chunky struct{ storage.Driver }

func (chunky) ChunkMinLength() int64 { return 42 }

type urler struct{ storage.Driver }

func (urler) BlobURL(_ context.Context, d digest.Digest, method string) (string, error) {
	if method != http.MethodGet {
		return "", errors.New("only GET")
	}
	return "https://store.example/" + d.Encoded(), nil
}

// TestDriverOptionalInterfaces checks that the metered driver implements
// storage.ChunkMinLengther and storage.BlobURLer exactly when the driver
// it wraps does, forwards them, and counts blob URLs.
func TestDriverOptionalInterfaces(t *testing.T) {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		d            storage.Driver
		chunks, urls bool
	}{
		{"neither", fs, false, false},
		{"chunk minimum", chunky{fs}, true, false},
		{"blob URLs", urler{fs}, false, true},
		{"both", struct {
			storage.Driver
			storage.ChunkMinLengther
			storage.BlobURLer
		}{fs, chunky{fs}, urler{fs}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			d := m.Driver(tc.d)
			c, chunks := d.(storage.ChunkMinLengther)
			u, urls := d.(storage.BlobURLer)
			if chunks != tc.chunks || urls != tc.urls {
				t.Fatalf("ChunkMinLengther %v, BlobURLer %v; want %v, %v", chunks, urls, tc.chunks, tc.urls)
			}
			if chunks && c.ChunkMinLength() != 42 {
				t.Errorf("ChunkMinLength %d, want 42", c.ChunkMinLength())
			}
			if !urls {
				return
			}
			dg := digest.FromString("x")
			if got, err := u.BlobURL(t.Context(), dg, http.MethodGet); err != nil || got != "https://store.example/"+dg.Encoded() {
				t.Errorf("BlobURL: %q, %v", got, err)
			}
			if _, err := u.BlobURL(t.Context(), dg, http.MethodHead); err == nil {
				t.Error("BlobURL did not forward the error")
			}
			text := m.Text()
			if v := value(t, text, `imagegate_registry_storage_operations_total{operation="blob_url"}`); v != 2 {
				t.Errorf("blob_url operations %v, want 2", v)
			}
			if v := value(t, text, `imagegate_registry_storage_errors_total{operation="blob_url",kind="error"}`); v != 1 {
				t.Errorf("blob_url errors %v, want 1", v)
			}
		})
	}
}
