package registry_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry"
)

// client sends raw API requests to a test registry.
type client struct {
	t     *testing.T
	reg   *registrytest.Registry
	http  *http.Client
	user  string
	pass  string
	token string
}

func newClient(t *testing.T, reg *registrytest.Registry) *client {
	return &client{t: t, reg: reg, http: reg.Client(), user: reg.Username, pass: reg.Password}
}

func anonymous(t *testing.T, reg *registrytest.Registry) *client {
	return &client{t: t, reg: reg, http: reg.Client()}
}

// do sends a request with basic credentials (when the client has them) and
// returns the response with its body read.
func (c *client) do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.reg.URL()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.user != "":
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, b
}

// expect checks the status and, for errors, the spec envelope's code.
func expect(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("%s %s: no Docker-Distribution-API-Version header", resp.Request.Method, resp.Request.URL.Path)
	}
	if code == "" {
		return
	}
	var env struct {
		Errors []struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	if resp.Request.Method == http.MethodHead {
		return
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 {
		t.Fatalf("%s %s: body %q is not the spec's error envelope (%v)", resp.Request.Method, resp.Request.URL.Path, body, err)
	}
	if env.Errors[0].Code != code || env.Errors[0].Message == "" {
		t.Fatalf("%s %s: error %+v, want code %s with a message", resp.Request.Method, resp.Request.URL.Path, env.Errors[0], code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
}

// pushBlob uploads content monolithically (POST then PUT) to repo.
func (c *client) pushBlob(repo string, content []byte) digest.Digest {
	c.t.Helper()
	resp, body := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	expect(c.t, resp, body, http.StatusAccepted, "")
	dg := digest.FromBytes(content)
	loc := resp.Header.Get("Location") + "?digest=" + url.QueryEscape(dg.String())
	resp, body = c.do("PUT", loc, content, "Content-Type", "application/octet-stream")
	expect(c.t, resp, body, http.StatusCreated, "")
	return dg
}

// image pushes a config and one layer and returns an OCI manifest for
// them.
func (c *client) image(repo string) []byte {
	c.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := randomBytes(c.t, 1000)
	cdg, ldg := c.pushBlob(repo, cfg), c.pushBlob(repo, layer)
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		oci.MediaTypeOCIManifest, cdg, len(cfg), ldg, len(layer)))
}

func (c *client) putManifest(repo, ref string, m []byte) *http.Response {
	c.t.Helper()
	resp, body := c.do("PUT", "/v2/"+repo+"/manifests/"+ref, m, "Content-Type", oci.MediaTypeOCIManifest)
	expect(c.t, resp, body, http.StatusCreated, "")
	return resp
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNamesAndReferences(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	m := c.image("good/name")
	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"traversal", "GET", "/v2/a/../../etc/manifests/latest", 400, "NAME_INVALID"},
		{"encoded traversal", "GET", "/v2/a/%2e%2e/b/manifests/latest", 400, "NAME_INVALID"},
		{"upper case", "GET", "/v2/Team/app/manifests/latest", 400, "NAME_INVALID"},
		{"empty component", "GET", "/v2/team//app/tags/list", 400, "NAME_INVALID"},
		{"leading underscore", "PUT", "/v2/_x/manifests/latest", 400, "NAME_INVALID"},
		{"too long", "GET", "/v2/" + strings.Repeat("a", 256) + "/tags/list", 400, "NAME_INVALID"},
		{"traversal upload", "POST", "/v2/../blobs/uploads/", 400, "NAME_INVALID"},
		{"unknown endpoint", "GET", "/v2/team/app/things/x", 404, "NAME_UNKNOWN"},
		{"bad digest", "GET", "/v2/good/name/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"unsupported algorithm", "GET", "/v2/good/name/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"bad tag", "GET", "/v2/good/name/manifests/-bad", 400, "MANIFEST_INVALID"},
		{"unknown tag", "GET", "/v2/good/name/manifests/nope", 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "GET", "/v2/good/name/blobs/" + digest.FromString("x").String(), 404, "BLOB_UNKNOWN"},
		{"unknown repository tags", "GET", "/v2/no/such/tags/list", 404, "NAME_UNKNOWN"},
		{"unknown upload", "GET", "/v2/good/name/blobs/uploads/00000000-0000-4000-8000-000000000000", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"upload id traversal", "PATCH", "/v2/good/name/blobs/uploads/..%2f..%2fetc", 404, "NAME_UNKNOWN"},
		{"upload id dots", "PATCH", "/v2/good/name/blobs/uploads/..", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"method", "POST", "/v2/good/name/manifests/latest", 405, "UNSUPPORTED"},
		{"tag put bad", "PUT", "/v2/good/name/manifests/a:b:c", 400, "DIGEST_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.method == "PUT" {
				body = m
			}
			req, err := http.NewRequest(tc.method, reg.URL()+"/", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			// Send the path as is, without Go's cleaning.
			req.URL.Opaque = "//" + reg.Host + tc.path
			req.SetBasicAuth(reg.Username, reg.Password)
			req.Header.Set("Content-Type", oci.MediaTypeOCIManifest)
			resp, err := c.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			expect(t, resp, b, tc.status, tc.code)
		})
	}
	// Nothing escaped the storage root.
	filepath.Walk(filepath.Dir(reg.Root), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(p, "etc") {
			t.Errorf("a traversal attempt created %s", p)
		}
		return nil
	})
}

