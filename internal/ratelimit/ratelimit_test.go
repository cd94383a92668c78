package ratelimit_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ratelimit"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
)

func TestQuotaCountsAndDown(t *testing.T) {
	t.Parallel()
	up := registrytest.New(t)
	tl := testenv.NewTLS(t, t.TempDir())
	cert, err := tl.Server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(up.CAPEM)
	p, err := ratelimit.Start(up.Host, ratelimit.Options{Certificate: cert, UpstreamRoots: roots}, ratelimit.Config{Quota: 2, RetryAfter: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(tl.CA.CertPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(method, path string) (int, string, error) {
		req, _ := http.NewRequest(method, p.URL()+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After"), nil
	}
	for i, want := range []int{404, 404, 429, 429} {
		st, ra, err := get("GET", "/v2/library/x/manifests/1")
		if err != nil || st != want {
			t.Fatalf("GET %d: %d %v, want %d", i+1, st, err, want)
		}
		if want == 429 && ra != "30" {
			t.Errorf("429 with Retry-After %q, want 30", ra)
		}
	}
	// HEADs and other paths do not count.
	if st, _, _ := get("HEAD", "/v2/library/x/manifests/1"); st != 404 {
		t.Errorf("HEAD over quota: %d", st)
	}
	if n := p.Count("GET", "/manifests/1"); n != 2 {
		t.Errorf("Count %d, want the 2 forwarded", n)
	}
	if p.Refused() != 2 || p.Counted() != 2 {
		t.Errorf("refused %d counted %d", p.Refused(), p.Counted())
	}
	if err := p.Down(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := get("GET", "/v2/"); err == nil {
		t.Error("a request reached a proxy that is down")
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	p.SetQuota(0)
	if st, _, err := get("GET", "/v2/library/x/manifests/1"); err != nil || st != 404 {
		t.Errorf("after Up, no quota: %d %v", st, err)
	}
}
