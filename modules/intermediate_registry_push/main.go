// Command intermediate_registry_push is the Ansible module that copies the
// images a job built from the buildset registry to the intermediate
// registry and returns them as zuul artifacts (upstream: the
// push-to-intermediate-registry role). The work is done by package
// intermediate.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/intermediate"
)

type params struct {
	intermediate.PushSpec
	Timeout time.Duration `ansible:"timeout,seconds" default:"1800"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*intermediate.PushResult, error) {
	return intermediate.Push(ctx, p.PushSpec, intermediate.WithCheckMode(m.CheckMode), intermediate.WithDiff(m.Diff),
		intermediate.WithLogger(m.Log), intermediate.WithTimeout(p.Timeout), intermediate.WithRedact(m.AddSecret))
}
