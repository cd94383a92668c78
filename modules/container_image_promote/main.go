// Command container_image_promote is the Ansible module that publishes the
// images of container_images after a change merged, as zuul-jobs'
// promote-container-image role does, with either method: tag (the final
// tags move to the change tags upload-container-image staged, which are
// then removed through each registry's API) or intermediate-registry (the
// gate build's images are copied from the intermediate registry, found
// through Zuul's builds API). It runs on the executor with nothing
// installed but itself (no skopeo). The work is done by package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.ContainerPromoteSpec
	publish.ContainerVerification
	Timeout time.Duration `ansible:"timeout,seconds" default:"1800"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.ContainerPromoteResult, error) {
	return publish.ContainerPromote(ctx, p.ContainerPromoteSpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret),
		publish.WithVerification(p.ContainerVerification.Verification()))
}
