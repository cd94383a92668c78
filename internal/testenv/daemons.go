package testenv

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Dockerd is a docker daemon started for a test (StartDockerd) or a
// program (StartDockerdErr).
type Dockerd struct {
	*Process
	// Host is the DOCKER_HOST value: unix://<dir>/docker.sock.
	Host string
	// ConfigFile is the daemon.json the daemon reads (--config-file).
	ConfigFile string
	// Pidfile is the daemon's --pidfile.
	Pidfile string
	// Dir is the daemon's private directory.
	Dir string
	// ClientConfig is a private DOCKER_CONFIG directory for the CLI, so
	// logins never touch ~/.docker.
	ClientConfig string
	t            testing.TB
	bin          string
	args         []string
}

// DockerdOptions configure StartDockerd.
type DockerdOptions struct {
	// DaemonJSON is written to the daemon's config file before start.
	DaemonJSON map[string]any
	// ConfigFile, if set, is used as the daemon's --config-file instead of a
	// file in the daemon's directory (for tests where a module edits it).
	ConfigFile string
}

// StartDockerd starts dockerd with its own data root, exec root, socket and
// pid file, no bridge network and no iptables changes, and waits until it
// answers.
func StartDockerd(t testing.TB, o DockerdOptions) *Dockerd {
	t.Helper()
	d, err := newDockerd(ShortTempDir(t), o)
	if err != nil {
		t.Fatal(err)
	}
	d.t = t
	d.Process = StartProcess(t, "dockerd", exec.Command(d.bin, d.args...), d.Dir)
	d.waitReady()
	return d
}

// StartDockerdErr is StartDockerd for programs (cmd/imagegate-demo): the
// daemon's files go in dir (keep its path short: unix sockets), and the
// caller stops it (Stop). The methods that fail a test (Docker, Login,
// Restart) are not for it.
func StartDockerdErr(dir string, o DockerdOptions) (*Dockerd, error) {
	d, err := newDockerd(dir, o)
	if err != nil {
		return nil, err
	}
	if d.Process, err = StartProcessErr("dockerd", exec.Command(d.bin, d.args...), d.Dir); err != nil {
		return nil, err
	}
	if err := WaitForErr("dockerd", 60*time.Second, d.Process, d.ping); err != nil {
		d.Stop()
		return nil, err
	}
	return d, nil
}

// newDockerd prepares a daemon in dir: its configuration file and command
// line.
func newDockerd(dir string, o DockerdOptions) (*Dockerd, error) {
	bin, err := ToolErr("DOCKERD", "dockerd")
	if err != nil {
		return nil, err
	}
	d := &Dockerd{Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock"), bin: bin,
		Pidfile: filepath.Join(dir, "docker.pid"), ClientConfig: filepath.Join(dir, "client")}
	if err := os.MkdirAll(d.ClientConfig, 0o700); err != nil {
		return nil, err
	}
	d.ConfigFile = o.ConfigFile
	if d.ConfigFile == "" {
		d.ConfigFile = filepath.Join(dir, "daemon.json")
	}
	if _, err := os.Stat(d.ConfigFile); os.IsNotExist(err) || o.DaemonJSON != nil {
		cfg := o.DaemonJSON
		if cfg == nil {
			cfg = map[string]any{}
		}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := os.WriteFile(d.ConfigFile, b, 0o644); err != nil {
			return nil, err
		}
	}
	d.args = []string{
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--host", d.Host,
		"--pidfile", d.Pidfile,
		"--config-file", d.ConfigFile,
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--containerd-namespace", "ig-" + filepath.Base(dir),
		"--containerd-plugins-namespace", "igp-" + filepath.Base(dir),
	}
	return d, nil
}

// ping asks the daemon its version.
func (d *Dockerd) ping() error {
	_, err := RunErr(d.Env(), "docker", "version", "--format", "{{.Server.Version}}")
	return err
}

func (d *Dockerd) waitReady() {
	d.t.Helper()
	WaitFor(d.t, "dockerd", 60*time.Second, d.Process, d.ping)
}

// Restart stops the daemon and starts it again with the same directories
// and config file, as a node's docker service restart does after its
// daemon.json changed.
func (d *Dockerd) Restart() {
	d.t.Helper()
	d.Process.Stop()
	d.Process = StartProcess(d.t, "dockerd", exec.Command(d.bin, d.args...), d.Dir)
	d.waitReady()
}

// Env is the environment for the docker CLI to talk to this daemon.
func (d *Dockerd) Env() []string {
	return []string{"DOCKER_HOST=" + d.Host, "DOCKER_CONFIG=" + d.ClientConfig}
}

// Docker runs the docker CLI against this daemon and returns its stdout.
func (d *Dockerd) Docker(args ...string) string {
	d.t.Helper()
	return Run(d.t, d.Env(), "docker", args...)
}

// DockerErr runs the docker CLI and returns its output or error.
func (d *Dockerd) DockerErr(args ...string) (string, error) {
	return RunErr(d.Env(), "docker", args...)
}

// Buildkitd is a buildkit daemon started for a test.
type Buildkitd struct {
	*Process
	// Addr is the buildkit address: unix://<dir>/buildkitd.sock.
	Addr       string
	ConfigFile string
	Dir        string
}

