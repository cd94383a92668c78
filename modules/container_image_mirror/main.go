// Command container_image_mirror is the Ansible module of zuul-jobs'
// mirror-container-images role: it copies container images from one
// registry to another, indexes whole and manifests byte for byte (skopeo
// copy --all), after checking every destination against
// container_registry_credentials. It needs nothing installed but itself
// (no skopeo). The work is done by package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.MirrorSpec
	Timeout time.Duration `ansible:"timeout,seconds" default:"3600"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.MirrorResult, error) {
	return publish.Mirror(ctx, p.MirrorSpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret))
}
