// Command use_buildset_registry is the Ansible module that configures the
// container clients of a node to pull through the buildset registry
// (upstream: the use-buildset-registry role). The work is done by package
// clientconf.
package main

import (
	"context"
	"fmt"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/clientconf"
	"github.com/imagegate/imagegate/pkg/zuul"
)

type params struct {
	Registry     *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	Zuul         zuul.Vars              `ansible:"zuul,raw"`
	Namespaces   [][]string             `ansible:"buildset_registry_namespaces"`
	Unqualified  []string               `ansible:"buildset_registry_unqualified_registries" default:"docker.io"`
	Clients      []string               `ansible:"clients" choices:"system,docker,containers,buildkit,containerd,microk8s"`
	DockerUser   string                 `ansible:"buildset_registry_docker_user"`
	HostsFile    string                 `ansible:"hosts_file,path" default:"/etc/hosts"`
	CATrustDir   string                 `ansible:"ca_trust_dir,path"`
	CATrustCmd   []string               `ansible:"ca_trust_command"`
	DaemonJSON   string                 `ansible:"docker_daemon_json,path" default:"/etc/docker/daemon.json"`
	DockerCerts  string                 `ansible:"docker_certs_dir,path" default:"/etc/docker/certs.d"`
	DockerHost   string                 `ansible:"docker_host" default:"unix:///var/run/docker.sock"`
	DockerPid    string                 `ansible:"docker_pidfile,path" default:"/var/run/docker.pid"`
	DockerReload bool                   `ansible:"docker_reload" default:"true"`
	Registries   string                 `ansible:"registries_conf,path" default:"/etc/containers/registries.conf"`
	CtrsCerts    string                 `ansible:"containers_certs_dir,path" default:"/etc/containers/certs.d"`
	BuildkitTOML string                 `ansible:"buildkitd_toml,path" default:"/etc/buildkit/buildkitd.toml"`
	BuildkitCert string                 `ansible:"buildkit_certs_dir,path" default:"/etc/buildkit/certs.d"`
	CtrdCerts    string                 `ansible:"containerd_certs_dir,path" default:"/etc/containerd/certs.d"`
	CrioConf     string                 `ansible:"crio_conf,path" default:"/etc/crio/crio.conf"`
	CrioRestart  []string               `ansible:"crio_restart_command" default:"systemctl,restart,crio"`
	MicroCerts   string                 `ansible:"microk8s_certs_dir,path" default:"/var/snap/microk8s/current/args/certs.d"`
	MicroRestart []string               `ansible:"microk8s_restart_command" default:"snap,restart,microk8s"`
	RunUserDir   string                 `ansible:"run_user_dir,path" default:"/run/user"`
	KubeletDir   string                 `ansible:"kubelet_dir,path" default:"/var/lib/kubelet"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
	reg := p.Registry
	if reg == nil {
		var err error
		if reg, err = zuul.LoadBuildsetRegistry(p.Zuul.Executor.ResultDataFile); err != nil {
			return nil, err
		}
	}
	// Read from a file, the password was not a no_log parameter. It is
	// never used here, but must not be printed either.
	m.AddSecret(reg.Password)
	nss, err := clientconf.ParseNamespaces(p.Namespaces)
	if err != nil {
		return nil, err
	}
	var clients []clientconf.Client
	for _, c := range p.Clients {
		clients = append(clients, clientconf.Client(c))
	}
	spec := clientconf.Spec{
		Registry:    reg,
		Namespaces:  nss,
		Unqualified: p.Unqualified,
		Clients:     clients,
		Paths: clientconf.Paths{
			Hosts:                  p.HostsFile,
			CATrustDir:             p.CATrustDir,
			CATrustCommand:         p.CATrustCmd,
			DockerDaemonJSON:       p.DaemonJSON,
			DockerCertsDir:         p.DockerCerts,
			DockerHost:             p.DockerHost,
			DockerPidfile:          p.DockerPid,
			RegistriesConf:         p.Registries,
			ContainersCertsDir:     p.CtrsCerts,
			BuildkitdTOML:          p.BuildkitTOML,
			BuildkitCertsDir:       p.BuildkitCert,
			ContainerdCertsDir:     p.CtrdCerts,
			CrioConf:               p.CrioConf,
			CrioRestartCommand:     p.CrioRestart,
			Microk8sCertsDir:       p.MicroCerts,
			Microk8sRestartCommand: p.MicroRestart,
			RunUserDir:             p.RunUserDir,
			KubeletDir:             p.KubeletDir,
		},
		DockerUser:   p.DockerUser,
		DockerReload: p.DockerReload,
		CheckMode:    m.CheckMode,
		Log:          m.Log,
	}
	r, err := clientconf.Apply(ctx, spec)
	if err != nil {
		return nil, err
	}
	for _, w := range r.Warnings {
		m.Warn("%s", w)
	}
	res := &ansible.Result{Changed: r.Changed}
	files := []string{}
	for _, f := range r.Files {
		files = append(files, f.Path)
		before := f.Before
		if f.Created {
			before = ""
		}
		res.Diff = append(res.Diff, ansible.Diff{Before: before, After: f.After,
			BeforeHeader: f.Path, AfterHeader: f.Path})
	}
	configured := []string{}
	for _, c := range r.Configured {
		configured = append(configured, string(c))
	}
	skipped := map[string]string{}
	for c, why := range r.Skipped {
		skipped[string(c)] = why
	}
	if r.DockerReloaded {
		res.Diff = append(res.Diff, ansible.Diff{BeforeHeader: "dockerd (live configuration)",
			AfterHeader: "dockerd (live configuration)", Before: "", After: "reloaded: registry mirrors differed from " + spec.Paths.DockerDaemonJSON + "\n"})
	}
	res.Msg = summary(r)
	res.Set("alias", r.Alias).Set("location", r.Location).Set("mirrors", r.Mirrors).
		Set("clients", configured).Set("skipped_clients", skipped).Set("files", files).
		Set("ca_trust_updated", r.CATrustUpdated).Set("docker_reloaded", r.DockerReloaded).
		Set("restarted", nonNil(r.Restarted))
	return res, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func summary(r *clientconf.Result) string {
	verb := "configured"
	if !r.Changed {
		verb = "already configured"
	}
	return fmt.Sprintf("%s %v for the buildset registry at %s (%d file(s) changed)", verb, r.Configured, r.Location, len(r.Files))
}
