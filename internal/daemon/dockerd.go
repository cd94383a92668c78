package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Dockerd is a docker daemon with its own data root, exec root, socket,
// pid file and containerd namespaces, no bridge network and no iptables
// changes, so several run beside each other and beside the machine's own.
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

	bin  string
	args []string
}

// DockerdOptions configure StartDockerd.
type DockerdOptions struct {
	// DaemonJSON is written to the daemon's config file before start.
	DaemonJSON map[string]any
	// ConfigFile, if set, is used as the daemon's --config-file instead of a
	// file in the daemon's directory (for tests where a module edits it).
	ConfigFile string
}

// StartDockerd starts dockerd (DOCKERD, or dockerd from PATH) with its
// files in dir (keep its path short: unix socket paths are limited to 108
// bytes) and waits until it answers. The caller stops it (Stop) and removes
// dir (RemoveAll: dockerd leaves mounts behind).
func StartDockerd(dir string, o DockerdOptions) (*Dockerd, error) {
	bin, err := Tool("DOCKERD", "dockerd")
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
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("daemon.json: %w", err)
		}
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
	if err := d.start(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dockerd) start() error {
	p, err := Start("dockerd", exec.Command(d.bin, d.args...), d.Dir)
	if err != nil {
		return err
	}
	d.Process = p
	if err := WaitFor("dockerd", 60*time.Second, p, d.ping); err != nil {
		p.Stop()
		// The caller may remove the directory, and the log with it.
		return fmt.Errorf("%w\n--- %s ---\n%s", err, p.Log, p.LogTail(16<<10))
	}
	return nil
}

// Restart stops the daemon and starts it again with the same directories
// and config file, as a node's docker service restart does after its
// daemon.json changed.
func (d *Dockerd) Restart() error {
	d.Process.Stop()
	return d.start()
}

// Env is the environment for the docker CLI to talk to this daemon.
func (d *Dockerd) Env() []string {
	return []string{"DOCKER_HOST=" + d.Host, "DOCKER_CONFIG=" + d.ClientConfig}
}

// ping asks the daemon its version.
func (d *Dockerd) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}")
	cmd.Env = append(os.Environ(), d.Env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker version: %w: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
