// Command imagegate-demo runs the container-image gating workflow end to
// end on this machine: two dependent changes go through the check, gate
// and promote pipelines of imagegate's jobs, run by imagegate's local
// runner with real ansible-playbook, dockerd and buildkitd, and imagegate's
// registry as intermediate and target registry. It then prints what ran
// and where every image came from.
//
//   - check: change 1001 changes myorg/base; change 1002 (Depends-On 1001)
//     builds myorg/app FROM myorg/base, on change 1001's speculative image
//     from the intermediate registry, and its test job runs myorg/app,
//     pulled through the buildset registry.
//   - gate: both changes build again and stage change_<N>_<tag> in the
//     target registry.
//   - promote: both changes' tags move to the staged images; change tags are
//     removed, a stale change tag (three days old) is swept and a fresh one
//     kept.
//
// It needs root (it runs dockerd) and works in a private mount namespace,
// so the jobs' edits of /etc/hosts and /etc/docker/certs.d never reach the
// machine. Everything it starts is stopped at the end.
//
// Usage (make demo runs it):
//
//	imagegate-demo [-tree DIR] [-keep] [-v]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/pkg/runner"
)

const stageEnv = "IMAGEGATE_DEMO_NAMESPACE"

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("imagegate-demo", flag.ContinueOnError)
	tree := fs.String("tree", "", "the imagegate tree to run the jobs from: a release tree (make dist) or the source tree after make build (default: the source tree containing the working directory)")
	keep := fs.Bool("keep", false, "keep the work directory (build logs) instead of removing it")
	verbose := fs.Bool("v", false, "copy ansible-playbook output to stderr")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "imagegate-demo: run it as root: it starts dockerd and edits /etc/hosts in a private mount namespace")
		return 2
	}
	if os.Getenv(stageEnv) == "" {
		return reexecInNamespace()
	}
	if err := demo(*tree, *keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "imagegate-demo:", err)
		return 1
	}
	return 0
}

// reexecInNamespace runs this program again in a new mount namespace (Go
// makes its mounts private), where demo bind-mounts private copies over
// the files the jobs edit.
func reexecInNamespace() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagegate-demo:", err)
		return 2
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), stageEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "imagegate-demo: starting in a private mount namespace:", err)
		return 2
	}
	return 0
}

// privatize bind-mounts private copies over the machine files the jobs
// edit, inside this process's mount namespace.
func privatize(dir string) error {
	copies := filepath.Join(dir, "etc")
	if err := os.MkdirAll(filepath.Join(copies, "certs.d"), 0o755); err != nil {
		return err
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(copies, "hosts"), hosts, 0o644); err != nil {
		return err
	}
	// The mount point must exist; an empty directory is all the demo adds
	// to the machine.
	if err := os.MkdirAll("/etc/docker/certs.d", 0o755); err != nil {
		return err
	}
	for src, dst := range map[string]string{filepath.Join(copies, "hosts"): "/etc/hosts", filepath.Join(copies, "certs.d"): "/etc/docker/certs.d"} {
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting a private %s: %w", dst, err)
		}
	}
	return nil
}

// findTree returns the tree to run the jobs from, checking that it holds
// the module binaries for this machine.
func findTree(tree string) (string, error) {
	if tree == "" {
		dir, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "zuul.d", "jobs.yaml")); err == nil {
				tree = dir
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return "", errors.New("no imagegate tree here: run it from the source tree, or give -tree")
			}
			dir = parent
		}
	}
	suffix := map[string]string{"amd64": "", "arm64": "_arm64"}[runtime.GOARCH]
	bin := filepath.Join(tree, "roles", "imagegate-modules", "library", "docker_image_build"+suffix)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s is missing: run `make build` (or give -tree a make dist tree)", bin)
	}
	return filepath.Abs(tree)
}

