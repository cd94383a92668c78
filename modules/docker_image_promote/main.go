// Command docker_image_promote is the Ansible module that promotes images
// staged by docker_image_upload: after a change merges, every final tag is
// pointed at the manifest staged for the change, the staging tags are
// deleted, and stale staging tags are swept (upstream: the
// promote-docker-image role). It runs on the executor, with nothing
// installed but itself (see docker_image_promote.yml). The work is done by
// package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.PromoteSpec
	publish.DockerVerification
	Timeout time.Duration `ansible:"timeout,seconds" default:"1800"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.PromoteResult, error) {
	return publish.Promote(ctx, p.PromoteSpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret),
		publish.WithVerification(p.DockerVerification.Verification()))
}
