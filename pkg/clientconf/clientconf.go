// Package clientconf configures the container clients of a node to pull
// through a buildset registry: what zuul-jobs' use-buildset-registry role
// does, as one idempotent, check-mode-aware operation.
//
// The buildset registry shadows public registries by client-side mirror
// configuration (the registry itself never proxies). The namespace mapping
// rule decides where a namespace's images live in the buildset registry:
// docker.io content is stored without a prefix, so its mirror is
// <location>; every other registry's content is stored under the registry's
// name, so quay.io's mirror is <location>/quay.io. <location> is
// <alias>:<port>, where the alias is zuul-jobs.buildset-registry when the
// registry's host is an IP address (docker cannot parse bracketed IPv6
// literals in references, moby#39033) and the host name otherwise.
//
// Apply plans every edit first (reading and parsing every file it touches),
// fails before writing anything when an existing file cannot be parsed, and
// then writes each changed file atomically, restoring the ones already
// written if a later write fails. A file whose content would not change is
// not written. Per client:
//
//   - hosts: "<ip>\tzuul-jobs.buildset-registry" in /etc/hosts when the host
//     is an IP address;
//   - system: the CA in the system trust store, and its refresh command when
//     the file changed;
//   - docker: the CA in /etc/docker/certs.d/<location>/ca.crt and the mirror
//     in front of daemon.json's registry-mirrors (others kept; upstream
//     replaced them), then a configuration reload (SIGHUP) of a running
//     dockerd whose live mirrors differ, verified through its API;
//   - containers: the CA in /etc/containers/certs.d/<location>/ca.crt and
//     per namespace the mirror first in registries.conf (v2), plus
//     unqualified-search-registries;
//   - buildkit: per namespace the mirror first in buildkitd.toml, and the
//     TLS section (ca, http = false) of the mirror's host and of the
//     registry's address, where docker_image_build pushes when the alias
//     does not resolve;
//   - containerd: per namespace a hosts.toml in the config_path directory
//     with the mirror as the first host and the upstream as server;
//   - microk8s: the same hosts.toml files in microk8s' certs.d, then
//     `snap restart microk8s` when one changed (as upstream);
//   - cri-o: no files of its own (it reads the containers files), but a
//     restart (`systemctl restart crio`) when those changed and
//     /etc/crio/crio.conf exists (upstream restarts it whenever it exists).
//
// docker, containers and buildkit are configured whether or not the client
// is installed yet, so a client installed later (ensure-docker after this
// role, for example) finds its configuration; system trust, containerd and
// microk8s when their directories exist. Spec.Clients narrows the list.
//
// Credentials are written only for Spec.DockerUser (upstream's
// buildset_registry_docker_user; see credentials.go), the one exception to
// imagegate's rule that registry credentials stay in memory: the buildset
// registry serves anonymous pulls, so only pushes need them.
package clientconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Client names a group of configuration that Apply can write.
type Client string

// The clients Apply knows. The /etc/hosts alias is not a client: it is
// written whenever the registry host is an IP address, since every client
// needs it.
const (
	System     Client = "system"
	Docker     Client = "docker"
	Containers Client = "containers"
	Buildkit   Client = "buildkit"
	Containerd Client = "containerd"
	Microk8s   Client = "microk8s"
)

// AllClients lists every client in the order Apply configures them.
var AllClients = []Client{System, Docker, Containers, Buildkit, Containerd, Microk8s}

// alwaysClients are configured by default even when absent from the node,
// so that a client installed later is configured.
var alwaysClients = []Client{Docker, Containers, Buildkit}

// Namespace is one registry the buildset registry shadows: Host is the
// registry name as it appears in image references (docker.io, quay.io), and
// Upstream the URL of the real registry, used where a client needs it
// (containerd's server).
type Namespace struct {
	Host     string
	Upstream string
}

// DefaultNamespaces are upstream's defaults for buildset_registry_namespaces
// (zuul.DefaultNamespaces).
var DefaultNamespaces = func() []Namespace {
	out := make([]Namespace, len(zuul.DefaultNamespaces))
	for i, ns := range zuul.DefaultNamespaces {
		out[i] = Namespace{Host: ns.Registry, Upstream: ns.Upstream}
	}
	return out
}()

