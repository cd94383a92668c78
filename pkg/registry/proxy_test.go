package registry_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/ratelimit"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/upstream"
)

// pullThrough is an upstream registry (ours, with authenticated reads)
// behind a counting, rate-limiting proxy, and a pull-through cache of it
// for the quay.io namespace.
type pullThrough struct {
	upstream *registrytest.Registry
	up       *client // pushes to the upstream directly
	limit    *ratelimit.Proxy
	cache    *registrytest.Registry
	pull     *client // anonymous reads of the cache
}

func newPullThrough(t *testing.T, cfg ratelimit.Config, ttl time.Duration) *pullThrough {
	t.Helper()
	up := registrytest.New(t, registry.WithAnonymousRead(false))
	tl := testenv.NewTLS(t, t.TempDir())
	cert, err := tl.Server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(up.CAPEM)
	lim, err := ratelimit.Start(up.Host, ratelimit.Options{Certificate: cert, UpstreamRoots: roots}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close() })
	uc, err := upstream.New(lim.URL(), upstream.WithCA(tl.CA.CertPEM), upstream.WithCredentials(up.Username, up.Password),
		upstream.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cache := registrytest.New(t, registry.WithUpstreams(registry.UpstreamNamespace{Registry: "quay.io", Upstream: uc}),
		registry.WithUpstreamTagTTL(ttl))
	return &pullThrough{upstream: up, up: newClient(t, up), limit: lim, cache: cache, pull: anonymous(t, cache)}
}

