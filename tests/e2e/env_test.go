// Package e2e runs the container-image gating workflow end to end: the jobs
// of the release tree built by `make dist`, run by imagegate's runner with
// real ansible-playbook, on a node that is this machine with real dockerd
// and buildkitd, imagegate's registry as buildset, intermediate and target
// registry (the container family's scenarios add podman with private
// storage, and quay.io as quay emulated by internal/quaytest, named
// quay.io inside the sandbox). Each scenario runs in a testenv.Sandbox, so the jobs edit the
// real default paths (/etc/hosts, /etc/docker/certs.d) without touching the
// machine's own files.
package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/runner"
)

// distDir returns the release tree: $IMAGEGATE_DIST, or dist/imagegate of
// the repository. The scenarios test what operators install, so a missing
// tree is a setup failure: run `make dist`.
func distDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("IMAGEGATE_DIST")
	if dir == "" {
		dir = filepath.Join(daemon.RepoRoot(), "dist", "imagegate")
	}
	for _, f := range []string{"zuul.d/jobs.yaml", "roles/imagegate-modules/library/docker_image_build",
		"roles/imagegate-modules/library/docker_image_build_arm64", "roles/imagegate-modules/library/docker_image_build_s390x",
		"roles/ensure-buildkit/files/linux_amd64/buildkitd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("release tree %s is incomplete (%v): run `make dist` first", dir, err)
		}
	}
	return dir
}

// world is one scenario's machine: daemons, registries, and a runner whose
// ansible-playbook runs inside the sandbox.
type world struct {
	t      *testing.T
	env    *lab.Env
	dir    string
	sb     *testenv.Sandbox
	docker *testenv.Dockerd
	ir     *registrytest.Registry
	// irProcess is the intermediate registry when it runs as a separate
	// process (withKillableIR), so a test can take it down.
	irProcess *registrytest.Process
	target    *registrytest.Registry
	runner    *runner.Runner
	out       *testenv.SyncBuffer
	// afterItem, if set, runs after each queue item.
	afterItem func(*runner.ItemReport)
	// sandboxed are more machine paths the sandbox replaces by copies.
	sandboxed []string
}

type worldOption func(*world)

// withKillableIR runs the intermediate registry as a separate process.
func withKillableIR() worldOption {
	return func(w *world) { w.irProcess = registrytest.StartProcess(w.t) }
}

// withSandboxed replaces more machine paths by private copies in the
// sandbox (/etc/containers for podman's files, ...).
func withSandboxed(paths ...string) worldOption {
	return func(w *world) { w.sandboxed = append(w.sandboxed, paths...) }
}