// Paths are the files and directories Apply edits, and the docker daemon
// it reloads: the module's parameters, with the locations on a real node as
// their defaults (stated once, in the tags; Apply fills an empty one in).
type Paths struct {
	Hosts string `ansible:"hosts_file,path" default:"/etc/hosts"`
	// CATrustDir and CATrustCommand default to the RedHat family's anchors
	// directory and update-ca-trust when /etc/pki/ca-trust/source/anchors
	// exists, else to Debian's /usr/local/share/ca-certificates and
	// update-ca-certificates.
	CATrustDir         string   `ansible:"ca_trust_dir,path"`
	CATrustCommand     []string `ansible:"ca_trust_command"`
	DockerDaemonJSON   string   `ansible:"docker_daemon_json,path" default:"/etc/docker/daemon.json"`
	DockerCertsDir     string   `ansible:"docker_certs_dir,path" default:"/etc/docker/certs.d"`
	DockerHost         string   `ansible:"docker_host" default:"unix:///var/run/docker.sock"`
	DockerPidfile      string   `ansible:"docker_pidfile,path" default:"/var/run/docker.pid"`
	RegistriesConf     string   `ansible:"registries_conf,path" default:"/etc/containers/registries.conf"`
	ContainersCertsDir string   `ansible:"containers_certs_dir,path" default:"/etc/containers/certs.d"`
	BuildkitdTOML      string   `ansible:"buildkitd_toml,path" default:"/etc/buildkit/buildkitd.toml"`
	BuildkitCertsDir   string   `ansible:"buildkit_certs_dir,path" default:"/etc/buildkit/certs.d"`
	ContainerdCertsDir string   `ansible:"containerd_certs_dir,path" default:"/etc/containerd/certs.d"`
	// CrioConf is cri-o's configuration file: when it exists, cri-o is
	// restarted with CrioRestartCommand after the containers files
	// changed.
	CrioConf           string   `ansible:"crio_conf,path" default:"/etc/crio/crio.conf"`
	CrioRestartCommand []string `ansible:"crio_restart_command" default:"systemctl,restart,crio"`
	// Microk8sCertsDir is microk8s' containerd certs.d; microk8s is
	// present when its parent (args/) exists, and restarted with
	// Microk8sRestartCommand when its files changed.
	Microk8sCertsDir       string   `ansible:"microk8s_certs_dir,path" default:"/var/snap/microk8s/current/args/certs.d"`
	Microk8sRestartCommand []string `ansible:"microk8s_restart_command" default:"snap,restart,microk8s"`
	// RunUserDir holds the users' runtime directories (<uid>/auth.json).
	RunUserDir string `ansible:"run_user_dir,path" default:"/run/user"`
	// KubeletDir is the kubelet's directory (config.json).
	KubeletDir string `ansible:"kubelet_dir,path" default:"/var/lib/kubelet"`
}

const (
	debianTrustDir = "/usr/local/share/ca-certificates"
	redhatTrustDir = "/etc/pki/ca-trust/source/anchors"
)

// setTrustDefaults picks the system trust store of the node's family.
func (p *Paths) setTrustDefaults() {
	redhat := isDir(redhatTrustDir)
	if p.CATrustDir == "" {
		p.CATrustDir = debianTrustDir
		if redhat {
			p.CATrustDir = redhatTrustDir
		}
	}
	if len(p.CATrustCommand) == 0 {
		p.CATrustCommand = []string{"update-ca-certificates"}
		if redhat || p.CATrustDir == redhatTrustDir {
			p.CATrustCommand = []string{"update-ca-trust"}
		}
	}
}

// Spec is what use_buildset_registry does; its fields are the module's
// parameters.
type Spec struct {
	// Registry is the buildset registry; when nil, the job's result data
	// file names it (zuul.ResolveBuildsetRegistry).
	Registry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	Zuul     zuul.Vars              `ansible:"zuul,raw"`
	// Namespaces are [registry host, upstream URL] pairs (ParseNamespaces);
	// DefaultNamespaces when nil.
	Namespaces [][]string `ansible:"buildset_registry_namespaces"`
	// Unqualified are the registries searched for short names; an empty,
	// non-nil list sets unqualified-search-registries to [].
	Unqualified []string `ansible:"buildset_registry_unqualified_registries" default:"docker.io"`
	// Clients to configure. Empty means docker, containers and buildkit
	// (whether installed or not) and every other client whose directory
	// exists on the node; a listed client is configured even if its
	// directories must be created.
	Clients []Client `ansible:"clients" choices:"system,docker,containers,buildkit,containerd,microk8s"`
	Paths
	// DockerUser is the user whose client configuration gets the
	// registry's credentials (buildset_registry_docker_user); empty
	// writes none.
	DockerUser string `ansible:"buildset_registry_docker_user"`
	// DockerReload sends SIGHUP to a running dockerd whose live registry
	// mirrors differ from daemon.json, and waits until it reports them.
	DockerReload bool `ansible:"docker_reload" default:"true"`
	// DockerLoad loads the buildset's speculative images of the
	// namespaces other than docker.io into a running dockerd under their
	// real names (dockerload.go): dockerd's mirrors cover docker.io only.
	DockerLoad bool `ansible:"docker_load" default:"true"`
}