// get pulls path from the cache and returns the response and body.
func (p *pullThrough) get(method, path string) (*http.Response, []byte) {
	return p.pull.do(method, path, nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
}

type pushedImage struct {
	manifest []byte
	digest   digest.Digest
	blobs    []digest.Digest
}

// pushImage pushes an image with a random layer to the upstream.
func (p *pullThrough) pushImage(repo, tag string) pushedImage {
	m := p.up.image(repo)
	p.up.putManifest(repo, tag, m)
	var doc struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(m, &doc); err != nil {
		p.up.t.Fatal(err)
	}
	img := pushedImage{manifest: m, digest: digest.FromBytes(m), blobs: []digest.Digest{doc.Config.Digest}}
	for _, l := range doc.Layers {
		img.blobs = append(img.blobs, l.Digest)
	}
	return img
}

// pullImage pulls repo:tag and its blobs from the cache and checks them.
func (p *pullThrough) pullImage(t *testing.T, repo, tag string, img pushedImage) {
	t.Helper()
	resp, body := p.get("GET", "/v2/quay.io/"+repo+"/manifests/"+tag)
	expect(t, resp, body, http.StatusOK, "")
	if !bytes.Equal(body, img.manifest) || resp.Header.Get("Docker-Content-Digest") != img.digest.String() {
		t.Fatalf("manifest %s:%s from the cache differs from the upstream's", repo, tag)
	}
	for _, b := range img.blobs {
		resp, body := p.get("GET", "/v2/quay.io/"+repo+"/blobs/"+b.String())
		expect(t, resp, body, http.StatusOK, "")
		if digest.FromBytes(body) != b {
			t.Fatalf("blob %s from the cache has digest %s", b, digest.FromBytes(body))
		}
	}
}

func TestPullThrough(t *testing.T) {
	t.Parallel()

	t.Run("a miss is fetched once, stored and served", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, time.Hour)
		img := p.pushImage("org/app", "v1")
		for range 3 {
			p.pullImage(t, "org/app", "v1", img)
		}
		// By digest too: stored, not asked for again.
		resp, body := p.get("HEAD", "/v2/quay.io/org/app/manifests/"+img.digest.String())
		expect(t, resp, body, http.StatusOK, "")
		if n := p.limit.Count("GET", "/manifests/v1"); n != 1 {
			t.Errorf("the upstream served the tag %d times, want 1\n%s", n, p.limit.Summary())
		}
		for _, b := range img.blobs {
			if n := p.limit.Count("GET", "/blobs/"+b.String()); n != 1 {
				t.Errorf("the upstream served blob %s %d times, want 1\n%s", b, n, p.limit.Summary())
			}
		}
		// Upstream tags are not listed: listings show pushed images only.
		resp, body = p.get("GET", "/v2/quay.io/org/app/tags/list")
		expect(t, resp, body, http.StatusOK, "")
		if strings.Contains(string(body), "v1") {
			t.Errorf("tag list shows an upstream tag: %s", body)
		}
	})

	t.Run("concurrent misses make one upstream fetch", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, time.Hour)
		img := p.pushImage("org/app", "v1")
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, path := range append([]string{"/manifests/v1"}, "/blobs/"+img.blobs[1].String()) {
					req, _ := http.NewRequest("GET", p.cache.URL()+"/v2/quay.io/org/app"+path, nil)
					resp, err := p.cache.Client().Do(req)
					if err != nil {
						errs <- err
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("GET %s: %d", path, resp.StatusCode)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := p.limit.Count("GET", "/blobs/"+img.blobs[1].String()); n != 1 {
			t.Errorf("8 concurrent pulls made %d upstream fetches of the layer, want 1\n%s", n, p.limit.Summary())
		}
		if n := p.limit.Count("GET", "/manifests/v1"); n != 1 {
			t.Errorf("8 concurrent pulls made %d upstream fetches of the tag, want 1\n%s", n, p.limit.Summary())
		}
	})

	t.Run("a pushed image shadows the upstream's", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, 0)
		p.pushImage("org/app", "v1")
		spec := newClient(t, p.cache)
		m := spec.image("quay.io/org/app")
		spec.putManifest("quay.io/org/app", "v1", m)
		resp, body := p.get("GET", "/v2/quay.io/org/app/manifests/v1")
		expect(t, resp, body, http.StatusOK, "")
		if !bytes.Equal(body, m) {
			t.Fatal("the cache served the upstream's v1, not the pushed one")
		}
		if n := p.limit.Requests(); n != 0 {
			t.Errorf("a pushed tag made %d upstream requests\n%s", n, p.limit.Summary())
		}
	})

	t.Run("a moved tag is revalidated after its TTL", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, 0)
		p.pullImage(t, "org/app", "v1", p.pushImage("org/app", "v1"))
		// Unchanged: one HEAD, no new GET.
		p.pullImage(t, "org/app", "v1", p.pushImage("org/app", "v1"))
		newer := p.pushImage("org/app", "v1")
		p.pullImage(t, "org/app", "v1", newer)
		if heads := p.limit.Count("HEAD", "/manifests/v1"); heads < 2 {
			t.Errorf("%d HEADs of the tag, want one per pull after the first\n%s", heads, p.limit.Summary())
		}
	})

	t.Run("a rate-limited upstream: cached tags served stale, misses answer 429", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{Counts: func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/v2/org/") }}, 0)
		img := p.pushImage("org/app", "v1")
		p.pullImage(t, "org/app", "v1", img)
		p.limit.SetQuota(p.limit.Counted()) // used up
		resp, body := p.get("GET", "/v2/quay.io/org/app/manifests/v1")
		expect(t, resp, body, http.StatusOK, "")
		if w := resp.Header.Get("Warning"); !strings.Contains(w, "429") || !strings.Contains(w, "quay.io") {
			t.Errorf("stale tag served with Warning %q, want the cause (429) and the upstream named", w)
		}
		other := p.pushImage("org/other", "v1")
		resp, body = p.get("GET", "/v2/quay.io/org/other/manifests/v1")
		expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		resp, body = p.get("GET", "/v2/quay.io/org/other/blobs/"+other.blobs[1].String())
		expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
		if !strings.Contains(p.cache.Logs(), "could not confirm") {
			t.Error("no warning in the registry log for the stale tag")
		}
	})

	t.Run("an upstream that is down: cached content served, misses fail at once", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, 0)
		img := p.pushImage("org/app", "v1")
		p.pullImage(t, "org/app", "v1", img)
		if err := p.limit.Down(); err != nil {
			t.Fatal(err)
		}
		p.pullImage(t, "org/app", "v1", img)
		resp, body := p.get("GET", "/v2/quay.io/org/app/manifests/v1")
		if w := resp.Header.Get("Warning"); !strings.Contains(w, "quay.io") || !strings.Contains(w, "connect") {
			t.Errorf("stale tag served with Warning %q, want the upstream and the cause", w)
		}
		expect(t, resp, body, http.StatusOK, "")
		resp, body = p.get("GET", "/v2/quay.io/org/app/manifests/v2")
		expect(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
		resp, body = p.get("GET", "/v2/quay.io/org/app/blobs/"+digest.FromString("missing").String())
		expect(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	})

	t.Run("unknown upstream content and names outside the namespaces are 404", func(t *testing.T) {
		t.Parallel()
		p := newPullThrough(t, ratelimit.Config{}, 0)
		resp, body := p.get("GET", "/v2/quay.io/org/none/manifests/v1")
		expect(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
		resp, body = p.get("GET", "/v2/quay.io/org/none/blobs/"+digest.FromString("x").String())
		expect(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
		before := p.limit.Requests()
		resp, body = p.get("GET", "/v2/org/none/manifests/v1") // docker.io is not configured
		expect(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
		if p.limit.Requests() != before {
			t.Error("a repository outside the namespaces was looked up upstream")
		}
	})
}

// TestPullThroughRefusesCorruptContent puts a proxy that changes one byte
// of every body between the cache and the upstream: nothing is served or
// stored.
func TestPullThroughRefusesCorruptContent(t *testing.T) {
	t.Parallel()
	up := registrytest.New(t)
	tl := testenv.NewTLS(t, t.TempDir())
	cert, err := tl.Server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(up.CAPEM)
	fp, err := faultproxy.Start(up.Host, faultproxy.Options{Certificate: cert, UpstreamRoots: roots},
		faultproxy.Config{Corrupt: 1, Match: func(r *http.Request) bool { return r.Method == http.MethodGet }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	uc, err := upstream.New("https://"+fp.Host(), upstream.WithCA(tl.CA.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	cache := registrytest.New(t, registry.WithUpstreams(registry.UpstreamNamespace{Registry: "docker.io", Upstream: uc}))
	push := newClient(t, up)
	m := push.image("library/base")
	push.putManifest("library/base", "v1", m)
	var doc struct {
		Layers []struct{ Digest digest.Digest }
	}
	_ = json.Unmarshal(m, &doc)
	layer := doc.Layers[0].Digest
	mdg := digest.FromBytes(m)

	pull := anonymous(t, cache)
	for _, path := range []string{"/v2/library/base/blobs/" + layer.String(), "/v2/library/base/manifests/" + mdg.String()} {
		resp, body := pull.do("GET", path, nil)
		expect(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
		if !strings.Contains(string(body), "does not match its digest") {
			t.Errorf("GET %s: %s, want the digest mismatch named", path, body)
		}
	}
	for _, d := range []digest.Digest{layer, mdg} {
		if _, err := cache.Driver.StatBlob(context.Background(), d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("corrupt upstream content %s was stored (%v)", d, err)
		}
	}
	// A tag whose manifest bytes do not match the digest the upstream
	// names in its HEAD answer is refused too.
	resp, body := pull.do("GET", "/v2/library/base/manifests/v1", nil)
	expect(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
}

func TestNewRefusesBadUpstreams(t *testing.T) {
	t.Parallel()
	uc, err := upstream.New("https://registry.example.org")
	if err != nil {
		t.Fatal(err)
	}
	drv := registrytest.New(t).Driver
	for _, tc := range []struct {
		name string
		opts []registry.Option
		want string
	}{
		{"twice", []registry.Option{registry.WithUpstreams(registry.UpstreamNamespace{"quay.io", uc}, registry.UpstreamNamespace{"quay.io", uc})}, "twice"},
		{"a port", []registry.Option{registry.WithUpstreams(registry.UpstreamNamespace{"localhost:5000", uc})}, "no port"},
		{"no upstream", []registry.Option{registry.WithUpstreams(registry.UpstreamNamespace{Registry: "quay.io"})}, "no upstream"},
		{"negative TTL", []registry.Option{registry.WithUpstreams(registry.UpstreamNamespace{"quay.io", uc}), registry.WithUpstreamTagTTL(-time.Second)}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registry.New(drv, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	for _, u := range []string{"http://quay.io", "https://user:pw@quay.io", "https://quay.io/v2", "quay.io"} {
		if _, err := upstream.New(u); err == nil {
			t.Errorf("upstream.New(%q) accepted", u)
		}
	}
}
