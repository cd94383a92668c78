// Command buildset_registry is the Ansible module that starts, stops or
// removes a buildset registry on a node (upstream: the
// run-buildset-registry role). The same executable is the registry daemon:
// the module installs a copy of itself and starts it in serve mode.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/buildset"
)

type params struct {
	State  string   `ansible:"state" default:"started" choices:"started,stopped,absent"`
	Root   string   `ansible:"buildset_registry_root,path" default:"~/buildset_registry"`
	Port   int      `ansible:"buildset_registry_port" default:"5000"`
	Host   string   `ansible:"buildset_registry_host"`
	Listen []string `ansible:"buildset_registry_listen"`
}

func main() {
	buildset.ServeIfRequested()
	ansible.Main(run)
}

func run(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
	spec := buildset.Spec{State: buildset.State(p.State), Root: p.Root, Port: p.Port, Host: p.Host, Listen: p.Listen}
	r, err := buildset.Apply(ctx, spec, buildset.WithCheckMode(m.CheckMode), buildset.WithLogger(m.Log))
	if err != nil {
		return nil, err
	}
	res := &ansible.Result{Changed: r.Changed, Msg: r.Msg, Diff: []ansible.Diff{{Before: r.Before, After: r.After}}}
	res.Set("state", p.State).Set("root", r.Root).Set("log_file", r.LogFile).Set("pid", r.PID)
	if r.Registry != nil {
		res.Set("buildset_registry", r.Registry)
	}
	return res, nil
}