// newWorld starts what a scenario needs. It must not run in parallel with
// other tests of the package (t.Setenv).
func newWorld(t *testing.T, opts ...worldOption) *world {
	dist := distDir(t)
	w := &world{t: t, dir: testenv.ShortTempDir(t), out: &testenv.SyncBuffer{}}
	for _, o := range opts {
		o(w)
	}
	w.sb = testenv.NewSandbox(t, append([]string{"/etc/hosts", "/etc/docker/certs.d"}, w.sandboxed...)...)
	t.Setenv("DOCKERD", w.sb.Wrap(t, testenv.Tool(t, "DOCKERD", "dockerd")))
	w.docker = testenv.StartDockerd(t, testenv.DockerdOptions{})
	w.target = registrytest.New(t)
	bkDir := testenv.ShortTempDir(t)
	w.env = &lab.Env{
		Dist:               dist,
		DockerHost:         w.docker.Host,
		DockerConfigFile:   w.docker.ConfigFile,
		DockerPidfile:      w.docker.Pidfile,
		DockerClientConfig: w.docker.ClientConfig,
		// No Buildkitd: ensure-buildkit installs the release tree's, as
		// it does on a real node.
		BuildkitDir:          bkDir,
		BuildsetRegistryPort: testenv.FreePort(t),
		Intermediate:         w.intermediate(),
		Target:               labRegistry(w.target),
	}
	work := filepath.Join(w.dir, "work")
	r, err := runner.New(runner.WithWorkDir(work),
		runner.WithAnsiblePlaybook(w.sb.Wrap(t, "/usr/bin/ansible-playbook")),
		runner.WithProgress(w.out), runner.WithStream(w.out),
		runner.WithItemDone(func(it *runner.ItemReport) {
			if w.afterItem != nil {
				w.afterItem(it)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	w.runner = r
	// Registered last, so it runs first: stop what the jobs started
	// (buildkitd from ensure-buildkit, buildset registries a failed job
	// left running) before the sandbox and directories go.
	t.Cleanup(func() {
		daemon.StopPidfile(w.env.BuildkitPidfile())
		for _, exe := range daemon.StopUnder(work) {
			t.Logf("stopped %s, left running by a job", exe)
		}
		if t.Failed() {
			out := w.out.String()
			if len(out) > 200<<10 {
				out = "...\n" + out[len(out)-200<<10:]
			}
			t.Logf("--- runner output ---\n%s", out)
		}
	})
	return w
}

func (w *world) intermediate() lab.Registry {
	if w.irProcess != nil {
		_, port, err := net.SplitHostPort(w.irProcess.Host)
		if err != nil {
			w.t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		return lab.Registry{Host: "127.0.0.1", Port: p, Username: w.irProcess.Username, Password: w.irProcess.Password, CA: string(w.irProcess.CAPEM)}
	}
	w.ir = registrytest.New(w.t)
	return labRegistry(w.ir)
}

func labRegistry(r *registrytest.Registry) lab.Registry {
	return lab.Registry{Host: "127.0.0.1", Port: r.Port, Username: r.Username, Password: r.Password, CA: string(r.CAPEM)}
}

// run runs a queue file's content and returns the report.
func (w *world) run(queue []byte) *runner.Report {
	w.t.Helper()
	if err := os.WriteFile(filepath.Join(w.dir, "queue.yaml"), queue, 0o600); err != nil {
		w.t.Fatal(err)
	}
	q, err := runner.ParseQueue(queue, w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rep, err := w.runner.Run(ctx, q)
	if err != nil {
		w.t.Fatalf("runner: %v", err)
	}
	w.t.Logf("\n%s", rep.Summary())
	return rep
}

// project writes a project directory with the given writer.
func (w *world) project(name string, write func(dir string) error) string {
	w.t.Helper()
	dir := filepath.Join(w.dir, "projects", name)
	if err := write(dir); err != nil {
		w.t.Fatal(err)
	}
	return dir
}

// build returns the report of a job of a change, failing the test if it
// is missing.
func build(t *testing.T, rep *runner.Report, change int, pipeline, job string) *runner.BuildReport {
	t.Helper()
	it := rep.Item(change, pipeline)
	if it == nil {
		t.Fatalf("change %d (%s) is not in the report", change, pipeline)
	}
	b := it.Build(job)
	if b == nil {
		t.Fatalf("change %d: job %s did not run (%s: %s)", change, job, it.Result, it.Message)
	}
	return b
}

// checkNoSecrets fails the test if a secret is left behind: in the
// runner's output, in any file of the build directories (inventories,
// variables, results, job logs, node homes), or as a "password" value in
// any JSON or YAML file there; and if a job wrote a docker client
// configuration (imagegate keeps registry credentials in memory).
func (w *world) checkNoSecrets(secrets ...string) {
	t := w.t
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(w.out.String(), s) {
			t.Errorf("the runner's output holds a secret (%.4s...)", s)
		}
	}
	root := filepath.Join(w.dir, "work")
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil // files of stopped daemons may vanish while walking
		}
		if info.IsDir() || !info.Mode().IsRegular() || info.Size() > 16<<20 {
			return nil
		}
		if filepath.Base(p) == "config.json" && filepath.Base(filepath.Dir(p)) == ".docker" {
			t.Errorf("%s: a docker client configuration was written", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a secret (%.4s...)", p, s)
			}
		}
		if ext := filepath.Ext(p); ext == ".json" || ext == ".yaml" {
			for _, v := range passwordValues(b) {
				if v != "" && v != "********" {
					t.Errorf("%s holds a password value (%.4s...)", p, v)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// passwordValues returns the values of every "password" key of a YAML (or
// JSON) document.
func passwordValues(b []byte) []string {
	var doc any
	if yaml.Unmarshal(b, &doc) != nil {
		return nil
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && strings.Contains(strings.ToLower(k), "password") {
					out = append(out, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	return out
}
