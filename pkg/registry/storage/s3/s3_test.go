package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/storagetest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// servers starts one S3 server per kind for the tests of this package:
// versitygw always, SeaweedFS too when IMAGEGATE_SEAWEEDFS=1 (make
// test-seaweedfs).
func servers(t *testing.T) []*testenv.S3Server {
	t.Helper()
	if os.Getenv("IMAGEGATE_SEAWEEDFS") == "1" {
		return []*testenv.S3Server{testenv.StartSeaweedFS(t)}
	}
	return []*testenv.S3Server{testenv.StartVersitygw(t)}
}

func testConfig(srv *testenv.S3Server, bucket string) Config {
	return Config{Bucket: bucket, Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, CAFile: srv.CAFile, PartSize: MinPartSize}
}

func newDriver(t testing.TB, cfg Config, opts ...Option) *Driver {
	t.Helper()
	d, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// TestConformance runs the storage conformance suite on a real S3 server:
// every subtest gets its own bucket, and its Opener a new driver on it.
func TestConformance(t *testing.T) {
	for _, srv := range servers(t) {
		t.Run(srv.Kind, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T) storagetest.Opener {
				cfg := testConfig(srv, srv.NewBucket(t))
				return func(t *testing.T) storage.Driver { return newDriver(t, cfg) }
			})
		})
	}
}

// TestConformanceConsistentListing runs the suite with listings trusted,
// as configured for stores whose listings are exact (versitygw is; the
// SeaweedFS run keeps confirming).
func TestConformanceConsistentListing(t *testing.T) {
	srv := servers(t)[0]
	if srv.Kind == "seaweedfs" {
		t.Skip("SeaweedFS listings lag behind deletes: ConsistentListing does not apply")
	}
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		cfg := testConfig(srv, srv.NewBucket(t))
		cfg.ConsistentListing = true
		return func(t *testing.T) storage.Driver { return newDriver(t, cfg) }
	})
}

// TestConformancePrefix runs the suite again with a key prefix, on one
// shared bucket, so prefixes are seen to isolate registries.
func TestConformancePrefix(t *testing.T) {
	if testing.Short() {
		t.Skip("covered by TestConformance in -short mode")
	}
	srv := servers(t)[0]
	bucket := srv.NewBucket(t)
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		cfg := testConfig(srv, bucket)
		cfg.Prefix = "reg-" + testenv.RandomString(t, 4)
		return func(t *testing.T) storage.Driver { return newDriver(t, cfg) }
	})
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// countKeys counts the objects under a key prefix of the driver.
func countKeys(t *testing.T, d *Driver, rel string) int {
	t.Helper()
	prefix := d.key(rel)
	n := 0
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Contents)
	}
	return n
}

// TestChunkedUploads sends uploads in chunks of awkward sizes (smaller than
// a part, across part boundaries, larger than several parts, of unknown
// length) alternately through two drivers, and checks the committed blob,
// that small chunks are merged into parts, and that nothing is left under
// uploads/.
func TestChunkedUploads(t *testing.T) {
	srv := servers(t)[0]
	cfg := testConfig(srv, srv.NewBucket(t))
	drivers := []*Driver{newDriver(t, cfg), newDriver(t, cfg)}
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		chunks []int
		known  bool
	}{
		{"one small chunk", []int{100}, true},
		{"many small chunks", []int{1, 1000, 4096, 3 * mib, 2 * mib, 7}, true},
		{"small then large", []int{10, 12 * mib, 5}, true},
		{"exact parts", []int{5 * mib, 5 * mib, 5 * mib}, true},
		{"large unknown length", []int{17*mib + 3, 1}, false},
		{"small unknown length", []int{5, 6, 7}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			up, err := drivers[0].NewUpload(ctx, "team/app", []byte("s"))
			if err != nil {
				t.Fatal(err)
			}
			var all []byte
			for i, size := range tc.chunks {
				chunk := randomBytes(t, size)
				length := int64(size)
				if !tc.known {
					length = -1
				}
				d := drivers[i%2]
				got, err := d.AppendUpload(ctx, up.ID, int64(len(all)), length, bytes.NewReader(chunk), func(int64) ([]byte, error) { return []byte("s"), nil })
				if err != nil {
					t.Fatalf("chunk %d (%d bytes): %v", i, size, err)
				}
				all = append(all, chunk...)
				if got.Size != int64(len(all)) {
					t.Fatalf("after chunk %d: size %d, want %d", i, got.Size, len(all))
				}
				s, _, err := d.readSession(ctx, up.ID)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.check(); err != nil {
					t.Fatal(err)
				}
				// Only trailing segments may be under the minimum part size.
				for j, sg := range s.Segments[:s.tail()] {
					if sg.Size < MinPartSize {
						t.Fatalf("segment %d of %d bytes is before the tail", j, sg.Size)
					}
				}
				var tailBytes int64
				for _, sg := range s.Segments[s.tail():] {
					tailBytes += sg.Size
				}
				if tc.known && tailBytes >= MinPartSize {
					t.Fatalf("trailing small segments hold %d bytes: they should have been merged", tailBytes)
				}
			}
			dg := digest.FromBytes(all)
			if err := drivers[1].CommitUpload(ctx, up.ID, int64(len(all)), dg); err != nil {
				t.Fatalf("CommitUpload: %v", err)
			}
			rc, err := drivers[0].OpenBlob(ctx, dg, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, all) {
				t.Fatalf("blob read back as %d bytes (%v), want %d", len(got), err, len(all))
			}
			if n := countKeys(t, drivers[0], "uploads/"+up.ID+"/"); n != 0 {
				t.Fatalf("%d objects left under the committed upload", n)
			}
		})
	}
}

