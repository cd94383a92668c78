package oci_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

func TestParseChallenges(t *testing.T) {
	t.Parallel()
	type ch = oci.Challenge
	tests := []struct {
		in   []string
		want []ch
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"`},
			[]ch{{"Bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:a/b:pull"}}}},
		{[]string{`Basic realm="test"`}, []ch{{"Basic", map[string]string{"realm": "test"}}}},
		{[]string{`Bearer realm="https://h/t", scope="repository:a:pull,push"`},
			[]ch{{"Bearer", map[string]string{"realm": "https://h/t", "scope": "repository:a:pull,push"}}}},
		{[]string{`Bearer realm=https://h/t,service=x`}, []ch{{"Bearer", map[string]string{"realm": "https://h/t", "service": "x"}}}},
		{[]string{`Bearer realm=https://a/b, service=x`}, []ch{{"Bearer", map[string]string{"realm": "https://a/b", "service": "x"}}}},
		{[]string{`Basic realm="a \"quoted\" realm"`}, []ch{{"Basic", map[string]string{"realm": `a "quoted" realm`}}}},
		{[]string{`Bearer REALM="https://r.example/token" , Service = "registry"`},
			[]ch{{"Bearer", map[string]string{"realm": "https://r.example/token", "service": "registry"}}}},
		// Several challenges in one value, and in several values.
		{[]string{`Basic realm="x", Bearer realm="https://h/t",service="s"`},
			[]ch{{"Basic", map[string]string{"realm": "x"}}, {"Bearer", map[string]string{"realm": "https://h/t", "service": "s"}}}},
		{[]string{`Negotiate`, `Bearer realm="r"`}, []ch{{"Negotiate", map[string]string{}}, {"Bearer", map[string]string{"realm": "r"}}}},
		{[]string{`Basic YWxhZGRpbjpvcGVuc2VzYW1l==, Bearer realm="r"`},
			[]ch{{"Basic", map[string]string{}}, {"Bearer", map[string]string{"realm": "r"}}}},
		{[]string{""}, nil},
	}
	for _, tc := range tests {
		got := oci.ParseChallenges(tc.in...)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ParseChallenges(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	c, ok := oci.FindChallenge([]string{`Negotiate`, `bearer realm="r"`}, "basic", "bearer")
	if !ok || c.Params["realm"] != "r" {
		t.Errorf("FindChallenge: %v %v", c, ok)
	}
	if _, ok := oci.FindChallenge([]string{`Negotiate`}, "basic", "bearer"); ok {
		t.Error("FindChallenge found a scheme that is not there")
	}
}

// TestChallengeRoundTrip: what the server writes, the clients read back.
func TestChallengeRoundTrip(t *testing.T) {
	t.Parallel()
	c := oci.Challenge{Scheme: "Bearer", Params: map[string]string{
		"error": "insufficient_scope", "scope": "repository:a/b:pull,push", "service": "imagegate", "realm": `https://h/auth "x"`}}
	s := c.String()
	if want := `Bearer realm="https://h/auth \"x\"",service="imagegate",scope="repository:a/b:pull,push",error="insufficient_scope"`; s != want {
		t.Errorf("String() = %s, want %s", s, want)
	}
	got := oci.ParseChallenges(s)
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(c) {
		t.Errorf("round trip: %v", got)
	}
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	page, _ := url.Parse("https://r.example:5000/v2/a/tags/list?n=2")
	tests := []struct {
		name   string
		header []string
		want   string
		err    bool
	}{
		{"none", nil, "", false},
		{"empty", []string{""}, "", false},
		{"relative", []string{`</v2/a/tags/list?n=2&last=b>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?n=2&last=b", false},
		{"absolute", []string{`<https://r.example:5000/v2/a/tags/list?last=c>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=c", false},
		{"unquoted rel", []string{`</v2/a/tags/list?last=c>; rel=next`}, "https://r.example:5000/v2/a/tags/list?last=c", false},
		{"other host", []string{`<https://evil.example/v2/a/tags/list?last=c>; rel="next"`}, "", true},
		{"other port", []string{`<https://r.example:5001/v2/a/tags/list?last=c>; rel="next"`}, "", true},
		{"prev only", []string{`</x>; rel="prev"`}, "", false},
		{"prev then next", []string{`</p>; rel="prev", </v2/a/tags/list?last=d>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=d", false},
		{"second value", []string{`</p>; rel="prev"`, `</v2/a/tags/list?last=e>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=e", false},
		{"several relations", []string{`</v2/a/tags/list?last=f>; rel="last next"`}, "https://r.example:5000/v2/a/tags/list?last=f", false},
		{"comma in the target", []string{`</v2/a/tags/list?last=a,b>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=a,b", false},
		{"http link keeps https", []string{`<http://r.example:5000/v2/a/tags/list?last=g>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=g", false},
		{"host case", []string{`<https://R.EXAMPLE:5000/v2/a/tags/list?last=h>; rel="next"`}, "https://r.example:5000/v2/a/tags/list?last=h", false},
	}
	for _, tc := range tests {
		got, err := oci.NextLink(page, tc.header...)
		s := ""
		if got != nil {
			s = got.String()
		}
		if s != tc.want || (err != nil) != tc.err {
			t.Errorf("%s: NextLink(%q) = %q, %v", tc.name, tc.header, s, err)
		}
	}
	// The default https port: a registry at r.example that writes
	// r.example:443 in its links, and the other way round.
	for _, tc := range []struct{ page, link, want string }{
		{"https://r.example/v2/a/tags/list", `<https://r.example:443/v2/a/tags/list?last=x>; rel="next"`, "https://r.example/v2/a/tags/list?last=x"},
		{"https://r.example:443/v2/a/tags/list", `<https://r.example/v2/a/tags/list?last=x>; rel="next"`, "https://r.example:443/v2/a/tags/list?last=x"},
	} {
		p, _ := url.Parse(tc.page)
		got, err := oci.NextLink(p, tc.link)
		if err != nil || got.String() != tc.want {
			t.Errorf("NextLink(%s, %s) = %v, %v; want %s", tc.page, tc.link, got, err, tc.want)
		}
	}
	if l := oci.Link("/v2/a/tags/list?last=b&n=2", "next"); l != `</v2/a/tags/list?last=b&n=2>; rel="next"` {
		t.Errorf("Link = %s", l)
	}
}

func TestCanonicalHost(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Registry.Example:443":  "registry.example",
		"registry.example":      "registry.example",
		"registry.example:5000": "registry.example:5000",
		"docker.io":             "index.docker.io",
		"index.docker.io":       "index.docker.io",
		"[::1]:443":             "[::1]",
		" [::1]:5000 ":          "[::1]:5000",
	} {
		if got := oci.CanonicalHost(in); got != want {
			t.Errorf("CanonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func response(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body))}
}

func TestResponseError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		body      string
		msg       string
		is, isNot []error
	}{
		{"envelope", 404, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"tag":"x"}}]}`,
			"GET manifest r/a:x: 404 Not Found (MANIFEST_UNKNOWN): manifest unknown", []error{oci.ErrNotFound}, []error{oci.ErrDenied}},
		{"code without the status", 400, `{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}`,
			"GET manifest r/a:x: 400 Bad Request (NAME_UNKNOWN): no such repository", []error{oci.ErrNotFound}, nil},
		{"two entries", 401, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"},{"code":"DENIED","message":"no"}]}`,
			"GET manifest r/a:x: 401 Unauthorized (UNAUTHORIZED, DENIED): authentication required; no",
			[]error{oci.ErrUnauthorized, oci.ErrForbidden, oci.ErrDenied}, []error{oci.ErrNotFound}},
		{"forbidden", 403, ``, "GET manifest r/a:x: 403 Forbidden", []error{oci.ErrForbidden, oci.ErrDenied}, []error{oci.ErrUnauthorized}},
		{"unsupported", 405, `{"errors":[{"code":"UNSUPPORTED","message":"the operation is unsupported"}]}`,
			"GET manifest r/a:x: 405 Method Not Allowed (UNSUPPORTED): the operation is unsupported", []error{oci.ErrUnsupported}, nil},
		{"docker hub detail", 401, `{"detail":"Incorrect authentication credentials"}`,
			"GET manifest r/a:x: 401 Unauthorized: Incorrect authentication credentials", []error{oci.ErrUnauthorized}, nil},
		{"docker hub message", 404, `{"message":"httperror 404: tag 'x' not found","errinfo":{}}`,
			"GET manifest r/a:x: 404 Not Found: httperror 404: tag 'x' not found", []error{oci.ErrNotFound}, nil},
		{"proxy text", 502, "upstream connect error", "GET manifest r/a:x: 502 Bad Gateway: upstream connect error", nil, []error{oci.ErrNotFound}},
		{"html page", 503, "<html><body>down</body></html>", "GET manifest r/a:x: 503 Service Unavailable", nil, nil},
	}
	for _, tc := range tests {
		err := oci.CheckResponse(response(tc.status, tc.body), "GET manifest r/a:x", 200)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if err.Error() != tc.msg {
			t.Errorf("%s: %q, want %q", tc.name, err, tc.msg)
		}
		wrapped := fmt.Errorf("promoting: %w", err)
		var e *oci.Error
		if !errors.As(wrapped, &e) || e.StatusCode != tc.status || oci.StatusCode(wrapped) != tc.status {
			t.Errorf("%s: errors.As: %v", tc.name, e)
		}
		for _, s := range tc.is {
			if !errors.Is(wrapped, s) {
				t.Errorf("%s: not %v", tc.name, s)
			}
		}
		for _, s := range tc.isNot {
			if errors.Is(wrapped, s) {
				t.Errorf("%s: is %v", tc.name, s)
			}
		}
	}
	if err := oci.CheckResponse(response(201, ""), "PUT", 200, 201); err != nil {
		t.Errorf("accepted status: %v", err)
	}
	if !oci.HasCode(fmt.Errorf("x: %w", oci.ResponseError("", response(400, `{"errors":[{"code":"DIGEST_INVALID"}]}`))), oci.CodeDigestInvalid) {
		t.Error("HasCode through wrapping")
	}
	// The server's side: a cause that is logged, not rendered to clients
	// (the envelope holds Errors only), but part of Error().
	cause := errors.New("disk full")
	se := &oci.Error{StatusCode: 503, Errors: []oci.Diagnostic{{Code: oci.CodeUnavailable, Message: "storage failed"}}, Err: cause}
	if !errors.Is(se, cause) || se.Error() != "503 Service Unavailable (UNAVAILABLE): storage failed: disk full" || se.Code() != oci.CodeUnavailable {
		t.Errorf("server error: %v", se)
	}
}

func TestMediaTypes(t *testing.T) {
	t.Parallel()
	if !oci.IsIndex(oci.MediaTypeOCIIndex) || !oci.IsIndex(oci.MediaTypeDockerList) || oci.IsIndex(oci.MediaTypeOCIManifest) {
		t.Error("IsIndex")
	}
	if !oci.IsImageManifest(oci.MediaTypeDockerManifest) || oci.IsImageManifest(oci.MediaTypeOCIIndex) {
		t.Error("IsImageManifest")
	}
	if !oci.IsSchema1(oci.MediaTypeDockerSchema1Signed) || oci.IsSchema1(oci.MediaTypeDockerManifest) {
		t.Error("IsSchema1")
	}
	if !oci.IsNonDistributable(oci.MediaTypeDockerForeignGzip) || oci.IsNonDistributable("application/vnd.oci.image.layer.v1.tar+gzip") {
		t.Error("IsNonDistributable")
	}
	if mt := oci.MediaType(" Application/VND.oci.image.index.v1+json ; charset=utf-8"); mt != oci.MediaTypeOCIIndex {
		t.Errorf("MediaType = %q", mt)
	}
	for _, g := range []string{"", "application/json", "application/octet-stream", "text/plain"} {
		if !oci.IsGeneric(g) {
			t.Errorf("IsGeneric(%q) = false", g)
		}
	}
	if !strings.HasPrefix(oci.AcceptManifests, oci.MediaTypeOCIIndex+", "+oci.MediaTypeDockerList) {
		t.Errorf("AcceptManifests does not ask for indexes first: %s", oci.AcceptManifests)
	}
}

func TestDigests(t *testing.T) {
	t.Parallel()
	b := []byte("content")
	for _, algo := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		want := algo.FromBytes(b)
		if got, err := oci.Verify(want, b); err != nil || got != want {
			t.Errorf("%s: Verify = %s, %v", algo, got, err)
		}
		if _, err := oci.Verify(want, []byte("other")); err == nil {
			t.Errorf("%s: Verify accepted other content", algo)
		}
		if d, err := oci.ParseDigest(want.String()); err != nil || d != want {
			t.Errorf("%s: ParseDigest = %s, %v", algo, d, err)
		}
	}
	if _, err := oci.ParseDigest("md5:0123456789abcdef0123456789abcdef"); err == nil {
		t.Error("ParseDigest accepted md5")
	}
	if !oci.IsDigest("sha256:abc") || oci.IsDigest("latest") {
		t.Error("IsDigest")
	}
}
