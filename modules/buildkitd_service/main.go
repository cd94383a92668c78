// Command buildkitd_service is the Ansible module that keeps a BuildKit
// daemon running on the node with a given binary, command line and
// configuration, restarting it when any of them changed since it started
// (the ensure-buildkit role's last step). The work is done by package
// buildkitd.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/buildkitd"
)

type params struct {
	buildkitd.Spec
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*buildkitd.Result, error) {
	return buildkitd.Apply(ctx, p.Spec, buildkitd.WithCheckMode(m.CheckMode), buildkitd.WithDiff(m.Diff),
		buildkitd.WithLogger(m.Log))
}
