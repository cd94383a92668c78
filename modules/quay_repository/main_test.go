package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "quay_repository") }

func moduleBin() string { return lib.Bin("quay_repository") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "quay_repository.yml", params{})
	ansibletest.CheckReturn(t, "quay_repository.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "quay_repository", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}
