package buildkitd

import (
	"encoding"
	"fmt"
	"github.com/imagegate/imagegate/pkg/ansible"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// State is the desired state of the daemon.
type State string

// The states Apply accepts.
const (
	// Started: the daemon runs with the spec's binary, command line and
	// configuration (restarted if any of them changed).
	Started State = "started"
	// Stopped: the daemon this package started is stopped; its root (the
	// build cache) is kept.
	Stopped State = "stopped"
)

var _ encoding.TextUnmarshaler = (*State)(nil)

// UnmarshalText accepts started and stopped.
func (s *State) UnmarshalText(b []byte) error {
	switch v := State(b); v {
	case Started, Stopped:
		*s = v
		return nil
	}
	return fmt.Errorf("state %q: must be started or stopped", b)
}

// Manager says how the daemon runs.
type Manager string

// The managers.
const (
	// Auto is Systemd where systemd is PID 1 (/run/systemd/system exists),
	// else Process.
	Auto    Manager = "auto"
	Systemd Manager = "systemd"
	Process Manager = "process"
)

// UnmarshalText accepts auto, systemd and process.
func (m *Manager) UnmarshalText(b []byte) error {
	switch v := Manager(b); v {
	case Auto, Systemd, Process:
		*m = v
		return nil
	}
	return fmt.Errorf("service_manager %q: must be auto, systemd or process", b)
}

// Spec is what Apply makes true. Field comments name the module
// parameters, which the error messages name too; every field but Group,
// ExtraArgs and State must be set (the module's defaults are in its
// documentation).
type Spec struct {
	State State `ansible:"state" default:"started" choices:"started,stopped"`
	// Binary is buildkitd's path on the node (buildkitd).
	Binary string `ansible:"buildkitd,path" default:"/usr/local/bin/buildkitd"`
	// Config is buildkitd.toml (config); it must exist (it may be empty).
	Config string `ansible:"config,path" default:"/etc/buildkit/buildkitd.toml"`
	// Address is the unix socket buildkitd listens on (address),
	// unix:///path.
	Address string `ansible:"address" default:"unix:///run/buildkit/buildkitd.sock"`
	// Root is buildkitd's state and cache directory (root).
	Root string `ansible:"root,path" default:"/var/lib/buildkit"`
	// Group owns the socket (group, --group); empty leaves it root's.
	Group string `ansible:"group"`
	// ExtraArgs are more buildkitd arguments (extra_args).
	ExtraArgs []string `ansible:"extra_args" default:"--oci-worker=true,--containerd-worker=false"`
	// Manager is how the daemon runs (service_manager).
	Manager Manager `ansible:"service_manager" default:"auto" choices:"auto,systemd,process"`
	// Pidfile and LogFile are the process manager's pid file and log
	// (pidfile, log_file).
	Pidfile string `ansible:"pidfile,path" default:"/run/buildkit/buildkitd.pid"`
	LogFile string `ansible:"log_file,path" default:"/var/log/buildkitd.log"`
	// Unit is the systemd unit's name, without .service (unit).
	Unit string `ansible:"unit" default:"imagegate-buildkitd"`
	// StartTimeout bounds the wait for the socket (start_timeout).
	StartTimeout time.Duration `ansible:"start_timeout,seconds" default:"60"`
}

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.@-]+$`)

// normalize validates s; each error names the parameter to fix.
func (s Spec) normalize() (Spec, error) {
	// The defaults of their tags, for Go callers.
	if err := ansible.ApplyDefaults(&s, "state", "service_manager"); err != nil {
		return s, err
	}
	if err := s.State.UnmarshalText([]byte(s.State)); err != nil {
		return s, err
	}
	if err := s.Manager.UnmarshalText([]byte(s.Manager)); err != nil {
		return s, err
	}
	sock, ok := strings.CutPrefix(s.Address, "unix://")
	if !ok || !filepath.IsAbs(sock) {
		return s, fmt.Errorf("address %q: must be unix:///<absolute path>", s.Address)
	}
	for name, p := range map[string]string{"buildkitd": s.Binary, "config": s.Config, "root": s.Root, "pidfile": s.Pidfile, "log_file": s.LogFile} {
		if !filepath.IsAbs(p) {
			return s, fmt.Errorf("%s %q: must be an absolute path", name, p)
		}
	}
	if !unitRE.MatchString(s.Unit) {
		return s, fmt.Errorf("unit %q: must be a systemd unit name without .service (letters, digits, :_.@-)", s.Unit)
	}
	if s.StartTimeout <= 0 {
		return s, fmt.Errorf("start_timeout must be positive")
	}
	for i, a := range s.ExtraArgs {
		for _, own := range []string{"--config", "--addr", "--root", "--group"} {
			if a == own || strings.HasPrefix(a, own+"=") {
				return s, fmt.Errorf("extra_args[%d] %q: %s is set by its own parameter", i, a, own)
			}
		}
	}
	if s.Manager == Auto {
		s.Manager = Process
		if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
			s.Manager = Systemd
		}
	}
	if s.State == Stopped {
		return s, nil
	}
	if fi, err := os.Stat(s.Binary); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return s, fmt.Errorf("buildkitd %s is not an executable file (%v): install it first (the ensure-buildkit role does)", s.Binary, errOrMode(err, fi))
	}
	if fi, err := os.Stat(s.Config); err != nil || !fi.Mode().IsRegular() {
		return s, fmt.Errorf("config %s is not a file (%v): create it, an empty file is a valid configuration", s.Config, errOrMode(err, fi))
	}
	return s, nil
}

func errOrMode(err error, fi os.FileInfo) any {
	if err != nil {
		return err
	}
	return fi.Mode()
}

// socket is the socket's path.
func (s Spec) socket() string { return strings.TrimPrefix(s.Address, "unix://") }

// recordFile is where Apply keeps what the daemon was started with.
func (s Spec) recordFile() string {
	return filepath.Join(filepath.Dir(s.socket()), "imagegate-buildkitd.json")
}

// argv is the daemon's command line.
func (s Spec) argv() []string {
	a := []string{s.Binary, "--config", s.Config, "--addr", s.Address, "--root", s.Root}
	if s.Group != "" {
		a = append(a, "--group", s.Group)
	}
	return append(a, s.ExtraArgs...)
}
