// Command buildset_registry is the Ansible module that starts, stops or
// removes a buildset registry on a node (upstream: the
// run-buildset-registry role). The same executable is the registry daemon:
// the module installs a copy of itself and starts it in serve mode. The
// work is done by package buildset.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/buildset"
)

type params struct {
	buildset.Spec
}

func main() {
	buildset.ServeIfRequested()
	ansible.Main(run)
}

func run(ctx context.Context, m *ansible.Module, p *params) (*buildset.Result, error) {
	return buildset.Apply(ctx, p.Spec, buildset.WithCheckMode(m.CheckMode), buildset.WithDiff(m.Diff),
		buildset.WithLogger(m.Log))
}