// Option configures Apply.
type Option func(*options)

type options struct {
	check, diff   bool
	log           *slog.Logger
	redact        func(string)
	reloadTimeout time.Duration
	lookupUser    func(name string) (*user.User, error)
}

// WithCheckMode decides everything and changes nothing (default false).
func WithCheckMode(check bool) Option { return func(o *options) { o.check = check } }

// WithDiff makes the result carry one before/after pair per file that
// changes, and one for a dockerd reload (default false).
func WithDiff(diff bool) Option { return func(o *options) { o.diff = diff } }

// WithLogger sets the logger for progress (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRedact sets the function that hides the buildset registry's password
// when it is read from the job's result data file (a module's AddSecret).
// It is never written or returned, but must not be printed either. The
// default does nothing.
func WithRedact(redact func(secret string)) Option { return func(o *options) { o.redact = redact } }

// WithReloadTimeout bounds the wait for a reloaded dockerd to report the
// new mirrors (default 30 s).
func WithReloadTimeout(d time.Duration) Option { return func(o *options) { o.reloadTimeout = d } }

// WithLookupUser sets how buildset_registry_docker_user is found (default:
// user.Lookup, /etc/passwd and NSS).
func WithLookupUser(f func(name string) (*user.User, error)) Option {
	return func(o *options) { o.lookupUser = f }
}

// apply is one Apply: the spec, checked and completed, and the options.
type apply struct {
	Spec
	reg        *zuul.BuildsetRegistry
	namespaces []Namespace
	o          options
}

// check validates the spec and fills in defaults.
func (s Spec) check(o options) (*apply, error) {
	if o.log == nil || o.redact == nil || o.lookupUser == nil {
		return nil, errors.New("clientconf: nil logger, redact or user lookup function")
	}
	if o.reloadTimeout <= 0 {
		return nil, fmt.Errorf("the dockerd reload timeout must be positive, got %s", o.reloadTimeout)
	}
	reg, err := zuul.ResolveBuildsetRegistry(s.Registry, &s.Zuul, o.redact)
	if err != nil {
		return nil, err
	}
	if err := ansible.ApplyDefaults(&s); err != nil {
		return nil, err
	}
	a := &apply{Spec: s, reg: reg, o: o, namespaces: DefaultNamespaces}
	if s.Namespaces != nil {
		if a.namespaces, err = ParseNamespaces(s.Namespaces); err != nil {
			return nil, err
		}
	}
	seen := map[string]int{}
	for i, ns := range a.namespaces {
		if j, ok := seen[ns.Host]; ok {
			return nil, fmt.Errorf("buildset_registry_namespaces[%d]: %s is already listed at index %d", i, ns.Host, j)
		}
		seen[ns.Host] = i
	}
	for i, u := range s.Unqualified {
		if err := validRegistryHost(u); err != nil {
			return nil, fmt.Errorf("buildset_registry_unqualified_registries[%d]: %w", i, err)
		}
	}
	for _, c := range s.Clients {
		if !slices.Contains(AllClients, c) {
			return nil, fmt.Errorf("clients: unknown client %q (known: system, docker, containers, buildkit, containerd, microk8s)", c)
		}
	}
	a.Paths.setTrustDefaults()
	if !strings.HasPrefix(a.Paths.DockerHost, "unix://") {
		return nil, fmt.Errorf("docker_host %q: only unix:// sockets are supported", a.Paths.DockerHost)
	}
	return a, nil
}

// FileChange is one file Apply wrote (or would write, in check mode).
type FileChange struct {
	Path   string
	Client string // "hosts" or a Client
	Before string
	After  string
	// Created is true when the file did not exist.
	Created bool
	// Secret is true for files holding credentials: Before and After
	// then describe the change without the content.
	Secret bool
}