func TestManifestValidation(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t, registry.WithMaxManifestSize(64<<10))
	c := newClient(t, reg)
	good := c.image("team/app")
	missing := digest.FromString("missing layer")
	var doc map[string]any
	json.Unmarshal(good, &doc)
	doc["layers"].([]any)[0].(map[string]any)["digest"] = missing.String()
	withMissing, _ := json.Marshal(doc)
	json.Unmarshal(good, &doc)
	doc["layers"].([]any)[0].(map[string]any)["size"] = 999
	wrongSize, _ := json.Marshal(doc)
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":10}]}`,
		oci.MediaTypeOCIIndex, oci.MediaTypeOCIManifest, digest.FromString("child")))
	huge := append(good[:len(good)-1:len(good)-1], []byte(`,"annotations":{"big":"`+strings.Repeat("x", 70<<10)+`"}}`)...)

	for _, tc := range []struct {
		name        string
		ref         string
		contentType string
		body        []byte
		status      int
		code        string
	}{
		{"not JSON", "bad", oci.MediaTypeOCIManifest, []byte("{nope"), 400, "MANIFEST_INVALID"},
		{"no schemaVersion", "bad", oci.MediaTypeOCIManifest, []byte(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{}}`), 400, "MANIFEST_INVALID"},
		{"schema 1", "bad", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1}`), 400, "MANIFEST_INVALID"},
		{"unknown media type", "bad", "application/x-nope", []byte(`{"schemaVersion":2}`), 400, "MANIFEST_INVALID"},
		{"media type mismatch", "bad", oci.MediaTypeDockerManifest, good, 400, "MANIFEST_INVALID"},
		{"no config", "bad", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"layers":[]}`), 400, "MANIFEST_INVALID"},
		{"bad descriptor digest", "bad", oci.MediaTypeOCIManifest, bytes.Replace(good, []byte(`"digest":"sha256:`), []byte(`"digest":"sha256:zz`), 1), 400, "MANIFEST_INVALID"},
		{"unknown layer", "bad", oci.MediaTypeOCIManifest, withMissing, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"wrong layer size", "bad", oci.MediaTypeOCIManifest, wrongSize, 400, "MANIFEST_INVALID"},
		{"unknown child manifest", "bad", oci.MediaTypeOCIIndex, index, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"oversized", "bad", oci.MediaTypeOCIManifest, huge, 413, "MANIFEST_INVALID"},
		{"digest mismatch", digest.FromString("other").String(), oci.MediaTypeOCIManifest, good, 400, "DIGEST_INVALID"},
		{"bad tag parameter", "bad?tag=-x", oci.MediaTypeOCIManifest, good, 400, "MANIFEST_INVALID"},
		{"good", "v1", oci.MediaTypeOCIManifest, good, 201, ""},
		{"generic content type", "v2", "application/json", good, 201, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := c.do("PUT", "/v2/team/app/manifests/"+tc.ref, tc.body, "Content-Type", tc.contentType)
			expect(t, resp, body, tc.status, tc.code)
		})
	}
	// Refused manifests left nothing behind: no tag "bad", no manifest
	// for their digests.
	resp, body := c.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
	if string(body) != `{"name":"team/app","tags":["v1","v2"]}` {
		t.Fatalf("tags after refused pushes: %s", body)
	}
	for _, m := range [][]byte{withMissing, wrongSize, huge, index} {
		resp, body := c.do("HEAD", "/v2/team/app/manifests/"+digest.FromBytes(m).String(), nil)
		expect(t, resp, body, 404, "")
	}
	// Both accepted pushes serve the media type the document declares.
	resp, _ = c.do("GET", "/v2/team/app/manifests/v2", nil)
	if ct := resp.Header.Get("Content-Type"); ct != oci.MediaTypeOCIManifest {
		t.Fatalf("Content-Type %q", ct)
	}
}

func TestBlobDigestMismatchStoresNothing(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	content := randomBytes(t, 100<<10)
	wrong := digest.FromString("something else")
	// Monolithic POST.
	resp, body := c.do("POST", "/v2/team/app/blobs/uploads/?digest="+wrong.String(), content, "Content-Type", "application/octet-stream")
	expect(t, resp, body, 400, "DIGEST_INVALID")
	// POST, PATCH, PUT.
	resp, body = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	loc := resp.Header.Get("Location")
	resp, body = c.do("PATCH", loc, content, "Content-Type", "application/octet-stream")
	expect(t, resp, body, 202, "")
	if r := resp.Header.Get("Range"); r != fmt.Sprintf("0-%d", len(content)-1) {
		t.Fatalf("Range after PATCH = %q", r)
	}
	resp, body = c.do("PUT", loc+"?digest="+wrong.String(), nil)
	expect(t, resp, body, 400, "DIGEST_INVALID")
	// The session is gone, and neither digest is served.
	resp, body = c.do("GET", loc, nil)
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")
	for _, dg := range []digest.Digest{wrong, digest.FromBytes(content)} {
		resp, body = c.do("HEAD", "/v2/team/app/blobs/"+dg.String(), nil)
		expect(t, resp, body, 404, "")
	}
	// No data is left in the store.
	var files []string
	filepath.Walk(reg.Root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("refused uploads left files: %v", files)
	}
	// A sha512 digest closes a session hashed with sha256 too, and a wrong
	// one is refused.
	for _, tc := range []struct {
		dg     digest.Digest
		status int
	}{{digest.SHA512.FromString("wrong"), 400}, {digest.SHA512.FromBytes(content), 201}} {
		resp, _ = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
		loc = resp.Header.Get("Location")
		resp, body = c.do("PUT", loc+"?digest="+tc.dg.String(), content, "Content-Type", "application/octet-stream")
		expect(t, resp, body, tc.status, "")
		resp, body = c.do("HEAD", "/v2/team/app/blobs/"+tc.dg.String(), nil)
		expect(t, resp, body, map[int]int{400: 404, 201: 200}[tc.status], "")
	}
}

func TestBlobRanges(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	content := randomBytes(t, 1000)
	dg := c.pushBlob("team/app", content)
	for _, tc := range []struct {
		rng, contentRange string
		status            int
		want              []byte
	}{
		{"", "", 200, content},
		{"bytes=0-99", "bytes 0-99/1000", 206, content[:100]},
		{"bytes=990-", "bytes 990-999/1000", 206, content[990:]},
		{"bytes=-10", "bytes 990-999/1000", 206, content[990:]},
		{"bytes=900-5000", "bytes 900-999/1000", 206, content[900:]},
		{"bytes=1000-", "bytes */1000", 416, nil},
		{"bytes=5-1", "bytes */1000", 416, nil},
		{"bytes=-0", "bytes */1000", 416, nil},
		{"bytes=0-1,5-6", "", 200, content},
		{"items=0-1", "", 200, content},
	} {
		resp, body := c.do("GET", "/v2/team/app/blobs/"+dg.String(), nil, "Range", tc.rng)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.contentRange {
			t.Errorf("Range %q: %d %q, want %d %q", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tc.status, tc.contentRange)
			continue
		}
		if tc.status != 416 && !bytes.Equal(body, tc.want) {
			t.Errorf("Range %q: %d bytes, want %d", tc.rng, len(body), len(tc.want))
		}
		if tc.status != 416 && resp.Header.Get("Docker-Content-Digest") != dg.String() {
			t.Errorf("Range %q: Docker-Content-Digest %q", tc.rng, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	resp, body := c.do("HEAD", "/v2/team/app/blobs/"+dg.String(), nil)
	expect(t, resp, body, 200, "")
	if resp.Header.Get("Docker-Content-Digest") != dg.String() || resp.ContentLength != 1000 || len(body) != 0 {
		t.Fatalf("HEAD: digest %q, length %d, body %d bytes", resp.Header.Get("Docker-Content-Digest"), resp.ContentLength, len(body))
	}
}

func TestChunkedUploadRanges(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	content := randomBytes(t, 3000)
	resp, body := c.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	if resp.Header.Get("Range") != "0-0" || resp.Header.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("POST headers %v", resp.Header)
	}
	loc := resp.Header.Get("Location")
	patch := func(start, end int, want int) *http.Response {
		t.Helper()
		resp, body := c.do("PATCH", loc, content[start:end+1], "Content-Range", fmt.Sprintf("%d-%d", start, end), "Content-Type", "application/octet-stream")
		expect(t, resp, body, want, "")
		return resp
	}
	patch(0, 999, 202)
	resp = patch(2000, 2999, 416) // skipping ahead
	if resp.Header.Get("Range") != "0-999" || resp.Header.Get("Location") != loc {
		t.Fatalf("416 headers: Range %q Location %q", resp.Header.Get("Range"), resp.Header.Get("Location"))
	}
	patch(0, 999, 416) // going back
	resp, body = c.do("GET", loc, nil)
	expect(t, resp, body, 204, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Fatalf("GET status Range %q", resp.Header.Get("Range"))
	}
	patch(1000, 1999, 202)
	// The last chunk with the closing PUT.
	dg := digest.FromBytes(content)
	resp, body = c.do("PUT", loc+"?digest="+dg.String(), content[2000:], "Content-Range", "2000-2999")
	expect(t, resp, body, 201, "")
	if resp.Header.Get("Location") != "/v2/team/app/blobs/"+dg.String() || resp.Header.Get("Docker-Content-Digest") != dg.String() {
		t.Fatalf("PUT headers %v", resp.Header)
	}
	_, body = c.do("GET", "/v2/team/app/blobs/"+dg.String(), nil)
	if !bytes.Equal(body, content) {
		t.Fatalf("chunked blob read back as %d bytes", len(body))
	}
	// Content-Range and Content-Length must agree.
	resp, _ = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
	loc = resp.Header.Get("Location")
	resp, body = c.do("PATCH", loc, content[:10], "Content-Range", "0-19")
	expect(t, resp, body, 400, "SIZE_INVALID")
	// Cancel.
	resp, body = c.do("DELETE", loc, nil)
	expect(t, resp, body, 204, "")
	resp, body = c.do("DELETE", loc, nil)
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")
	// A session belongs to its repository.
	resp, _ = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
	other := strings.Replace(resp.Header.Get("Location"), "team/app", "team/other", 1)
	resp, body = c.do("PATCH", other, []byte("x"))
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")
}

func TestMountsAndDeletes(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	content := randomBytes(t, 500)
	dg := c.pushBlob("src/repo", content)
	// Mount from a repository that holds the blob.
	resp, body := c.do("POST", "/v2/dst/repo/blobs/uploads/?mount="+dg.String()+"&from=src/repo", nil)
	expect(t, resp, body, 201, "")
	if resp.Header.Get("Location") != "/v2/dst/repo/blobs/"+dg.String() {
		t.Fatalf("mount Location %q", resp.Header.Get("Location"))
	}
	// Anonymous mount (no from).
	resp, body = c.do("POST", "/v2/third/repo/blobs/uploads/?mount="+dg.String(), nil)
	expect(t, resp, body, 201, "")
	// A repository that does not hold the blob cannot be mounted from: a
	// session starts instead.
	resp, body = c.do("POST", "/v2/fourth/repo/blobs/uploads/?mount="+dg.String()+"&from=nothing/here", nil)
	expect(t, resp, body, 202, "")
	// Deleting a blob from one repository leaves it in the others.
	resp, body = c.do("DELETE", "/v2/src/repo/blobs/"+dg.String(), nil)
	expect(t, resp, body, 202, "")
	resp, body = c.do("HEAD", "/v2/src/repo/blobs/"+dg.String(), nil)
	expect(t, resp, body, 404, "")
	resp, body = c.do("GET", "/v2/dst/repo/blobs/"+dg.String(), nil)
	expect(t, resp, body, 200, "")
	resp, body = c.do("DELETE", "/v2/src/repo/blobs/"+dg.String(), nil)
	expect(t, resp, body, 404, "BLOB_UNKNOWN")

	// Tag delete removes only the tag; manifest delete removes the
	// manifest and its tags.
	m := c.image("team/app")
	c.putManifest("team/app", "one", m)
	c.putManifest("team/app", "two", m)
	resp, body = c.do("DELETE", "/v2/team/app/manifests/one", nil)
	expect(t, resp, body, 202, "")
	resp, body = c.do("GET", "/v2/team/app/manifests/one", nil)
	expect(t, resp, body, 404, "MANIFEST_UNKNOWN")
	resp, body = c.do("GET", "/v2/team/app/manifests/two", nil)
	expect(t, resp, body, 200, "")
	if !bytes.Equal(body, m) {
		t.Fatal("manifest changed")
	}
	mdg := digest.FromBytes(m)
	resp, body = c.do("DELETE", "/v2/team/app/manifests/"+mdg.String(), nil)
	expect(t, resp, body, 202, "")
	for _, ref := range []string{"two", mdg.String()} {
		resp, body = c.do("GET", "/v2/team/app/manifests/"+ref, nil)
		expect(t, resp, body, 404, "MANIFEST_UNKNOWN")
	}
	_, body = c.do("GET", "/v2/team/app/tags/list", nil)
	if string(body) != `{"name":"team/app","tags":[]}` {
		t.Fatalf("tags after deleting the manifest: %s", body)
	}
	resp, body = c.do("DELETE", "/v2/team/app/manifests/"+mdg.String(), nil)
	expect(t, resp, body, 404, "MANIFEST_UNKNOWN")
}

func TestTagAndCatalogPagination(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	m := c.image("team/app")
	tags := []string{"a", "b", "c", "d", "e"}
	for _, tag := range tags {
		c.putManifest("team/app", tag, m)
	}
	for _, repo := range []string{"z/last", "a/first", "m/middle"} {
		c.putManifest(repo, "x", c.image(repo))
	}
	var got []string
	next := "/v2/team/app/tags/list?n=2"
	for next != "" {
		resp, body := c.do("GET", next, nil)
		expect(t, resp, body, 200, "")
		var tl struct{ Tags []string }
		json.Unmarshal(body, &tl)
		if len(tl.Tags) > 2 {
			t.Fatalf("page of %d tags for n=2", len(tl.Tags))
		}
		got = append(got, tl.Tags...)
		next = linkNext(t, resp)
	}
	if fmt.Sprint(got) != fmt.Sprint(tags) {
		t.Fatalf("paged tags %v, want %v", got, tags)
	}
	resp, body := c.do("GET", "/v2/team/app/tags/list?n=0", nil)
	if string(body) != `{"name":"team/app","tags":[]}` || resp.Header.Get("Link") != "" {
		t.Fatalf("n=0: %s, Link %q", body, resp.Header.Get("Link"))
	}
	_, body = c.do("GET", "/v2/team/app/tags/list?last=c", nil)
	if string(body) != `{"name":"team/app","tags":["d","e"]}` {
		t.Fatalf("last=c: %s", body)
	}
	resp, body = c.do("GET", "/v2/team/app/tags/list?n=-1", nil)
	expect(t, resp, body, 400, "UNSUPPORTED")

	got = nil
	next = "/v2/_catalog?n=1"
	for next != "" {
		resp, body := c.do("GET", next, nil)
		expect(t, resp, body, 200, "")
		var cat struct{ Repositories []string }
		json.Unmarshal(body, &cat)
		got = append(got, cat.Repositories...)
		next = linkNext(t, resp)
	}
	if want := "[a/first m/middle team/app z/last]"; fmt.Sprint(got) != want {
		t.Fatalf("paged catalog %v, want %s", got, want)
	}
}

// linkNext returns the target of a Link rel="next" header, or "".
func linkNext(t *testing.T, resp *http.Response) string {
	t.Helper()
	l := resp.Header.Get("Link")
	if l == "" {
		return ""
	}
	if !strings.HasPrefix(l, "<") || !strings.HasSuffix(l, `>; rel="next"`) {
		t.Fatalf("malformed Link %q", l)
	}
	return strings.TrimSuffix(strings.TrimPrefix(l, "<"), `>; rel="next"`)
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, reg)
	subject := c.image("team/app")
	c.putManifest("team/app", "v1", subject)
	sdg := digest.FromBytes(subject)
	empty := c.pushBlob("team/app", []byte("{}"))
	var refs []digest.Digest
	for i, at := range []string{"application/vnd.example.sbom", "application/vnd.example.sig"} {
		m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"n":"%d"}}`,
			oci.MediaTypeOCIManifest, at, empty, oci.MediaTypeOCIManifest, sdg, len(subject), i))
		dg := digest.FromBytes(m)
		resp := c.putManifest("team/app", dg.String(), m)
		if resp.Header.Get("OCI-Subject") != sdg.String() {
			t.Fatalf("OCI-Subject %q", resp.Header.Get("OCI-Subject"))
		}
		refs = append(refs, dg)
	}
	list := func(query string) (*http.Response, []map[string]any) {
		resp, body := c.do("GET", "/v2/team/app/referrers/"+sdg.String()+query, nil)
		expect(t, resp, body, 200, "")
		if ct := resp.Header.Get("Content-Type"); ct != oci.MediaTypeOCIIndex {
			t.Fatalf("referrers Content-Type %q", ct)
		}
		var idx struct{ Manifests []map[string]any }
		json.Unmarshal(body, &idx)
		return resp, idx.Manifests
	}
	_, all := list("")
	if len(all) != 2 || all[0]["artifactType"] == nil || all[0]["annotations"] == nil {
		t.Fatalf("referrers %v", all)
	}
	resp, sig := list("?artifactType=application/vnd.example.sig")
	if len(sig) != 1 || sig[0]["digest"] != refs[1].String() || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers %v (OCI-Filters-Applied %q)", sig, resp.Header.Get("OCI-Filters-Applied"))
	}
	// Deleting a referrer removes it from the list.
	resp, body := c.do("DELETE", "/v2/team/app/manifests/"+refs[0].String(), nil)
	expect(t, resp, body, 202, "")
	if _, rest := list(""); len(rest) != 1 || rest[0]["digest"] != refs[1].String() {
		t.Fatalf("referrers after delete %v", rest)
	}
	// An unknown subject has an empty list; a bad digest is a 400.
	resp, body = c.do("GET", "/v2/team/app/referrers/"+digest.FromString("none").String(), nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"manifests":[]`) {
		t.Fatalf("referrers of an unknown subject: %d %s", resp.StatusCode, body)
	}
	resp, body = c.do("GET", "/v2/team/app/referrers/sha256:nope", nil)
	expect(t, resp, body, 400, "DIGEST_INVALID")
}
