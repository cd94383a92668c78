package swift

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/storagetest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// v1Config is a configuration for a new container of sw, with tempauth.
func v1Config(t testing.TB, sw *testenv.Swift) Config {
	return Config{Container: sw.NewContainerName(t), CAFile: sw.CAFile, SegmentSize: MinSegmentSize,
		Auth: Auth{AuthURL: sw.AuthURL, User: sw.User, Key: sw.Key}}
}

func newDriver(t testing.TB, cfg Config, opts ...Option) *Driver {
	t.Helper()
	d, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformance runs the storage conformance suite on a real Swift
// (tempauth): every subtest gets its own container, created by the
// driver, and its Opener a new driver on it. Segments of 1 MiB make the
// suite's larger blobs and chunks static large objects.
func TestConformance(t *testing.T) {
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		cfg := v1Config(t, sw)
		return func(t *testing.T) storage.Driver { return newDriver(t, cfg) }
	})
}

// TestNewRefusesBadSettings checks that New names the setting or cause to
// fix for wrong credentials, a container the user may only read, an
// unreachable endpoint and a missing cloud, and never repeats the key.
func TestNewRefusesBadSettings(t *testing.T) {
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	good := v1Config(t, sw)
	// A container the limited user may read (ACL) but not write.
	readOnly := sw.CreateContainer(t, map[string]string{"X-Container-Read": "imagegate:limited"})
	clouds := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(clouds, []byte("clouds:\n  other:\n    auth:\n      auth_url: https://127.0.0.1:1/v3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"missing container", func(c *Config) { c.Container = "" }, []string{"container is not set"}},
		{"wrong key", func(c *Config) { c.Auth.Key = "wrong" + c.Auth.Key }, []string{"refused the credentials", "check user and key"}},
		{"unknown user", func(c *Config) { c.Auth.User = "imagegate:nobody" }, []string{"refused the credentials"}},
		{"read-only container", func(c *Config) {
			c.Container, c.Auth.User, c.Auth.Key = readOnly, sw.LimitedUser, sw.LimitedKey
		}, []string{readOnly, "no write access", "ACLs"}},
		{"no access at all", func(c *Config) { c.Auth.User, c.Auth.Key = sw.LimitedUser, sw.LimitedKey }, []string{"refused"}},
		{"unreachable", func(c *Config) {
			c.Auth.AuthURL = "https://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/auth/v1.0"
		}, []string{"check auth_url"}},
		{"missing cloud", func(c *Config) { c.Auth = Auth{Cloud: "nope", CloudsFile: clouds} }, []string{`cloud "nope"`, "not found"}},
		{"no clouds.yaml", func(c *Config) { c.Auth = Auth{Cloud: "nope", CloudsFile: clouds + ".missing"} }, []string{"no clouds.yaml"}},
		{"segment size", func(c *Config) { c.SegmentSize = 1 << 10 }, []string{"segment size"}},
		{"no credentials", func(c *Config) { c.Auth = Auth{} }, []string{"no credentials"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(t.Context(), cfg, WithGetenv(func(string) string { return "" }))
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{sw.Key, sw.LimitedKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a key", err)
				}
			}
		})
	}
	// The container is created, private, when missing.
	d := newDriver(t, good)
	status, h, _ := sw.Do(t, http.MethodHead, "/"+d.Container(), nil, nil)
	if status != http.StatusNoContent || h.Get("X-Container-Read") != "" {
		t.Errorf("created container: %d, X-Container-Read %q; want 204 and none", status, h.Get("X-Container-Read"))
	}
	resp, err := sw.HTTPClient().Get(d.StorageURL() + "/" + d.Container() + "?format=json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous listing of the created container: %d, want 401", resp.StatusCode)
	}
}

// TestLargeBlobs writes blobs through both paths: known sizes up to the
// segment size stream to one object; larger or unknown sizes become a
// static large object whose segments go when the blob is deleted.
func TestLargeBlobs(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	d := newDriver(t, v1Config(t, sw))
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		size  int
		known bool
		slo   bool
	}{
		{"one object", MinSegmentSize, true, false},
		{"segments", 3*MinSegmentSize + 17, true, true},
		{"unknown size", MinSegmentSize / 2, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := randomBytes(t, tc.size)
			dg := digest.FromBytes(content)
			size := int64(tc.size)
			if !tc.known {
				size = -1
			}
			if err := d.PutBlob(ctx, dg, size, bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			key, _ := blobKey(dg)
			h, err := d.head(ctx, key, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Get("X-Static-Large-Object") == "True" || h.Get("X-Static-Large-Object") == "true"; got != tc.slo {
				t.Errorf("static large object: %v, want %v", got, tc.slo)
			}
			rc, err := d.OpenBlob(ctx, dg, int64(tc.size)-100, 50)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, content[tc.size-100:tc.size-50]) {
				t.Fatal("range read back wrong")
			}
			var sizes []int64
			if err := d.WalkBlobs(ctx, func(b storage.BlobInfo) error {
				if b.Digest == dg {
					sizes = append(sizes, b.Size)
				}
				return nil
			}); err != nil || len(sizes) != 1 || sizes[0] != int64(tc.size) {
				t.Fatalf("WalkBlobs sizes %v (%v), want [%d]", sizes, err, tc.size)
			}
			if err := d.DeleteBlob(ctx, dg); err != nil {
				t.Fatal(err)
			}
			if n := countObjects(t, d, "segments/"); n != 0 {
				t.Errorf("%d segment objects left after DeleteBlob", n)
			}
		})
	}
}