// Result is what Apply did (or would do, in check mode).
type Result struct {
	ansible.Outcome
	// Alias and Location are the registry's host name for clients and
	// <alias>:<port>.
	Alias    string `json:"alias"`
	Location string `json:"location"`
	// Mirrors maps each namespace to its mirror location.
	Mirrors map[string]string `json:"mirrors"`
	// Configured lists the clients configured, in order.
	Configured []Client `json:"clients"`
	// Skipped maps clients not configured to the reason.
	Skipped map[Client]string `json:"skipped_clients"`
	// Files are the files written (or that would be), with their content
	// before and after; FileNames their paths.
	Files     []FileChange `json:"-"`
	FileNames []string     `json:"files"`
	// CATrustUpdated is true when the trust store refresh command ran (or
	// would run).
	CATrustUpdated bool `json:"ca_trust_updated"`
	// DockerReloaded is true when dockerd was reloaded (or would be).
	DockerReloaded bool `json:"docker_reloaded"`
	// Restarted lists the services restarted (or that would be) because
	// their configuration changed: crio, microk8s.
	Restarted []string `json:"restarted"`
	// DockerImages are the speculative images of other namespaces than
	// docker.io loaded into dockerd under their real names (docker_load),
	// with whether each was (or would be) tagged anew.
	DockerImages []DockerImage `json:"docker_images"`
}

// Mirror returns the mirror location of namespace host under the namespace
// mapping rule: location for docker.io, location/host for any other.
func Mirror(location, host string) string {
	if host == "docker.io" {
		return location
	}
	return location + "/" + host
}

// Apply configures the clients described by spec: every parameter is
// checked, and every file read and planned, before anything is written.
func Apply(ctx context.Context, spec Spec, opts ...Option) (*Result, error) {
	o := options{log: slog.New(slog.DiscardHandler), redact: func(string) {}, reloadTimeout: 30 * time.Second, lookupUser: lookupUser}
	for _, f := range opts {
		f(&o)
	}
	s, err := spec.check(o)
	if err != nil {
		return nil, err
	}
	reg := s.reg
	res := &Result{
		Alias:        reg.Alias(),
		Location:     reg.Location(),
		Mirrors:      map[string]string{},
		Configured:   []Client{},
		Skipped:      map[Client]string{},
		Files:        []FileChange{},
		FileNames:    []string{},
		Restarted:    []string{},
		DockerImages: []DockerImage{},
	}
	for _, ns := range s.namespaces {
		res.Mirrors[ns.Host] = Mirror(res.Location, ns.Host)
	}
	ca := normalizePEM(reg.Cert)

	p := &plan{}
	if reg.Alias() != reg.Host {
		if err := p.hostsAlias(s.Paths.Hosts, strings.Trim(reg.Host, "[]"), res.Alias); err != nil {
			return nil, err
		}
	}
	clients := s.Clients
	explicit := len(clients) > 0
	if !explicit {
		clients = AllClients
	}
	for _, c := range AllClients {
		if !slices.Contains(clients, c) {
			if explicit {
				res.Skipped[c] = "not requested"
			}
			continue
		}
		if !explicit && !slices.Contains(alwaysClients, c) {
			if dir := s.Paths.marker(c); !isDir(dir) {
				res.Skipped[c] = fmt.Sprintf("%s does not exist", dir)
				continue
			}
		}
		var err error
		switch c {
		case System:
			err = p.systemTrust(s.Paths.CATrustDir, res.Alias, ca)
		case Docker:
			err = p.docker(s.Paths, res.Location, ca)
		case Containers:
			err = p.containers(s.Paths, res.Location, ca, s.namespaces, s.Unqualified, &res.Warnings)
		case Buildkit:
			err = p.buildkit(s.Paths, res.Location, reg.Address(), ca, s.namespaces)
		case Containerd:
			err = p.containerd(string(Containerd), s.Paths.ContainerdCertsDir, res.Location, ca, s.namespaces)
		case Microk8s:
			err = p.containerd(string(Microk8s), s.Paths.Microk8sCertsDir, res.Location, ca, s.namespaces)
		}
		if err != nil {
			return nil, err
		}
		res.Configured = append(res.Configured, c)
	}
	if s.DockerUser != "" {
		if err := p.credentials(s, res.Location); err != nil {
			return nil, err
		}
	}

	changed := map[string]bool{}
	for _, ch := range p.changes {
		fc := FileChange{Path: ch.path, Client: ch.client, Before: string(ch.before), After: string(ch.after), Created: !ch.existed}
		if ch.secret {
			fc.Secret = true
			fc.Before, fc.After = "", "(credentials for "+res.Location+", not shown)\n"
			if ch.existed {
				fc.Before = "(not shown: holds credentials)\n"
			}
		}
		res.Files = append(res.Files, fc)
		res.FileNames = append(res.FileNames, ch.path)
		changed[ch.client] = true
	}
	res.CATrustUpdated = p.trustChanged
	res.Changed = len(p.changes) > 0
	// Services that read the files at start, restarted when they changed.
	var restarts []restart
	if changed[string(Containers)] && isFile(s.Paths.CrioConf) {
		restarts = append(restarts, restart{"crio", s.Paths.CrioRestartCommand})
	}
	if changed[string(Microk8s)] {
		restarts = append(restarts, restart{"microk8s", s.Paths.Microk8sRestartCommand})
	}
	for _, r := range restarts {
		res.Restarted = append(res.Restarted, r.name)
	}

	if !o.check {
		if err := p.commit(o.log); err != nil {
			return nil, err
		}
		if p.trustChanged {
			if err := runCommand(ctx, o.log, s.Paths.CATrustCommand); err != nil {
				return nil, fmt.Errorf("refreshing the system trust store (the CA file %s was written): %w",
					filepath.Join(s.Paths.CATrustDir, res.Alias+".crt"), err)
			}
		}
		for _, r := range restarts {
			if err := runCommand(ctx, o.log, r.command); err != nil {
				return nil, fmt.Errorf("restarting %s to use the new configuration (the files were written): %w", r.name, err)
			}
		}
	}

	if slices.Contains(res.Configured, Docker) && s.DockerReload {
		reloaded, err := reloadDocker(ctx, s, p.dockerMirrors, p.dockerChanged, &res.Warnings)
		if err != nil {
			return nil, err
		}
		if reloaded {
			res.DockerReloaded = true
			res.Changed = true
		}
	}
	if slices.Contains(res.Configured, Docker) && s.DockerLoad {
		images, changed, err := loadDockerImages(ctx, s, res.Location)
		if err != nil {
			return nil, err
		}
		res.DockerImages = images
		res.Changed = res.Changed || changed
	}
	sort.Strings(res.Warnings)
	res.outcome(s)
	return res, nil
}

