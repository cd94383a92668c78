// Command imagegate-registry runs imagegate's registry as a long-lived
// service: the intermediate registry of a Zuul tenant (the buildset
// registry is the same registry, started by the buildset_registry module).
//
//	imagegate-registry [-d] serve -c config.yaml    serve until SIGTERM or SIGINT
//	imagegate-registry [-d] prune -c config.yaml [-dry-run]
//	imagegate-registry [-d] check -c config.yaml    check the configuration and the storage
//
// zuul-registry's order, -c before the command (`-c /conf/registry.yaml
// serve`, as its container image runs it), works too, and so does its
// registry.yaml. The configuration is described in
// docs/intermediate-registry.md and pkg/server. Logs go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/imagegate/imagegate/pkg/server"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "imagegate-registry: %v\n", err)
		os.Exit(1)
	}
}

const usage = `usage: imagegate-registry [-d] [-c config.yaml] serve|prune|check [-c config.yaml] [-dry-run]`

// defaultConfig is the configuration file unless -c names one.
const defaultConfig = "/etc/imagegate-registry/config.yaml"

func run(args []string, stderr io.Writer) error {
	top := flag.NewFlagSet("imagegate-registry", flag.ContinueOnError)
	top.SetOutput(stderr)
	debug := top.Bool("d", os.Getenv("DEBUG") == "1", "debug logging (also DEBUG=1)")
	topCfg := top.String("c", "", "configuration file (default "+defaultConfig+")")
	if err := top.Parse(args); err != nil {
		return err
	}
	if top.NArg() == 0 {
		return errors.New(usage)
	}
	cmd := top.Arg(0)
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "configuration file (default "+defaultConfig+")")
	dryRun := fs.Bool("dry-run", false, "prune: report what would be removed, remove nothing")
	if err := fs.Parse(top.Args()[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), usage)
	}
	switch {
	case *cfgPath != "" && *topCfg != "" && *cfgPath != *topCfg:
		return fmt.Errorf("-c is given twice, as %s and %s: give it once", *topCfg, *cfgPath)
	case *cfgPath == "" && *topCfg != "":
		*cfgPath = *topCfg
	case *cfgPath == "":
		*cfgPath = defaultConfig
	}
	cfg, err := server.LoadConfig(*cfgPath, nil)
	if err != nil {
		return err
	}
	log := logger(cfg, *debug, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch cmd {
	case "serve":
		srv, err := server.New(ctx, cfg, server.WithLogger(log))
		if err != nil {
			return err
		}
		if ca := srv.CAFile(); ca != "" {
			log.Info("clients must trust the registry's CA", "ca", ca)
		}
		return srv.Run(ctx)
	case "prune":
		d, err := server.OpenStorage(ctx, cfg, log)
		if err != nil {
			return err
		}
		rep, err := server.RunPrune(ctx, cfg, d, *dryRun, log)
		prefix := "pruned"
		if *dryRun {
			prefix = "dry run, would prune"
		}
		fmt.Fprintf(stderr, "%s: %s\n", prefix, rep)
		return err
	case "check":
		if _, err := server.OpenStorage(ctx, cfg, log); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "configuration %s and storage (%s) are usable\n", *cfgPath, cfg.Storage.Driver)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func logger(cfg *server.Config, debug bool, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.Log.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	if debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