// countObjects counts the objects under a prefix of the container.
func countObjects(t *testing.T, d *Driver, prefix string) int {
	t.Helper()
	n := 0
	if err := d.listAll(t.Context(), prefix, "", "", func(entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOutageLeavesNothing stops the Swift proxy in the middle of a large
// PutBlob (both paths) and of an append: each fails with ErrUnavailable,
// and once the proxy is back no blob is visible and the session is as it
// was.
func TestOutageLeavesNothing(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	cfg := v1Config(t, sw)
	cfg.SegmentSize = 64 << 20
	d := newDriver(t, cfg)
	ctx := t.Context()
	content := randomBytes(t, 40<<20)
	dg := digest.FromBytes(content)
	up, err := d.NewUpload(ctx, "team/app", []byte("s0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct {
		name string
		run  func(r io.Reader) error
	}{
		{"PutBlob streamed", func(r io.Reader) error { return d.PutBlob(ctx, dg, int64(len(content)), r) }},
		{"PutBlob segmented", func(r io.Reader) error { return d.PutBlob(ctx, dg, -1, r) }},
		{"AppendUpload", func(r io.Reader) error {
			_, err := d.AppendUpload(ctx, up.ID, 0, int64(len(content)), r, func(int64) ([]byte, error) { return []byte("s1"), nil })
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			var once sync.Once
			r := &hookReader{r: bytes.NewReader(content), after: 12 << 20, hook: func() { once.Do(sw.StopProxy) }}
			err := op.run(r)
			if err == nil {
				t.Fatal("succeeded although Swift stopped")
			}
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("error %v does not wrap ErrUnavailable", err)
			}
			sw.RestartProxy()
			if _, err := d.StatBlob(ctx, dg); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("blob visible after the failed write: %v", err)
			}
			got, err := d.GetUpload(ctx, up.ID)
			if err != nil || got.Size != 0 || string(got.State) != "s0" {
				t.Fatalf("session after the failed append: %+v, %v", got, err)
			}
		})
	}
}

// hookReader calls hook once after reading after bytes.
type hookReader struct {
	r     io.Reader
	n     int
	after int
	hook  func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += n
	if h.n >= h.after {
		h.hook()
	}
	return n, err
}

// TestRemoveOrphans leaves the objects of an interrupted write and of a
// session whose record is gone, and checks that RemoveOrphans removes
// them once older than its cutoff, and keeps a committed blob's segments
// and a live session's.
func TestRemoveOrphans(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	d := newDriver(t, v1Config(t, sw))
	ctx := t.Context()
	// A committed SLO blob (through an upload of 3 segments).
	content := randomBytes(t, 3*MinSegmentSize)
	dg := digest.FromBytes(content)
	up, err := d.NewUpload(ctx, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AppendUpload(ctx, up.ID, 0, int64(len(content)), bytes.NewReader(content), func(int64) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if err := d.CommitUpload(ctx, up.ID, int64(len(content)), dg); err != nil {
		t.Fatal(err)
	}
	live, err := d.NewUpload(ctx, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AppendUpload(ctx, live.ID, 0, 10, bytes.NewReader([]byte("0123456789")), func(int64) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	// Leftovers: segments of a write that never finished, the records of
	// a session whose session record went.
	orphan, _ := storage.NewUploadID()
	if _, err := d.putStream(ctx, segmentPrefix(orphan)+"0000000000000000-x", bytes.NewReader([]byte("lost"))); err != nil {
		t.Fatal(err)
	}
	if err := d.putBytes(ctx, chunkKey(orphan, 0), []byte("{}"), nil); err != nil {
		t.Fatal(err)
	}
	if n, err := d.RemoveOrphans(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("RemoveOrphans with a cutoff before everything: %d, %v; want 0", n, err)
	}
	n, err := d.RemoveOrphans(ctx, time.Now().Add(time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("RemoveOrphans: %d, %v; want 2", n, err)
	}
	rc, err := d.OpenBlob(ctx, dg, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the committed blob after RemoveOrphans: %d bytes, %v", len(got), err)
	}
	if u, err := d.GetUpload(ctx, live.ID); err != nil || u.Size != 10 {
		t.Fatalf("the live session after RemoveOrphans: %+v, %v", u, err)
	}
	if err := d.CommitUpload(ctx, live.ID, 10, digest.FromString("0123456789")); err != nil {
		t.Fatal(err)
	}
}
