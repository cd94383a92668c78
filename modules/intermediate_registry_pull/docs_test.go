package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "intermediate_registry_pull.yml", params{})
	ansibletest.CheckReturn(t, "intermediate_registry_pull.yml", run)
}
