package s3

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/testenv"
)

// TestBlobURL presigns URLs for a blob with path-style and virtual-host
// addressing and fetches them without credentials: the whole blob, a
// range, a HEAD; the URL addresses the configured endpoint, and a URL
// edited to name another blob is refused.
func TestBlobURL(t *testing.T) {
	srv := testenv.StartVersitygw(t)
	bucket := srv.NewBucket(t)
	loopback := srv.HTTPClient().Transport.(*http.Transport).Clone()
	loopback.DialContext = testenv.DialLoopback
	for _, tc := range []struct {
		name     string
		edit     func(*Config)
		wantHost string
		wantPath string // prefix
	}{
		{"path style", func(*Config) {}, "127.0.0.1:" + strconv.Itoa(srv.Port), "/" + bucket + "/blobs/sha256/"},
		{"virtual host", func(c *Config) {
			c.PathStyle = false
			c.Endpoint = "https://localhost:" + strconv.Itoa(srv.Port)
		}, bucket + ".localhost:" + strconv.Itoa(srv.Port), "/blobs/sha256/"},
		{"prefix", func(c *Config) { c.Prefix = "reg" }, "127.0.0.1:" + strconv.Itoa(srv.Port), "/" + bucket + "/reg/blobs/sha256/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(srv, bucket)
			tc.edit(&cfg)
			d := newDriver(t, cfg, WithTransport(loopback))
			content := randomBytes(t, 1<<20+17)
			dg := digest.FromBytes(content)
			other := []byte("another blob")
			otherDg := digest.FromBytes(other)
			for dg, b := range map[digest.Digest][]byte{dg: content, otherDg: other} {
				if err := d.PutBlob(t.Context(), dg, int64(len(b)), bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			get, err := d.BlobURL(t.Context(), dg, http.MethodGet)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(get)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "https" || u.Host != tc.wantHost || !strings.HasPrefix(u.Path, tc.wantPath) {
				t.Errorf("URL %s://%s%s, want https://%s%s...", u.Scheme, u.Host, u.Path, tc.wantHost, tc.wantPath)
			}
			if got := u.Query().Get("X-Amz-Expires"); got != strconv.Itoa(int(DefaultURLExpiry.Seconds())) {
				t.Errorf("X-Amz-Expires %q, want the default %s", got, DefaultURLExpiry)
			}
			client := &http.Client{Transport: loopback}

			status, body, _ := fetch(t, client, http.MethodGet, get, "")
			if status != http.StatusOK || !bytes.Equal(body, content) {
				t.Errorf("GET: %d, %d bytes; want 200 and the blob's %d bytes", status, len(body), len(content))
			}
			status, body, _ = fetch(t, client, http.MethodGet, get, "bytes=1048570-1048580")
			if status != http.StatusPartialContent || !bytes.Equal(body, content[1048570:1048581]) {
				t.Errorf("ranged GET: %d, %q; want 206 and %q", status, body, content[1048570:1048581])
			}
			head, err := d.BlobURL(t.Context(), dg, http.MethodHead)
			if err != nil {
				t.Fatal(err)
			}
			status, _, h := fetch(t, client, http.MethodHead, head, "")
			if status != http.StatusOK || h.Get("Content-Length") != strconv.Itoa(len(content)) {
				t.Errorf("HEAD: %d, Content-Length %q; want 200 and %d", status, h.Get("Content-Length"), len(content))
			}
			// The signature covers the key: the URL reads this blob only.
			forged := strings.Replace(get, dg.Encoded(), otherDg.Encoded(), 1)
			if status, _, _ := fetch(t, client, http.MethodGet, forged, ""); status != http.StatusForbidden {
				t.Errorf("GET of a URL edited to another blob: %d, want 403", status)
			}
		})
	}
}

// TestBlobURLExpiry checks that URLExpiry is what the URL carries and that
// the store refuses the URL once it has passed.
func TestBlobURLExpiry(t *testing.T) {
	srv := testenv.StartVersitygw(t)
	cfg := testConfig(srv, srv.NewBucket(t))
	cfg.URLExpiry = 2 * time.Second
	d := newDriver(t, cfg)
	content := []byte("short-lived")
	dg := digest.FromBytes(content)
	if err := d.PutBlob(t.Context(), dg, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	get, err := d.BlobURL(t.Context(), dg, http.MethodGet)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(get, "X-Amz-Expires=2&") {
		t.Errorf("URL %s does not expire in 2 seconds", get)
	}
	client := srv.HTTPClient()
	if status, body, _ := fetch(t, client, http.MethodGet, get, ""); status != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("GET before expiry: %d %q", status, body)
	}
	testenv.WaitFor(t, "the URL to expire", 30*time.Second, srv.Process, func() error {
		if status, _, _ := fetch(t, client, http.MethodGet, get, ""); status != http.StatusForbidden {
			return fmt.Errorf("GET answers %d, want 403", status)
		}
		return nil
	})
	if _, err := d.BlobURL(t.Context(), dg, http.MethodPut); err == nil {
		t.Error("BlobURL presigned a PUT")
	}
}

// fetch sends a request without credentials and returns the status, body
// and headers.
func fetch(t *testing.T, c *http.Client, method, u, rng string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}
