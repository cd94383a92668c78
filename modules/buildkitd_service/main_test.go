package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "buildkitd_service") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "buildkitd_service.yml", params{})
	ansibletest.CheckReturn(t, "buildkitd_service.yml", run)
}

func TestAnsibleDoc(t *testing.T) {
	ansibletest.CheckAnsibleDoc(t, lib, "buildkitd_service", "service_manager", "start_timeout", "imagegate-buildkitd.json", "RETURN VALUES")
}

// node is one buildkitd's files, all private to the test.
type node struct {
	dir, config, ca, pidfile, log string
	args                          map[string]any
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := testenv.ShortTempDir(t)
	n := &node{dir: dir, config: filepath.Join(dir, "etc", "buildkitd.toml"), ca: filepath.Join(dir, "etc", "ca.crt"),
		pidfile: filepath.Join(dir, "run", "buildkitd.pid"), log: filepath.Join(dir, "log", "buildkitd.log")}
	os.MkdirAll(filepath.Dir(n.config), 0o755)
	if err := os.WriteFile(n.config, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n.args = map[string]any{
		"buildkitd":       testenv.Tool(t, "BUILDKITD", "buildkitd"),
		"config":          n.config,
		"address":         "unix://" + filepath.Join(dir, "run", "buildkitd.sock"),
		"root":            filepath.Join(dir, "root"),
		"service_manager": "process",
		"pidfile":         n.pidfile,
		"log_file":        n.log,
		"extra_args":      []string{"--oci-worker-binary=runc", "--containerd-worker=false"},
	}
	t.Cleanup(func() {
		o := n.run(t, map[string]any{"state": "stopped"})
		if o.Failed() {
			t.Errorf("stopping buildkitd: %s", o.Stdout)
		}
		if t.Failed() {
			if b, err := os.ReadFile(n.log); err == nil {
				t.Logf("buildkitd log:\n%s", b)
			}
		}
	})
	return n
}

func (n *node) run(t *testing.T, extra map[string]any) *ansibletest.Output {
	t.Helper()
	a := map[string]any{}
	for k, v := range n.args {
		a[k] = v
	}
	for k, v := range extra {
		a[k] = v
	}
	return ansibletest.RunBinary(t, lib.Bin("buildkitd_service"), a)
}

func (n *node) pid(t *testing.T, o *ansibletest.Output) int {
	t.Helper()
	if o.Failed() {
		t.Fatalf("module failed: %s\n%s", o.Stdout, o.Stderr)
	}
	p, _ := o.Result["pid"].(float64)
	return int(p)
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// TestRestartsWhenConfigurationChanges: the first run starts buildkitd,
// the second changes nothing; a change of buildkitd.toml, of a CA file it
// names or of the command line restarts it (check mode only says so);
// stopped stops it, and a second stop changes nothing.
func TestRestartsWhenConfigurationChanges(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	o := n.run(t, nil)
	pid1 := n.pid(t, o)
	if !o.Changed() || pid1 == 0 || !alive(pid1) || !strings.Contains(o.Msg(), "started buildkitd") {
		t.Fatalf("first run: %s", o.Stdout)
	}
	if got, _ := os.ReadFile(n.pidfile); strings.TrimSpace(string(got)) != strconv.Itoa(pid1) {
		t.Errorf("pid file holds %q, want %d", got, pid1)
	}
	var rec struct {
		Argv  []string
		Files map[string]string
	}
	b, err := os.ReadFile(filepath.Join(n.dir, "run", "imagegate-buildkitd.json"))
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.Files[n.config] == "" || len(rec.Argv) < 7 {
		t.Fatalf("record: %s, %v", b, err)
	}

	o = n.run(t, nil)
	if o.Changed() || n.pid(t, o) != pid1 {
		t.Fatalf("second run: %s", o.Stdout)
	}

	// The configuration now names a CA file: restart.
	if err := os.WriteFile(n.ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "[registry.\"zuul-jobs.buildset-registry:5000\"]\n  http = false\n  ca = [\"" + n.ca + "\"]\n"
	if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	o = ansibletest.RunBinary(t, lib.Bin("buildkitd_service"), withCheckMode(n.args))
	if !o.Changed() || n.pid(t, o) != pid1 || !strings.Contains(o.Msg(), "would restart buildkitd: "+n.config+" changed since it started") {
		t.Fatalf("check mode after a config change: %s", o.Stdout)
	}
	if !alive(pid1) {
		t.Fatal("check mode stopped buildkitd")
	}
	o = n.run(t, nil)
	pid2 := n.pid(t, o)
	if !o.Changed() || pid2 == pid1 || alive(pid1) || !alive(pid2) {
		t.Fatalf("after a config change: %s (old pid alive %v)", o.Stdout, alive(pid1))
	}
	if o = n.run(t, nil); o.Changed() {
		t.Fatalf("run after the restart: %s", o.Stdout)
	}

	// The CA file's content changes (a new buildset registry): restart.
	if err := os.WriteFile(n.ca, []byte("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o = n.run(t, nil)
	pid3 := n.pid(t, o)
	if !o.Changed() || pid3 == pid2 || !strings.Contains(o.Msg(), n.ca+" changed since it started") {
		t.Fatalf("after a CA change: %s", o.Stdout)
	}

	// Another command line: restart.
	o = n.run(t, map[string]any{"extra_args": []string{"--oci-worker-binary=runc", "--containerd-worker=false", "--debug"}})
	pid4 := n.pid(t, o)
	if !o.Changed() || pid4 == pid3 || !strings.Contains(o.Msg(), "command line changed") {
		t.Fatalf("after an argument change: %s", o.Stdout)
	}

	o = n.run(t, map[string]any{"state": "stopped"})
	if !o.Changed() || alive(pid4) {
		t.Fatalf("stop: %s", o.Stdout)
	}
	if o = n.run(t, map[string]any{"state": "stopped"}); o.Changed() {
		t.Fatalf("second stop: %s", o.Stdout)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "root")); err != nil {
		t.Errorf("stop removed the root (the build cache): %v", err)
	}
}

func withCheckMode(args map[string]any) map[string]any {
	a := map[string]any{"_ansible_check_mode": true}
	for k, v := range args {
		a[k] = v
	}
	return a
}

// TestStrangers: a pid file naming another program (the pid reused) is not
// signalled, and a buildkitd the module did not start on the same socket
// makes it fail, naming it, without touching it.
func TestStrangers(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	sleep := exec.Command("sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	os.MkdirAll(filepath.Dir(n.pidfile), 0o755)
	os.WriteFile(n.pidfile, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"), 0o644)
	o := n.run(t, nil)
	pid := n.pid(t, o)
	if !o.Changed() || pid == sleep.Process.Pid || syscall.Kill(sleep.Process.Pid, 0) != nil {
		t.Fatalf("with a stale pid file: %s (sleep alive: %v)", o.Stdout, syscall.Kill(sleep.Process.Pid, 0) == nil)
	}
	n.run(t, map[string]any{"state": "stopped"})

	// A buildkitd started by someone else on the socket.
	other := newNode(t)
	addr := other.args["address"].(string)
	cmd := exec.Command(testenv.Tool(t, "BUILDKITD", "buildkitd"), "--root", filepath.Join(other.dir, "foreign-root"),
		"--addr", addr, "--oci-worker-binary", "runc", "--containerd-worker=false")
	foreign := testenv.StartProcess(t, "foreign-buildkitd", cmd, other.dir)
	testenv.WaitFor(t, "the foreign buildkitd", 60*time.Second, foreign, func() error {
		c, err := exec.Command(testenv.Tool(t, "BUILDCTL", "buildctl"), "--addr", addr, "debug", "workers").CombinedOutput()
		if err != nil {
			return err
		}
		_ = c
		return nil
	})
	o = other.run(t, nil)
	if !o.Failed() || !strings.Contains(o.Msg(), "did not start is running") || !strings.Contains(o.Msg(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("with a foreign buildkitd: %s", o.Stdout)
	}
	if o = other.run(t, map[string]any{"state": "stopped"}); o.Changed() || !alive(cmd.Process.Pid) {
		t.Errorf("stopped signalled the foreign buildkitd: %s", o.Stdout)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "buildkitd.toml")
	os.WriteFile(cfg, []byte("[registry.\"r:5000\"]\n  ca = [\""+filepath.Join(dir, "missing.crt")+"\"]\n"), 0o644)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[registry\n"), 0o644)
	empty := filepath.Join(dir, "empty.toml")
	os.WriteFile(empty, nil, 0o644)
	base := map[string]any{"buildkitd": testenv.Tool(t, "BUILDKITD", "buildkitd"), "config": empty,
		"address": "unix://" + filepath.Join(dir, "bk.sock"), "root": filepath.Join(dir, "root"), "service_manager": "process",
		"pidfile": filepath.Join(dir, "bk.pid"), "log_file": filepath.Join(dir, "bk.log")}
	for _, tc := range []struct {
		name string
		args map[string]any
		want []string
	}{
		{"missing binary", map[string]any{"buildkitd": filepath.Join(dir, "nope")}, []string{"buildkitd " + filepath.Join(dir, "nope") + " is not an executable file", "ensure-buildkit"}},
		{"missing config", map[string]any{"config": filepath.Join(dir, "none.toml")}, []string{"config " + filepath.Join(dir, "none.toml") + " is not a file"}},
		{"config names a missing CA", map[string]any{"config": cfg}, []string{"config " + cfg + " names " + filepath.Join(dir, "missing.crt"), `registry."r:5000".ca[0]`}},
		{"config does not parse", map[string]any{"config": bad}, []string{"config " + bad, "not valid TOML at line 1"}},
		{"tcp address", map[string]any{"address": "tcp://127.0.0.1:1234"}, []string{`address "tcp://127.0.0.1:1234": must be unix:///`}},
		{"own flag in extra_args", map[string]any{"extra_args": []string{"--addr=unix:///x"}}, []string{`extra_args[0] "--addr=unix:///x": --addr is set by its own parameter`}},
		{"bad manager", map[string]any{"service_manager": "upstart"}, []string{"service_manager", "auto, systemd, process"}},
		{"bad unit", map[string]any{"unit": "a b"}, []string{`unit "a b"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := map[string]any{}
			for k, v := range base {
				a[k] = v
			}
			for k, v := range tc.args {
				a[k] = v
			}
			o := ansibletest.RunBinary(t, lib.Bin("buildkitd_service"), a)
			if !o.Failed() {
				t.Fatalf("not failed: %s", o.Stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(o.Msg(), w) {
					t.Errorf("msg %q lacks %q", o.Msg(), w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "bk.pid")); err == nil {
				t.Error("a failed run wrote the pid file")
			}
		})
	}
}
