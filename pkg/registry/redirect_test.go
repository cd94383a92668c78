package registry_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
	"github.com/imagegate/imagegate/pkg/registry/storage/s3"
)

// TestBlobRedirect serves a registry on versitygw with blob redirects and
// checks which requests are redirected: a blob GET (with or without a
// range) gets 307 to a presigned URL that serves exactly the blob's bytes
// (or the range) without credentials; access is checked first, and a
// missing or unlinked blob, an unsatisfiable range, HEAD, manifests, and
// ranges the store would judge differently are answered by the registry.
// The log never holds a presigned URL.
func TestBlobRedirect(t *testing.T) {
	t.Parallel()
	srv := testenv.StartVersitygw(t)
	drv, err := s3.New(t.Context(), s3.Config{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region,
		PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, CAFile: srv.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	reg := registrytest.NewWithDriver(t, drv, registry.WithBlobRedirect(true), registry.WithAnonymousRead(false))
	c := newClient(t, reg)
	manifest := c.image("team/app")
	c.putManifest("team/app", "v1", manifest)
	mdg := digest.FromBytes(manifest)
	content := randomBytes(t, 100_000)
	dg := c.pushBlob("team/app", content)
	c.pushBlob("team/other", []byte("links the repository")) // exists, without the blob
	size := strconv.Itoa(len(content))

	// The checks look at the registry's own answers.
	c.http = &http.Client{Transport: reg.Transport(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	store := srv.HTTPClient()
	blob := "/v2/team/app/blobs/" + dg.String()
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		header  []string
		anon    bool
		status  int
		code    string
		want    []byte // the body at the registry, or at the Location
		wantCR  string // Content-Range at the registry, or at the Location
		atStore int    // the store's status at the Location; 0: no redirect
	}{
		{name: "whole blob", method: "GET", path: blob, status: 307, want: content, atStore: 200},
		{name: "range", method: "GET", path: blob, header: []string{"Range", "bytes=100-199"}, status: 307,
			want: content[100:200], wantCR: "bytes 100-199/" + size, atStore: 206},
		{name: "open range", method: "GET", path: blob, header: []string{"Range", "bytes=99990-"}, status: 307,
			want: content[99990:], wantCR: "bytes 99990-99999/" + size, atStore: 206},
		{name: "suffix range", method: "GET", path: blob, header: []string{"Range", "bytes=-10"}, status: 307,
			want: content[99990:], wantCR: "bytes 99990-99999/" + size, atStore: 206},
		{name: "manifest as a blob", method: "GET", path: "/v2/team/app/blobs/" + mdg.String(), status: 307, want: manifest, atStore: 200},
		{name: "unsatisfiable range", method: "GET", path: blob, header: []string{"Range", "bytes=100000-"}, status: 416, code: "SIZE_INVALID"},
		{name: "several ranges", method: "GET", path: blob, header: []string{"Range", "bytes=0-1,5-6"}, status: 200, want: content},
		{name: "if-range", method: "GET", path: blob, header: []string{"Range", "bytes=0-9", "If-Range", `"` + dg.String() + `"`},
			status: 206, want: content[:10], wantCR: "bytes 0-9/" + size},
		{name: "head", method: "HEAD", path: blob, status: 200, want: []byte{}},
		{name: "manifest", method: "GET", path: "/v2/team/app/manifests/" + mdg.String(), status: 200, want: manifest},
		{name: "missing blob", method: "GET", path: "/v2/team/app/blobs/" + digest.FromString("nothing").String(), status: 404, code: "BLOB_UNKNOWN"},
		{name: "not linked", method: "GET", path: "/v2/team/other/blobs/" + dg.String(), status: 404, code: "BLOB_UNKNOWN"},
		{name: "anonymous", method: "GET", path: blob, anon: true, status: 401, code: "UNAUTHORIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := c
			if tc.anon {
				cl = &client{t: t, reg: reg, http: c.http}
			}
			cl.t = t
			resp, body := cl.do(tc.method, tc.path, nil, tc.header...)
			expect(t, resp, body, tc.status, tc.code)
			loc := resp.Header.Get("Location")
			if tc.atStore == 0 {
				if loc != "" {
					t.Fatalf("Location %q on a %d", loc, resp.StatusCode)
				}
				if tc.want != nil && !bytes.Equal(body, tc.want) {
					t.Errorf("body: %d bytes, want %d", len(body), len(tc.want))
				}
				if got := resp.Header.Get("Content-Range"); tc.status != 416 && got != tc.wantCR {
					t.Errorf("Content-Range %q, want %q", got, tc.wantCR)
				}
				return
			}
			wantDigest := strings.TrimPrefix(tc.path, "/v2/team/app/blobs/")
			if got := resp.Header.Get("Docker-Content-Digest"); got != wantDigest {
				t.Errorf("Docker-Content-Digest %q, want %q", got, wantDigest)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q on the redirect, want no-store", got)
			}
			if len(body) != 0 || resp.Header.Get("Content-Range") != "" || resp.Header.Get("ETag") != "" {
				t.Errorf("the redirect has a body (%d bytes) or entity headers %v", len(body), resp.Header)
			}
			u, err := url.Parse(loc)
			if err != nil || u.Scheme != "https" || u.Host != strings.TrimPrefix(srv.Endpoint, "https://") {
				t.Fatalf("Location %s://%s (%v), want the store %s", u.Scheme, u.Host, err, srv.Endpoint)
			}
			// The client repeats the request, without credentials, at the
			// Location: Range included.
			req, _ := http.NewRequestWithContext(context.Background(), tc.method, loc, nil)
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			sresp, err := store.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			sbody, err := io.ReadAll(sresp.Body)
			sresp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if sresp.StatusCode != tc.atStore || !bytes.Equal(sbody, tc.want) || sresp.Header.Get("Content-Range") != tc.wantCR {
				t.Errorf("at the Location: %d, %d bytes, Content-Range %q; want %d, %d bytes, %q",
					sresp.StatusCode, len(sbody), sresp.Header.Get("Content-Range"), tc.atStore, len(tc.want), tc.wantCR)
			}
		})
	}
	logs := reg.Logs()
	if !strings.Contains(logs, "status=307") {
		t.Fatalf("the log shows no redirect:\n%s", logs)
	}
	if strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, "X-Amz-Credential") {
		t.Errorf("the log holds a presigned URL:\n%s", logs)
	}
}

// TestBlobRedirectNeedsURLs checks that New refuses blob redirects on a
// driver that cannot give blob URLs, and accepts them off.
func TestBlobRedirectNeedsURLs(t *testing.T) {
	t.Parallel()
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = registry.New(drv, registry.WithBlobRedirect(true))
	if err == nil || !strings.Contains(err.Error(), "storage.BlobURLer") {
		t.Fatalf("New with redirects on the filesystem: %v, want a refusal naming storage.BlobURLer", err)
	}
	if _, err := registry.New(drv, registry.WithBlobRedirect(false)); err != nil {
		t.Fatalf("New with redirects off: %v", err)
	}
}
