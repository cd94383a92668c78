package main

import (
	"testing"

	"github.com/imagegate/imagegate/pkg/ansible/ansibletest"
)

func TestDocs(t *testing.T) {
	ansibletest.CheckDocs(t, "docker_image_build.yml", params{})
}
