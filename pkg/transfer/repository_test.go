package transfer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/oci"
)

// TestScripted covers answers real registries seldom give: a HEAD without
// Docker-Content-Digest, content that does not match its digest.
func TestScripted(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	good := digest.FromBytes(body).String()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			return
		case "/v2/a/manifests/nodigest":
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			if r.Method == http.MethodGet {
				w.Write(body)
			}
		case "/v2/a/manifests/lying":
			w.Header().Set("Content-Type", oci.MediaTypeOCIManifest)
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
			w.Write(body)
		case "/v2/a/tags/list":
			w.Header().Set("Link", `<https://elsewhere.example/v2/a/tags/list?last=x>; rel="next"`)
			json.NewEncoder(w).Encode(map[string]any{"tags": []string{"x"}})
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := New(WithEndpoint(Endpoint{Host: host, CA: ca, NoSystemRoots: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	repo, err := c.Repository(ctx, host, "a", false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := repo.Head(ctx, "nodigest")
	if err != nil || d.Digest != good || d.MediaType != oci.MediaTypeOCIManifest {
		t.Errorf("HEAD fallback: %+v %v", d, err)
	}
	if _, err := repo.Get(ctx, "lying"); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "the registry said") {
		t.Errorf("lying registry: %v", err)
	}
	if _, err := repo.Get(ctx, "missing"); !errors.Is(err, oci.ErrNotFound) || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("missing: %v", err)
	}
	if _, err := repo.Tags(ctx); err == nil || !strings.Contains(err.Error(), "refusing to follow") {
		t.Errorf("foreign Link: %v", err)
	}
}

func pushImage(t *testing.T, reg *testenv.Distribution, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(reg.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	tr := reg.TLS.Client().Transport
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func pushIndex(t *testing.T, reg *testenv.Distribution, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(reg.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	tr := reg.TLS.Client().Transport
	if err := remote.WriteIndex(r, idx, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// TestAgainstDistribution runs every call against Debian's docker-registry
// (distribution 2.8, TLS, htpasswd).
func TestAgainstDistribution(t *testing.T) {
	t.Parallel()
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	img := testenv.BusyboxImage(t, testenv.FileLayer("app.txt", []byte("app v2\n")))
	pushImage(t, reg, "myorg/app:change_7_latest", img)
	idx, err := random.Index(64, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushIndex(t, reg, "myorg/multi:change_7_latest", idx)
	var extra []string
	for i := 0; i < 5; i++ {
		tag := fmt.Sprintf("v1.%d", i)
		pushImage(t, reg, "myorg/app:"+tag, img)
		extra = append(extra, tag)
	}
	ctx := context.Background()

	c, err := New(WithEndpoint(Endpoint{Host: reg.Host, Username: reg.Username, Password: reg.Password, CA: reg.TLS.CA.CertPEM}), WithPageSize(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	repo, err := c.Repository(ctx, reg.Host, "myorg/app", true)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	m, err := repo.Get(ctx, "change_7_latest")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != want.String() || oci.IsIndex(m.MediaType) {
		t.Errorf("GET: %s %s, want %s", m.Digest, m.MediaType, want)
	}
	if err := repo.Put(ctx, "latest", m); err != nil {
		t.Fatal(err)
	}
	if d, err := repo.Head(ctx, "latest"); err != nil || d.Digest != want.String() {
		t.Errorf("HEAD latest: %+v %v", d, err)
	}
	tags, err := repo.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(tags)
	wantTags := append([]string{"change_7_latest", "latest"}, extra...)
	sort.Strings(wantTags)
	if fmt.Sprint(tags) != fmt.Sprint(wantTags) {
		t.Errorf("tags (page size 2) = %v, want %v", tags, wantTags)
	}
	cfgName, _ := img.ConfigName()
	cfg, err := repo.Blob(ctx, cfgName.String())
	if err != nil || !strings.Contains(string(cfg), `"architecture":"amd64"`) {
		t.Errorf("config blob: %s %v", cfg, err)
	}
	if err := repo.CheckPush(ctx); err != nil {
		t.Errorf("CheckPush: %v", err)
	}
	// distribution 2.8 refuses to delete a tag: the error says so, and
	// the tag is still there.
	err = repo.Delete(ctx, "change_7_latest")
	if !errors.Is(err, oci.ErrUnsupported) || !oci.HasCode(err, oci.CodeDigestInvalid) {
		t.Errorf("DELETE tag on distribution 2.8: %v", err)
	}
	if _, err := repo.Head(ctx, "change_7_latest"); err != nil {
		t.Errorf("tag gone after a refused delete: %v", err)
	}
	if _, err := repo.Head(ctx, "nope"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("HEAD missing: %v", err)
	}

	multi, err := c.Repository(ctx, reg.Host, "myorg/multi", true)
	if err != nil {
		t.Fatal(err)
	}
	im, err := multi.Get(ctx, "change_7_latest")
	idxDigest, _ := idx.Digest()
	if err != nil || im.Digest != idxDigest.String() || !oci.IsIndex(im.MediaType) {
		t.Fatalf("GET index: %v %+v", err, im)
	}
	if err := multi.Put(ctx, "latest", im); err != nil {
		t.Fatalf("PUT index: %v", err)
	}

	bad, err := New(WithEndpoint(Endpoint{Host: reg.Host, Username: reg.Username, Password: "wrong", CA: reg.TLS.CA.CertPEM}))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Repository(ctx, reg.Host, "myorg/app", true); !errors.Is(err, oci.ErrDenied) {
		t.Errorf("wrong password: %v", err)
	}
}

func TestTokenGrants(t *testing.T) {
	t.Parallel()
	jwt := func(claims string) *transport.Token {
		enc := base64.RawURLEncoding
		return &transport.Token{Token: enc.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + enc.EncodeToString([]byte(claims)) + ".sig"}
	}
	tests := []struct {
		name       string
		tok        *transport.Token
		known      bool
		pull, push bool
	}{
		{"docker token spec", jwt(`{"access":[{"type":"repository","name":"myorg/app","actions":["pull","push"]}]}`), true, true, true},
		{"pull only", jwt(`{"access":[{"type":"repository","name":"myorg/app","actions":["pull"]}]}`), true, true, false},
		{"other repository", jwt(`{"access":[{"type":"repository","name":"myorg/lib","actions":["pull","push"]}]}`), true, false, false},
		{"wildcard action", jwt(`{"access":[{"type":"repository","name":"myorg/app","actions":["*"]}]}`), true, true, true},
		{"imagegate write", jwt(`{"sub":"zuul","access":"write"}`), true, true, true},
		{"imagegate read", jwt(`{"access":"read"}`), true, true, false},
		{"opaque", &transport.Token{Token: "abcdef"}, false, false, false},
		{"no access claim", jwt(`{"sub":"x"}`), false, false, false},
	}
	for _, tc := range tests {
		g := tokenGrants(tc.tok)
		if (g != nil) != tc.known {
			t.Errorf("%s: known = %v", tc.name, g != nil)
			continue
		}
		if g != nil && (g.allows("myorg/app", false) != tc.pull || g.allows("myorg/app", true) != tc.push) {
			t.Errorf("%s: pull %v push %v", tc.name, g.allows("myorg/app", false), g.allows("myorg/app", true))
		}
	}
}
