package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "container_image_mirror") }

func moduleBin() string { return lib.Bin("container_image_mirror") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "container_image_mirror.yml", params{})
	ansibletest.CheckReturn(t, "container_image_mirror.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "container_image_mirror", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}
