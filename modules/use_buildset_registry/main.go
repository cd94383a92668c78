// Command use_buildset_registry is the Ansible module that configures the
// container clients of a node to pull through the buildset registry
// (upstream: the use-buildset-registry role). The work is done by package
// clientconf.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/clientconf"
)

type params struct {
	clientconf.Spec
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*clientconf.Result, error) {
	return clientconf.Apply(ctx, p.Spec, clientconf.WithCheckMode(m.CheckMode), clientconf.WithDiff(m.Diff),
		clientconf.WithLogger(m.Log), clientconf.WithRedact(m.AddSecret))
}
