// Command docker_image_build is the Ansible module that builds the images of
// docker_images with BuildKit and pushes them to the buildset registry (see
// docker_image_build.yml). The work is done by package build.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/build"
)

type params struct {
	build.Request
	build.Timeouts
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*build.Result, error) {
	return build.Build(ctx, p.Request, build.WithCheckMode(m.CheckMode), build.WithLogger(m.Log),
		build.WithTimeouts(p.Timeouts), build.WithRedact(m.AddSecret), build.WithProgress(m.Progress()))
}