// outcome sets the message and, when asked, the diff: one pair per file
// (a new file has an empty before), and one for a dockerd reload.
func (res *Result) outcome(s *apply) {
	verb := "configured"
	if !res.Changed {
		verb = "already configured"
	}
	res.Msg = fmt.Sprintf("%s %v for the buildset registry at %s (%d file(s) changed)", verb, res.Configured, res.Location, len(res.Files))
	var loaded []string
	for _, im := range res.DockerImages {
		if im.Changed {
			loaded = append(loaded, im.Name)
		}
	}
	if len(loaded) > 0 {
		res.Msg += fmt.Sprintf("; loaded %d speculative image(s) into dockerd", len(loaded))
	}
	if !s.o.diff {
		return
	}
	for _, f := range res.Files {
		before := f.Before
		if f.Created {
			before = ""
		}
		res.Diff = append(res.Diff, ansible.Diff{Before: before, After: f.After, BeforeHeader: f.Path, AfterHeader: f.Path})
	}
	if res.DockerReloaded {
		res.Diff = append(res.Diff, ansible.Diff{BeforeHeader: "dockerd (live configuration)", AfterHeader: "dockerd (live configuration)",
			Before: "", After: "reloaded: registry mirrors differed from " + s.Paths.DockerDaemonJSON + "\n"})
	}
	if len(loaded) > 0 {
		res.Diff = append(res.Diff, ansible.Diff{BeforeHeader: "dockerd (images)", AfterHeader: "dockerd (images)",
			After: "loaded from the buildset registry: " + strings.Join(loaded, ", ") + "\n"})
	}
}

// marker is the directory whose existence means a client is present.
func (p *Paths) marker(c Client) string {
	switch c {
	case System:
		return p.CATrustDir
	case Docker:
		return filepath.Dir(p.DockerDaemonJSON)
	case Containers:
		return filepath.Dir(p.RegistriesConf)
	case Buildkit:
		return filepath.Dir(p.BuildkitdTOML)
	case Containerd:
		return filepath.Dir(p.ContainerdCertsDir)
	case Microk8s:
		return filepath.Dir(p.Microk8sCertsDir)
	}
	return ""
}

// restart is a service to restart after its configuration changed.
type restart struct {
	name    string
	command []string
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// normalizePEM trims surrounding space and ends the PEM with one newline, so
// a certificate passed with or without a trailing newline is the same file.
func normalizePEM(s string) []byte {
	return []byte(strings.TrimSpace(s) + "\n")
}

// caFile is where a client's copy of the CA lives: <dir>/<location>/ca.crt,
// the per-registry layout docker, podman and containerd all read.
func caFile(dir, location string) string {
	return filepath.Join(dir, location, "ca.crt")
}
