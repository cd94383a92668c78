package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// daemon is a process the demo started and stops.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startDaemon starts cmd in its own process group, logging to
// <dir>/<name>.log.
func startDaemon(name string, cmd *exec.Cmd, dir string) (*daemon, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop ends the daemon's process group: SIGTERM, then SIGKILL after 10 s.
func (d *daemon) stop() {
	if d == nil || d.exited() {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// waitFor polls cond until it succeeds, the daemon exits, or the deadline
// passes.
func waitFor(what string, timeout time.Duration, d *daemon, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if d != nil && d.exited() {
			return fmt.Errorf("%s exited (see %s): %v", d.name, d.log, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dockerd is the node's docker daemon, started with the flags imagegate's
// tests use (tests/testenv): its own data root, exec root, socket, pid
// file and configuration file, no bridge and no iptables changes.
type dockerd struct {
	*daemon
	host, configFile, pidfile, clientConfig, dir string
}

func startDockerd(dir string) (*dockerd, error) {
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		return nil, errors.New("dockerd not found: install Debian's docker.io (make deps)")
	}
	d := &dockerd{dir: dir, host: "unix://" + filepath.Join(dir, "docker.sock"),
		configFile: filepath.Join(dir, "daemon.json"), pidfile: filepath.Join(dir, "docker.pid"),
		clientConfig: filepath.Join(dir, "client")}
	if err := os.MkdirAll(d.clientConfig, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.configFile, []byte("{}\n"), 0o644); err != nil {
		return nil, err
	}
	ns := "igdemo-" + filepath.Base(dir)
	d.daemon, err = startDaemon("dockerd", exec.Command(bin,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--host", d.host,
		"--pidfile", d.pidfile,
		"--config-file", d.configFile,
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--containerd-namespace", ns, "--containerd-plugins-namespace", ns+"-plugins",
	), dir)
	if err != nil {
		return nil, err
	}
	err = waitFor("dockerd", 60*time.Second, d.daemon, func() error {
		cmd := exec.Command("docker", "version", "--format", "{{.Server.Version}}")
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_CONFIG="+d.clientConfig)
		return cmd.Run()
	})
	if err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// serverRegistry is imagegate's registry served in this process, with TLS
// from a CA made for it and one write user.
type serverRegistry struct {
	name     string
	host     string
	port     int
	username string
	password string
	caPEM    []byte
	srv      *http.Server
}

func startRegistry(name, dir string) (*serverRegistry, error) {
	drv, err := filesystem.New(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	password, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	rg := &serverRegistry{name: name, username: "zuul", password: password}
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	h, err := registry.New(drv,
		registry.WithUsers(registry.User{Name: rg.username, Password: rg.password, Access: registry.AccessWrite}),
		registry.WithLogger(slog.New(slog.NewTextHandler(logFile, nil))))
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA("imagegate demo "+name+" CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rg.host, rg.port, rg.caPEM = "127.0.0.1", l.Addr().(*net.TCPAddr).Port, ca.CertPEM
	rg.srv = &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = rg.srv.ServeTLS(l, "", "") }()
	return rg, nil
}

func (rg *serverRegistry) address() string { return net.JoinHostPort(rg.host, strconv.Itoa(rg.port)) }

func (rg *serverRegistry) stop() {
	if rg != nil && rg.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rg.srv.Shutdown(ctx)
	}
}

// stopPidfile ends the process whose pid a job wrote to path (buildkitd,
// started by the ensure-buildkit role).
func stopPidfile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	stopPid(pid)
}

// stopUnder ends processes whose executable lies under dir: buildset
// registries a failed job left running (the module copies itself into the
// registry's root, inside the build directory).
func stopUnder(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.HasPrefix(exe, dir+"/") {
			stopPid(pid)
		}
	}
}

func stopPid(pid int) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// removeAll removes dir, unmounting what a daemon left mounted below it.
func removeAll(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				mounts = append(mounts, f[1])
			}
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	}
	_ = os.RemoveAll(dir)
}
