package faultproxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/pkg/pki"
)

// start runs an upstream that answers every request with 64 KiB and a
// proxy in front of it, and returns a client for the proxy.
func start(t *testing.T, cfg faultproxy.Config) (*faultproxy.Proxy, *http.Client) {
	t.Helper()
	body := strings.Repeat("x", 64<<10)
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	}))
	t.Cleanup(up.Close)
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	cert, _ := sc.TLSCertificate()
	p, err := faultproxy.Start(strings.TrimPrefix(up.URL, "https://"), faultproxy.Options{Certificate: cert, UpstreamRoots: roots}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	pool, _ := pki.CertPool(ca.CertPEM)
	// No keep-alive: on a reused connection that a fault reset, the
	// transport would send the request again by itself, and the proxy
	// would see a request more than the test made, in a sequence that
	// depends on timing.
	return p, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
}

// outcome describes what the client saw.
func outcome(c *http.Client, p *faultproxy.Proxy, method, path string) string {
	req, _ := http.NewRequest(method, "https://"+p.Host()+path, strings.NewReader("request body"))
	resp, err := c.Do(req)
	if err != nil {
		return "error"
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%d cut after %d bytes", resp.StatusCode, len(b))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		return fmt.Sprintf("%d retry-after %s", resp.StatusCode, ra)
	}
	if changed := len(b) - strings.Count(string(b), "x"); changed > 0 {
		return fmt.Sprintf("%d %d bytes, %d changed", resp.StatusCode, len(b), changed)
	}
	return fmt.Sprintf("%d %d bytes", resp.StatusCode, len(b))
}

func TestEachFault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   faultproxy.Config
		want  string
		stats func(faultproxy.Stats) int64
	}{
		{"none", faultproxy.Config{}, "200 65536 bytes", func(s faultproxy.Stats) int64 { return s.Requests - s.Faults() }},
		{"reset", faultproxy.Config{Reset: 1}, "error", func(s faultproxy.Stats) int64 { return s.Resets }},
		{"error", faultproxy.Config{Error: 1}, "5", func(s faultproxy.Stats) int64 { return s.Errors }},
		{"throttle", faultproxy.Config{Throttle: 1, RetryAfter: 1500 * time.Millisecond}, "429 retry-after 2", func(s faultproxy.Stats) int64 { return s.Throttles }},
		// The proxy stops after half the body; how much of that half reaches
		// the client before the connection drops depends on buffering.
		{"truncate", faultproxy.Config{Truncate: 1}, "200 cut after ", func(s faultproxy.Stats) int64 { return s.Truncations }},
		{"slow", faultproxy.Config{Slow: 1, Delay: time.Millisecond}, "200 65536 bytes", func(s faultproxy.Stats) int64 { return s.Slows }},
		{"corrupt", faultproxy.Config{Corrupt: 1}, "200 65536 bytes, 1 changed", func(s faultproxy.Stats) int64 { return s.Corruptions }},
		{"down", faultproxy.Config{FailAll: 503}, "503", func(s faultproxy.Stats) int64 { return s.Errors }},
		{"match", faultproxy.Config{Error: 1, Match: func(r *http.Request) bool { return r.Method == http.MethodPut }}, "200 65536 bytes",
			func(s faultproxy.Stats) int64 { return s.Requests - s.Errors }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, c := start(t, tc.cfg)
			for range 4 {
				if got := outcome(c, p, http.MethodGet, "/v2/r/blobs/sha256:x"); !strings.HasPrefix(got, tc.want) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			}
			if n := tc.stats(p.Stats()); n != 4 {
				t.Errorf("stats %+v: counted %d, want 4", p.Stats(), n)
			}
		})
	}
}

func TestSeedIsDeterministic(t *testing.T) {
	t.Parallel()
	cfg := faultproxy.Config{Seed: 42, Reset: 0.2, Error: 0.2, Throttle: 0.2, Truncate: 0.2}
	run := func(cfg faultproxy.Config) string {
		p, c := start(t, cfg)
		var out []string
		for i := range 30 {
			out = append(out, outcome(c, p, http.MethodGet, fmt.Sprintf("/v2/r/blobs/%d", i%5)))
		}
		return strings.Join(out, "\n")
	}
	a, b := run(cfg), run(cfg)
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n---\n%s", a, b)
	}
	cfg.Seed = 43
	if c := run(cfg); c == a {
		t.Errorf("seeds 42 and 43 gave the same faults")
	}
	if !strings.Contains(a, "200 65536") || !strings.Contains(a, "error") {
		t.Errorf("expected a mix of faults and answers:\n%s", a)
	}
}

func TestConfigValidated(t *testing.T) {
	t.Parallel()
	for _, cfg := range []faultproxy.Config{{Reset: 1.5}, {Error: -0.1}, {Reset: 0.6, Error: 0.6}, {Corrupt: 2}, {Slow: 0.5, Corrupt: 0.6}, {FailAll: 200}} {
		if _, err := faultproxy.Start("127.0.0.1:1", faultproxy.Options{}, cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
