package registry_test

import (
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/registrytest"
)

// TestConformance runs the OCI distribution-spec conformance suite (pinned,
// built by tests/setup/deps.sh) against the registry over TLS with token
// authentication, and fails on any failed, errored or skipped check.
func TestConformance(t *testing.T) {
	reg := registrytest.New(t)
	registrytest.RunConformance(t, reg.Host, reg.CAFile, reg.Username, reg.Password,
		registrytest.ConformanceOptions{Timeout: 10 * time.Minute})
}
