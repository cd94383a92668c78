package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/pki"
)

// TestRedirectPull pushes an image to the service on S3 and pulls it back
// with go-containerregistry, reading every layer and checking its digest,
// with storage.s3.redirect on and off. On, the client follows each blob
// GET's 307 to versitygw and the registry sends no blob bytes itself; off
// (the default), the registry sends them all and never redirects.
func TestRedirectPull(t *testing.T) {
	s3 := startS3(t)
	for _, tc := range []struct {
		name     string
		redirect bool
	}{
		{"redirect", true},
		{"default", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storage := s3Storage(s3, s3.NewBucket(t))
			if tc.redirect {
				storage += "    redirect: true\n"
			}
			r := start(t, t.TempDir(), storage, map[string]string{"TEST_S3_SECRET": s3.SecretKey})
			img, err := random.Image(1<<20, 3)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := name.ParseReference(r.host + "/team/app:v1")
			if err := remote.Write(ref, img, r.remoteOpts()...); err != nil {
				t.Fatalf("push: %v", err)
			}

			// The client trusts the registry's CA and the store's, and
			// records the hosts it talks to.
			ca, err := os.ReadFile(r.srv.CAFile())
			if err != nil {
				t.Fatal(err)
			}
			pool, _ := pki.CertPool(append(ca, s3.CAPEM...))
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			hosts := &hostCounter{base: tr, n: map[string]int{}}
			opts := append(r.remoteOpts(), remote.WithTransport(hosts))
			got, err := remote.Image(ref, opts...)
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			want, _ := img.Digest()
			if d, _ := got.Digest(); d != want {
				t.Fatalf("pulled %s, want %s", d, want)
			}
			if _, err := got.RawConfigFile(); err != nil {
				t.Fatalf("config: %v", err)
			}
			layers, err := got.Layers()
			if err != nil || len(layers) != 3 {
				t.Fatalf("%d layers (%v), want 3", len(layers), err)
			}
			for i, l := range layers {
				ld, _ := l.Digest()
				rc, err := l.Compressed()
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				dgr := digest.Canonical.Digester()
				_, err = io.Copy(dgr.Hash(), rc)
				rc.Close()
				if err != nil || dgr.Digest().String() != ld.String() {
					t.Fatalf("layer %d read as %s (%v), want %s", i, dgr.Digest(), err, ld)
				}
			}

			text := r.srv.Metrics().Text()
			redirects := metricValue(text, `imagegate_registry_requests_total{route="blob",method="GET",status="307"}`)
			sent := metricValue(text, `imagegate_registry_response_bytes_total{route="blob"}`)
			store := hosts.count(strings.TrimPrefix(s3.Endpoint, "https://"))
			if tc.redirect {
				// Three layers and the config.
				if redirects != 4 || sent != 0 || store != 4 {
					t.Errorf("%v redirects, %v blob bytes sent by the registry, %d requests to the store; want 4, 0, 4", redirects, sent, store)
				}
			} else if redirects != 0 || sent < 3<<20 || store != 0 {
				t.Errorf("%v redirects, %v blob bytes sent by the registry, %d requests to the store; want 0, at least 3 MiB, 0", redirects, sent, store)
			}
			// start's cleanup checks that no presigned URL was logged.
			if logs := r.logs.String(); tc.redirect && !strings.Contains(logs, "status=307") {
				t.Errorf("the log shows no redirect:\n%s", logs)
			}
		})
	}
}

// hostCounter counts the requests sent to each host.
type hostCounter struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (h *hostCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.n[req.URL.Host]++
	h.mu.Unlock()
	return h.base.RoundTrip(req)
}

func (h *hostCounter) count(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[host]
}

// metricValue returns the value of a series in the text format, 0 when
// absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}
