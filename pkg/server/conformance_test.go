package server_test

import (
	"testing"

	"github.com/imagegate/imagegate/pkg/registry/registrytest"
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
