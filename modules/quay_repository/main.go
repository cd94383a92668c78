// Command quay_repository is the Ansible module of zuul-jobs'
// ensure-quay-repo role: it creates the quay repositories container_images
// names (namespace, repo_shortname) that do not exist yet, with their
// visibility, through quay's API, and sets the visibility of existing ones
// when asked. The work is done by package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.QuayRepositorySpec
	Timeout time.Duration `ansible:"timeout,seconds" default:"300"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.QuayRepositoryResult, error) {
	return publish.EnsureQuayRepositories(ctx, p.QuayRepositorySpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret))
}
