// Command buildkitd_service is the Ansible module that keeps a BuildKit
// daemon running on the node with a given binary, command line and
// configuration, restarting it when any of them changed since it started
// (the ensure-buildkit role's last step). The work is done by package
// buildkitd.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/buildkitd"
)

type params struct {
	State        string   `ansible:"state" default:"started" choices:"started,stopped"`
	Binary       string   `ansible:"buildkitd,path" default:"/usr/local/bin/buildkitd"`
	Config       string   `ansible:"config,path" default:"/etc/buildkit/buildkitd.toml"`
	Address      string   `ansible:"address" default:"unix:///run/buildkit/buildkitd.sock"`
	Root         string   `ansible:"root,path" default:"/var/lib/buildkit"`
	Group        string   `ansible:"group"`
	ExtraArgs    []string `ansible:"extra_args" default:"--oci-worker=true,--containerd-worker=false"`
	Manager      string   `ansible:"service_manager" default:"auto" choices:"auto,systemd,process"`
	Pidfile      string   `ansible:"pidfile,path" default:"/run/buildkit/buildkitd.pid"`
	LogFile      string   `ansible:"log_file,path" default:"/var/log/buildkitd.log"`
	Unit         string   `ansible:"unit" default:"imagegate-buildkitd"`
	StartTimeout int      `ansible:"start_timeout" default:"60"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
	spec := buildkitd.Spec{State: buildkitd.State(p.State), Binary: p.Binary, Config: p.Config, Address: p.Address,
		Root: p.Root, Group: p.Group, ExtraArgs: p.ExtraArgs, Manager: buildkitd.Manager(p.Manager),
		Pidfile: p.Pidfile, LogFile: p.LogFile, Unit: p.Unit, StartTimeout: time.Duration(p.StartTimeout) * time.Second}
	r, err := buildkitd.Apply(ctx, spec, buildkitd.WithCheckMode(m.CheckMode), buildkitd.WithLogger(m.Log))
	if err != nil {
		return nil, err
	}
	res := &ansible.Result{Changed: r.Changed, Msg: r.Msg,
		Diff: []ansible.Diff{{Before: r.Before, After: r.After, BeforeHeader: "buildkitd", AfterHeader: "buildkitd"}}}
	res.Set("state", p.State).Set("pid", r.PID).Set("service_manager", string(r.Manager)).
		Set("logs", r.Logs).Set("address", p.Address)
	return res, nil
}