// TestNewRefusesBadSettings checks that New names the setting to fix for a
// missing bucket, wrong credentials, denied access and an unreachable
// endpoint.
func TestNewRefusesBadSettings(t *testing.T) {
	srv := testenv.StartVersitygw(t)
	bucket := srv.NewBucket(t)
	userKey, userSecret := srv.CreateUser(t)
	good := testConfig(srv, bucket)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"missing bucket", func(c *Config) { c.Bucket = "" }, []string{"bucket is not set"}},
		{"nonexistent bucket", func(c *Config) { c.Bucket = "no-such-bucket" }, []string{`bucket "no-such-bucket"`, "does not exist", "check bucket"}},
		{"unknown access key", func(c *Config) { c.AccessKeyID = "nobody" }, []string{"access_key_id"}},
		{"wrong secret", func(c *Config) { c.SecretAccessKey = "wrong" + c.SecretAccessKey }, []string{"secret_access_key"}},
		{"access denied", func(c *Config) { c.AccessKeyID, c.SecretAccessKey = userKey, userSecret }, []string{"denied", bucket}},
		{"half credentials", func(c *Config) { c.SecretAccessKey = "" }, []string{"access_key_id and secret_access_key"}},
		{"unreachable endpoint", func(c *Config) { c.Endpoint = "https://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) }, []string{"check endpoint"}},
		{"part size", func(c *Config) { c.PartSize = 1 << 20 }, []string{"part size"}},
		{"URL expiry", func(c *Config) { c.URLExpiry = 8 * 24 * time.Hour }, []string{"URL expiry", "7 days"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(t.Context(), cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), srv.SecretKey) {
				t.Errorf("error %q contains the secret key", err)
			}
		})
	}
}

// TestOutageLeavesNothing stops the S3 server in the middle of a large
// PutBlob and an append: both fail with ErrUnavailable, and once the
// server is back no blob is visible and the session is as it was.
func TestOutageLeavesNothing(t *testing.T) {
	srv := testenv.StartVersitygw(t)
	cfg := testConfig(srv, srv.NewBucket(t))
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
		{"PutBlob", func(r io.Reader) error { return d.PutBlob(ctx, dg, int64(len(content)), r) }},
		{"AppendUpload", func(r io.Reader) error {
			_, err := d.AppendUpload(ctx, up.ID, 0, int64(len(content)), r, func(int64) ([]byte, error) { return []byte("s1"), nil })
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			var once sync.Once
			r := &hookReader{r: bytes.NewReader(content), after: 12 << 20, hook: func() { once.Do(srv.Process.Stop) }}
			err := op.run(r)
			if err == nil {
				t.Fatal("succeeded although the store stopped")
			}
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("error %v does not wrap ErrUnavailable", err)
			}
			srv.Restart()
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

var _ = aws.String

// TestVirtualHostAddressing runs a round trip with virtual-host
// addressing: the bucket in the host name (<bucket>.localhost), not in the
// path.
func TestVirtualHostAddressing(t *testing.T) {
	srv := testenv.StartVersitygw(t)
	cfg := testConfig(srv, srv.NewBucket(t))
	cfg.PathStyle = false
	cfg.Endpoint = "https://localhost:" + strconv.Itoa(srv.Port)
	var hosts sync.Map
	tr := srv.HTTPClient().Transport.(*http.Transport).Clone()
	tr.DialContext = testenv.DialLoopback
	d := newDriver(t, cfg, WithTransport(recordHosts{tr, &hosts}))
	content := randomBytes(t, 7<<20) // a multipart upload
	dg := digest.FromBytes(content)
	if err := d.PutBlob(t.Context(), dg, -1, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	rc, err := d.OpenBlob(t.Context(), dg, 100, 50)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content[100:150]) {
		t.Fatal("range read back wrong")
	}
	want := cfg.Bucket + ".localhost:" + strconv.Itoa(srv.Port)
	n := 0
	hosts.Range(func(k, _ any) bool {
		n++
		if k.(string) != want {
			t.Errorf("request to host %s, want %s", k, want)
		}
		return true
	})
	if n == 0 {
		t.Fatal("no request recorded")
	}
}

type recordHosts struct {
	base  http.RoundTripper
	hosts *sync.Map
}

func (r recordHosts) RoundTrip(req *http.Request) (*http.Response, error) {
	r.hosts.Store(req.URL.Host, true)
	return r.base.RoundTrip(req)
}
