// Command docker_image_build is the Ansible module that builds the images of
// docker_images with BuildKit and pushes them to the buildset registry (see
// docker_image_build.yml). The work is done by package build.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/build"
)

type params struct {
	build.Request
	Timeout        time.Duration `ansible:"timeout,seconds" default:"3600"`
	ConnectTimeout time.Duration `ansible:"connect_timeout,seconds" default:"30"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*build.Result, error) {
	return build.Build(ctx, p.Request, build.WithCheckMode(m.CheckMode), build.WithLogger(m.Log),
		build.WithTimeout(p.Timeout), build.WithConnectTimeout(p.ConnectTimeout), build.WithRedact(m.AddSecret),
		build.WithProgress(m.Progress()))
}
