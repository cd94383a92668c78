// Command container_image_upload is the Ansible module that stages the
// images of container_images in the registries their repositories name,
// with each registry's container_registry_credentials entry: it copies
// each image from the buildset registry as <repository>:change_<N>_<tag>
// for a later promote (upstream: the upload-container-image role), or
// under its final tags (see container_image_upload.yml). The work is done
// by package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.ContainerUploadSpec
	publish.ContainerSigning
	Timeout time.Duration `ansible:"timeout,seconds" default:"3600"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.ContainerUploadResult, error) {
	return publish.UploadContainer(ctx, p.ContainerUploadSpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret),
		publish.WithSigning(p.ContainerSigning.Signing()))
}
