package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/imagegate/imagegate/internal/daemon"
)

// Dockerd is a docker daemon started for a test (StartDockerd).
type Dockerd struct {
	*daemon.Dockerd
	t testing.TB
}

// DockerdOptions configure StartDockerd.
type DockerdOptions = daemon.DockerdOptions

// StartDockerd starts dockerd with its own data root, exec root, socket and
// pid file, no bridge network and no iptables changes (daemon.StartDockerd),
// and waits until it answers. It is stopped at the end of the test.
func StartDockerd(t testing.TB, o DockerdOptions) *Dockerd {
	t.Helper()
	d, err := daemon.StartDockerd(ShortTempDir(t), o)
	if err != nil {
		t.Fatal(err)
	}
	// Stops the process current at the end of the test (Restart replaces
	// it).
	t.Cleanup(func() {
		if t.Failed() {
			dumpLog(t, d.Process)
		}
		d.Stop()
	})
	return &Dockerd{Dockerd: d, t: t}
}

// Restart stops the daemon and starts it again with the same directories
// and config file, as a node's docker service restart does after its
// daemon.json changed.
func (d *Dockerd) Restart() {
	d.t.Helper()
	if err := d.Dockerd.Restart(); err != nil {
		dumpLog(d.t, d.Process)
		d.t.Fatal(err)
	}
}

// Docker runs the docker CLI against this daemon and returns its stdout.
func (d *Dockerd) Docker(args ...string) string {
	d.t.Helper()
	return Run(d.t, d.Env(), "docker", args...)
}

// Buildkitd is a buildkit daemon started for a test.
type Buildkitd struct {
	*daemon.Process
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
		_, err := run(nil, buildctl, "--addr", b.Addr, "debug", "workers")
		return err
	})
	return b
}

// Distribution is Debian's docker-registry (distribution 2.8) started for a
// test, with TLS and htpasswd authentication.
type Distribution struct {
	*daemon.Process
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
	// PlainHTTP serves plain HTTP, as upstream's test registries do: for
	// tests of docker's registry conventions (loopback HTTP fallback,
	// insecure registries). Start such a registry with StartProcess;
	// StartDistribution waits for HTTPS.
	PlainHTTP bool
	// Port, if set, is the port to listen on (every address); the
	// default is a free one.
	Port int
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
	port := o.Port
	if port == 0 {
		port = FreePort(t)
	}
	d := &Distribution{Dir: dir, Port: port, Username: "tester", Password: RandomString(t, 16)}
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
	tlsCfg := fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", d.TLS.CertFile, d.TLS.KeyFile)
	if o.PlainHTTP {
		tlsCfg = ""
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
%s%s`, data, d.Port, RandomString(t, 16), tlsCfg, auth)
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
	*daemon.Process
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
		_, err := run(nil, "ctr", "--address", c.Address, "version")
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
	base := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	env := []string{"REGISTRY_AUTH_FILE=" + filepath.Join(dir, "auth.json")}
	if registriesConf != "" {
		env = append(env, "CONTAINERS_REGISTRIES_CONF="+registriesConf)
	}
	return Run(t, env, "podman", append(base, args...)...)
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