// StartBuildkitd starts buildkitd (OCI worker, runc) with config as its
// buildkitd.toml, on a private root and socket, and waits until it answers.
func StartBuildkitd(t testing.TB, config string) *Buildkitd {
	t.Helper()
	bin := Tool(t, "BUILDKITD", "buildkitd")
	dir := ShortTempDir(t)
	b := &Buildkitd{Dir: dir, ConfigFile: filepath.Join(dir, "buildkitd.toml")}
	sock := filepath.Join(dir, "buildkitd.sock")
	b.Addr = "unix://" + sock
	if err := os.WriteFile(b.ConfigFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--root", filepath.Join(dir, "root"), "--addr", b.Addr,
		"--config", b.ConfigFile, "--oci-worker-binary", "runc", "--containerd-worker=false")
	b.Process = StartProcess(t, "buildkitd", cmd, dir)
	waitSocket(t, "buildkitd", sock, b.Process)
	buildctl := Tool(t, "BUILDCTL", "buildctl")
	WaitFor(t, "buildkitd workers", 30*time.Second, b.Process, func() error {
		_, err := RunErr(nil, buildctl, "--addr", b.Addr, "debug", "workers")
		return err
	})
	return b
}

// Distribution is Debian's docker-registry (distribution 2.8) started for a
// test, with TLS and htpasswd authentication.
type Distribution struct {
	*Process
	// Host is 127.0.0.1:<port>.
	Host     string
	Port     int
	Username string
	Password string
	TLS      *TLS
	Dir      string
}

// DistributionOptions configure StartDistribution.
type DistributionOptions struct {
	// NoAuth serves without htpasswd authentication.
	NoAuth bool
	// DataDir, if set, is the storage root; the default is private to the
	// test.
	DataDir string
}

// StartDistribution starts docker-registry serving TLS on 127.0.0.1 and
// [::1] at an ephemeral port, with deletes enabled and a bcrypt htpasswd
// user, and waits until it answers.
func StartDistribution(t testing.TB, o DistributionOptions) *Distribution {
	t.Helper()
	d, cmd := DistributionCommand(t, o)
	d.Process = StartProcess(t, "docker-registry", cmd, d.Dir)
	waitHTTP(t, "docker-registry", "https://"+d.Host+"/v2/", d.TLS.Client(), d.Process)
	return d
}

// DistributionCommand prepares docker-registry as StartDistribution does
// (directory, TLS, htpasswd user, configuration) and returns it with the
// command that serves it, not started, for benchmarks that time the start
// (StartProcess it in d.Dir).
func DistributionCommand(t testing.TB, o DistributionOptions) (*Distribution, *exec.Cmd) {
	t.Helper()
	bin := Tool(t, "DOCKER_REGISTRY", "docker-registry")
	dir := ShortTempDir(t)
	d := &Distribution{Dir: dir, Port: FreePort(t), Username: "tester", Password: RandomString(t, 16)}
	d.Host = fmt.Sprintf("127.0.0.1:%d", d.Port)
	d.TLS = NewTLS(t, dir)
	data := o.DataDir
	if data == "" {
		data = filepath.Join(dir, "data")
	}
	auth := ""
	if !o.NoAuth {
		hash, err := bcrypt.GenerateFromPassword([]byte(d.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(d.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", htpasswd)
	} else {
		d.Username, d.Password = "", ""
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: ":%d"
  secret: %s
  tls:
    certificate: %s
    key: %s
%s`, data, d.Port, RandomString(t, 16), d.TLS.CertFile, d.TLS.KeyFile, auth)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	return d, cmd
}

// Containerd is a containerd daemon started for a test.
type Containerd struct {
	*Process
	// Address is the path of its GRPC socket, for ctr --address.
	Address string
	Dir     string
}

// StartContainerd starts containerd with a private root, state directory
// and socket, and waits until it answers.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	bin := Tool(t, "CONTAINERD", "containerd")
	dir := ShortTempDir(t)
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Address, c.Address+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	c.Process = StartProcess(t, "containerd", cmd, dir)
	waitSocket(t, "containerd", c.Address, c.Process)
	WaitFor(t, "containerd", 30*time.Second, c.Process, func() error {
		_, err := RunErr(nil, "ctr", "--address", c.Address, "version")
		return err
	})
	return c
}

// Ctr runs ctr against this containerd and returns its stdout.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, nil, "ctr", append([]string{"--address", c.Address}, args...)...)
}

// LocalIP returns a non-loopback IPv4 address of this machine, or
// 127.0.0.1 when there is none.
func LocalIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// HasIPv6Loopback reports whether ::1 can be bound on this machine.
func HasIPv6Loopback() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// PodmanRunLimits are the flags `podman run` needs in sandboxes whose hard
// rlimits are lower than podman's defaults (runc fails with "error setting
// rlimits" otherwise).
var PodmanRunLimits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// Podman runs podman with private storage under dir and the given
// registries.conf, returning stdout.
func Podman(t testing.TB, dir, registriesConf string, args ...string) string {
	t.Helper()
	out, err := PodmanErr(dir, registriesConf, args...)
	if err != nil {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// PodmanErr is Podman returning the error.
func PodmanErr(dir, registriesConf string, args ...string) (string, error) {
	base := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	env := []string{"REGISTRY_AUTH_FILE=" + filepath.Join(dir, "auth.json")}
	if registriesConf != "" {
		env = append(env, "CONTAINERS_REGISTRIES_CONF="+registriesConf)
	}
	return RunErr(env, "podman", append(base, args...)...)
}

// Login logs the daemon's private CLI config in to a registry, passing the
// password on stdin so it never appears in a process list.
func (d *Dockerd) Login(host, username, password string) {
	d.t.Helper()
	cmd := exec.Command("docker", "login", "-u", username, "--password-stdin", host)
	cmd.Env = append(os.Environ(), d.Env()...)
	cmd.Stdin = strings.NewReader(password)
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Fatalf("docker login %s: %v: %s", host, err, out)
	}
}
