package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/registrytest"
)

// TestConformanceS3 runs the OCI distribution-spec conformance suite
// against the registry service on the S3 driver: versitygw in make test,
// SeaweedFS in make test-seaweedfs (IMAGEGATE_SEAWEEDFS=1). Any failed,
// errored or skipped check fails the test.
func TestConformanceS3(t *testing.T) {
	s3 := startS3(t)
	r := start(t, t.TempDir(), s3Storage(s3, s3.NewBucket(t)), map[string]string{"TEST_S3_SECRET": s3.SecretKey})
	runConformance(t, r)
}

// TestConformanceFilesystem runs the suite against the service on the
// filesystem driver: the same code as pkg/registry's TestConformance, with
// the server's metrics, health and TLS around it.
func TestConformanceFilesystem(t *testing.T) {
	r := start(t, t.TempDir(), "", nil)
	runConformance(t, r)
}

// runConformance runs the suite against a running service, as its
// write user, trusting the service's CA.
func runConformance(t *testing.T, r *running) {
	t.Helper()
	registrytest.RunConformance(t, r.host, r.srv.CAFile(), r.user, r.password, registrytest.ConformanceOptions{})
}

// TestConformanceS3Redirect runs the suite against the service on S3 with
// storage.s3.redirect: the suite's client follows each blob GET's 307 to
// versitygw, trusting both CAs. Two adjustments, both about the redirect
// rather than the registry:
//
//   - The store is addressed as localhost, the registry as 127.0.0.1: the
//     suite sets Authorization on its requests, and Go's client keeps it
//     on a redirect to the same host name (whatever the port), which would
//     send the registry's token to the store.
//   - OCI_API_BLOBS_DIGEST_HEADER is off: the suite checks
//     Docker-Content-Digest on the final response, which is the store's;
//     the registry sends the header on the 307 (TestBlobRedirect checks
//     it), and the spec makes it optional for clients.
func TestConformanceS3Redirect(t *testing.T) {
	s3 := startS3(t)
	storage := strings.Replace(s3Storage(s3, s3.NewBucket(t)), "https://127.0.0.1:", "https://localhost:", 1) + "    redirect: true\n"
	r := start(t, t.TempDir(), storage, map[string]string{"TEST_S3_SECRET": s3.SecretKey})
	ca, err := os.ReadFile(r.srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(bundle, append(ca, s3.CAPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	registrytest.RunConformance(t, r.host, bundle, r.user, r.password, registrytest.ConformanceOptions{
		Env: map[string]string{"OCI_API_BLOBS_DIGEST_HEADER": "false"}})
	if v := metricValue(r.srv.Metrics().Text(), `imagegate_registry_requests_total{route="blob",method="GET",status="307"}`); v == 0 {
		t.Error("the suite's blob GETs were not redirected")
	}
}
