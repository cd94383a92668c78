package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "registry_tag_remove") }

func moduleBin() string { return lib.Bin("registry_tag_remove") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "registry_tag_remove.yml", params{})
	ansibletest.CheckReturn(t, "registry_tag_remove.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "registry_tag_remove", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}