func demo(treeFlag string, keep, verbose bool) (err error) {
	start := time.Now()
	tree, err := findTree(treeFlag)
	if err != nil {
		return err
	}
	buildkitd, err := daemon.Tool("BUILDKITD", "buildkitd")
	if err != nil {
		return err
	}
	for _, tool := range []string{"ansible-playbook", "docker", "runc", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run `make deps`", tool)
		}
	}
	// Unix socket paths are short: keep the work directory near the root.
	work, err := os.MkdirTemp("/tmp", "igdemo")
	if err != nil {
		return err
	}
	if err := os.Chmod(work, 0o700); err != nil {
		return err
	}
	runWork := filepath.Join(work, "runner")
	bkDir := filepath.Join(work, "bk")
	var docker *daemon.Dockerd
	var ir, target *serverRegistry
	defer func() {
		daemon.StopPidfile(filepath.Join(bkDir, "buildkitd.pid"))
		daemon.StopUnder(runWork)
		if docker != nil {
			docker.Stop()
		}
		ir.close()
		target.close()
		if keep {
			fmt.Printf("\nThe build directories (job logs) are in %s\n", runWork)
			daemon.RemoveAll(filepath.Join(work, "docker"))
			daemon.RemoveAll(bkDir)
			return
		}
		daemon.RemoveAll(work)
	}()
	if err := privatize(work); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...) }
	step("jobs from %s; work directory %s", tree, work)
	if ir, err = startRegistry("intermediate-registry", work); err != nil {
		return err
	}
	if target, err = startRegistry("target-registry", work); err != nil {
		return err
	}
	step("intermediate registry on %s, target registry on %s (imagegate's registry, TLS, authenticated)", ir.Host, target.Host)
	if err := os.MkdirAll(filepath.Join(work, "docker"), 0o700); err != nil {
		return err
	}
	if docker, err = daemon.StartDockerd(filepath.Join(work, "docker"), daemon.DockerdOptions{}); err != nil {
		return err
	}
	step("dockerd on %s", docker.Host)
	port, err := daemon.FreePort()
	if err != nil {
		return err
	}
	env := &lab.Env{
		Dist:       tree,
		DockerHost: docker.Host, DockerConfigFile: docker.ConfigFile, DockerPidfile: docker.Pidfile,
		DockerClientConfig: docker.ClientConfig,
		Buildkitd:          buildkitd, BuildkitDir: bkDir,
		BuildsetRegistryPort: port,
		Intermediate:         ir.lab(),
		Target:               target.lab(),
	}

	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce) // crypto/rand.Read does not fail
	baseMarker := "myorg/base, with change 1001 applied (" + hex.EncodeToString(nonce) + ")"
	appMarker := "myorg/app, with change 1002 applied"
	baseDir, appDir := filepath.Join(work, "src", "base"), filepath.Join(work, "src", "app")
	if err := lab.WriteBase(baseDir, baseMarker); err != nil {
		return err
	}
	if err := lab.WriteApp(appDir, appMarker, false); err != nil {
		return err
	}
	seeded, err := seedTarget(target)
	if err != nil {
		return err
	}
	step("seeded the target registry with myorg/app:%s (3 days old) and myorg/app:%s (1 hour old)", seeded.stale, seeded.fresh)

	baseImages, appImages := lab.Images("myorg/base"), lab.Images("myorg/app")
	creds := lab.UploadCredentials()
	changes := []lab.Change{
		{Project: "myorg/base", Number: 1001, Src: baseDir, Pipeline: "check",
			Vars: map[string]any{"docker_images": baseImages}, Jobs: []any{"opendev-build-docker-image"}},
		{Project: "myorg/app", Number: 1002, Src: appDir, Pipeline: "check", DependsOn: []int{1001},
			Vars: map[string]any{"docker_images": appImages},
			Jobs: []any{"opendev-build-docker-image",
				map[string]any{"myorg-test-app": map[string]any{"dependencies": []any{"opendev-build-docker-image"}}}}},
		{Project: "myorg/base", Number: 1001, Src: baseDir, Pipeline: "gate",
			Vars: map[string]any{"docker_images": baseImages}, Jobs: []any{map[string]any{"opendev-upload-docker-image": creds}}},
		{Project: "myorg/app", Number: 1002, Src: appDir, Pipeline: "gate", DependsOn: []int{1001},
			Vars: map[string]any{"docker_images": appImages}, Jobs: []any{map[string]any{"opendev-upload-docker-image": creds}}},
		{Project: "myorg/base", Number: 1001, Src: baseDir, Pipeline: "promote",
			Vars: map[string]any{"docker_images": baseImages}, Jobs: []any{map[string]any{"opendev-promote-docker-image": creds}}},
		{Project: "myorg/app", Number: 1002, Src: appDir, Pipeline: "promote",
			Vars: map[string]any{"docker_images": appImages}, Jobs: []any{map[string]any{"opendev-promote-docker-image": creds}}},
	}
	queue, err := env.Queue(changes...)
	if err != nil {
		return err
	}
	q, err := runner.ParseQueue(queue, work)
	if err != nil {
		return err
	}
	var stream io.Writer
	if verbose {
		stream = os.Stderr
	}
	opts := []runner.Option{runner.WithWorkDir(runWork), runner.WithProgress(os.Stderr)}
	if stream != nil {
		opts = append(opts, runner.WithStream(stream))
	}
	r, err := runner.New(opts...)
	if err != nil {
		return err
	}
	step("running 2 changes through check, gate and promote (a few minutes)")
	rep, err := r.Run(ctx, q)
	if err != nil {
		return err
	}
	fmt.Print("\n" + rep.Summary())
	if err := printImages(os.Stdout, rep, ir, target, seeded); err != nil {
		return err
	}
	fmt.Printf("\nDone in %s.\n", time.Since(start).Round(time.Second))
	if rep.Failed() {
		return errors.New("a job failed (run with -keep -v to see its log)")
	}
	return nil
}
