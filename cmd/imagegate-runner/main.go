// Command imagegate-runner runs a queue of changes through Zuul jobs on
// this machine, as a Zuul executor would: job inheritance, dependencies,
// pause, zuul_return, artifacts between changes, secrets, all through real
// ansible-playbook. Operators use it to try a change's image jobs before
// pushing it; imagegate's end-to-end tests use it in place of Zuul.
//
// Usage:
//
//	imagegate-runner [flags] queue.yaml
//
// See docs/runner.md for the queue file.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/imagegate/imagegate/pkg/runner"
)

type configFlag []*runner.Source

func (c *configFlag) String() string { return "" }

func (c *configFlag) Set(v string) error {
	path, project, _ := strings.Cut(v, "=")
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if project == "" {
		project = filepath.Base(abs)
	}
	*c = append(*c, &runner.Source{Project: project, Root: abs})
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command: it returns the exit code (0 every voting job
// succeeded, 1 one did not, 2 the runner could not run).
func run(args []string, stdout, stderr io.Writer) int {
	var configs configFlag
	fs := flag.NewFlagSet("imagegate-runner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&configs, "config", "a configuration project `DIR[=NAME]` (zuul.d/, playbooks/, roles/), e.g. the imagegate release tree; repeatable")
	work := fs.String("work", "", "directory for build directories (default: a new temporary directory)")
	jobs := fs.Int("jobs", 1, "builds of one change run at once")
	attempts := fs.Int("attempts", 1, "cap on job.attempts (retries of pre-run failures)")
	verbose := fs.Bool("v", false, "copy ansible-playbook output to stderr")
	ansibleVerbose := fs.Int("ansible-verbosity", 0, "pass -v this many times to ansible-playbook")
	report := fs.String("report", "", "write the report as JSON to `FILE`")
	nodeAddr := fs.String("node-address", "", "ansible_host of nodes (default: this machine's first non-loopback IPv4)")
	buildsAPI := fs.String("builds-api", "", "serve the finished builds as Zuul's builds API (https) on `ADDR` (host:port), at /api/tenant/<tenant>/builds")
	buildsCert := fs.String("builds-api-cert", "", "the builds API's certificate `FILE` (PEM; default: one of a new CA)")
	buildsKey := fs.String("builds-api-key", "", "the builds API's key `FILE` (PEM), with -builds-api-cert")
	buildsCA := fs.String("builds-api-ca", "", "write the certificate to trust for the builds API to `FILE` (mode 0644)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: imagegate-runner [flags] queue.yaml\n\nRuns a queue of changes through Zuul jobs with ansible-playbook. See docs/runner.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	q, err := runner.LoadQueue(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "imagegate-runner:", err)
		return 2
	}
	opts := []runner.Option{
		runner.WithConfig(configs...), runner.WithConcurrency(*jobs), runner.WithMaxAttempts(*attempts),
		runner.WithProgress(stderr),
		runner.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	}
	if *work != "" {
		opts = append(opts, runner.WithWorkDir(*work))
	}
	if *verbose {
		opts = append(opts, runner.WithStream(stderr))
	}
	if *ansibleVerbose > 0 {
		opts = append(opts, runner.WithAnsibleArgs("-"+strings.Repeat("v", *ansibleVerbose)))
	}
	if *nodeAddr != "" {
		opts = append(opts, runner.WithNodeAddress(*nodeAddr))
	}
	r, err := runner.New(opts...)
	if err != nil {
		fmt.Fprintln(stderr, "imagegate-runner:", err)
		return 2
	}
	if *buildsAPI != "" {
		api, err := r.Builds().ServeBuildsAPI(*buildsAPI, q.Tenant, *buildsCert, *buildsKey)
		if err != nil {
			fmt.Fprintln(stderr, "imagegate-runner:", err)
			return 2
		}
		defer api.Close()
		if *buildsCA != "" {
			if err := os.WriteFile(*buildsCA, api.CACert, 0o644); err != nil {
				fmt.Fprintln(stderr, "imagegate-runner: writing the builds API's CA:", err)
				return 2
			}
		}
		fmt.Fprintf(stderr, "builds API: %s\n", api.URL)
	} else if *buildsCert != "" || *buildsKey != "" || *buildsCA != "" {
		fmt.Fprintln(stderr, "imagegate-runner: -builds-api-cert, -builds-api-key and -builds-api-ca need -builds-api")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := r.Run(ctx, q)
	if rep != nil {
		fmt.Fprint(stdout, "\n"+rep.Summary())
		if *report != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*report, b, 0o600); werr != nil {
				fmt.Fprintln(stderr, "imagegate-runner: writing report:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "imagegate-runner:", err)
		return 2
	}
	if rep.Failed() {
		return 1
	}
	return 0
}
