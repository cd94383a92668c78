// Command intermediate_registry_pull is the Ansible module that copies the
// speculative images of the changes ahead from the intermediate registry
// into the buildset registry (upstream: the
// pull-from-intermediate-registry role). The work is done by package
// intermediate.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/intermediate"
)

type params struct {
	intermediate.PullSpec
	Timeout time.Duration `ansible:"timeout,seconds" default:"1800"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*intermediate.PullResult, error) {
	return intermediate.Pull(ctx, p.PullSpec, intermediate.WithCheckMode(m.CheckMode), intermediate.WithDiff(m.Diff),
		intermediate.WithLogger(m.Log), intermediate.WithTimeout(p.Timeout), intermediate.WithRedact(m.AddSecret))
}
