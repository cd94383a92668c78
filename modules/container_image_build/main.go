// Command container_image_build is the Ansible module that builds the
// images of container_images with BuildKit, pushes them to the buildset
// registry and leaves them where container_command says the job expects
// them: podman's store or dockerd (upstream: the build-container-image
// role; see container_image_build.yml). The work is done by package build.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/build"
)

type params struct {
	build.ContainerRequest
	build.Timeouts
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*build.ContainerResult, error) {
	return build.BuildContainer(ctx, p.ContainerRequest, build.WithCheckMode(m.CheckMode), build.WithLogger(m.Log),
		build.WithTimeouts(p.Timeouts), build.WithRedact(m.AddSecret), build.WithProgress(m.Progress()))
}
