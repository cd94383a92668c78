package buildset

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
)

// ServeArg, as the first argument of the module executable, makes it serve
// a registry instead of acting as an Ansible module (which Ansible runs with
// the path of an args file as its only argument). The arguments that follow
// are the root directory and, optionally, the descriptor to report
// readiness on.
const ServeArg = "--imagegate-buildset-registry-serve"

// ServeIfRequested serves the registry and exits when the process was
// started in serve mode (see ServeArg); otherwise it returns at once. Call
// it first in the module's main, and in TestMain of tests that start the
// test binary as a daemon.
func ServeIfRequested() {
	if len(os.Args) < 3 || os.Args[1] != ServeArg {
		return
	}
	os.Exit(serveMain(os.Args[2:]))
}

// shutdownGrace is how long in-flight requests get to finish after SIGTERM.
// Apply waits longer than this before it sends SIGKILL.
const shutdownGrace = 10 * time.Second

func serveMain(args []string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var ready io.WriteCloser
	if len(args) > 1 {
		fd, err := strconv.Atoi(args[1])
		if err != nil || fd < 3 {
			logger.Error("bad ready descriptor", "arg", args[1])
			return 2
		}
		ready = os.NewFile(uintptr(fd), "ready")
	}
	report := func(msg string) {
		if ready != nil {
			_, _ = io.WriteString(ready, msg+"\n")
			ready.Close()
			ready = nil
		}
	}
	// No terminal to hang up, but be explicit: only SIGTERM and SIGINT stop
	// the daemon.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, layout(args[0]), logger, func() { report("ready") }); err != nil {
		logger.Error("buildset registry failed", "err", err)
		report("error: " + err.Error())
		return 1
	}
	return 0
}

// serve runs the registry of root l until ctx is done, calling ready once
// every listener accepts connections.
func serve(ctx context.Context, l layout, logger *slog.Logger, ready func()) error {
	cfg, err := readConfig(l)
	if err != nil {
		return err
	}
	if cfg == nil {
		return fmt.Errorf("%s does not exist: start the registry with the buildset_registry module", l.config())
	}
	ca, err := loadCA(l)
	if err != nil {
		return err
	}
	if ca == nil {
		return fmt.Errorf("%s does not exist: start the registry with the buildset_registry module", l.caCert())
	}
	pidf, err := lockPIDFile(l)
	if err != nil {
		return err
	}
	defer pidf.Close()
	// Removed before the lock is released (at Close), so the next start
	// never sees a file whose lock it could take while this one runs.
	defer os.Remove(l.pidFile())

	// The server certificate is issued at each start, in memory, so it
	// covers the node's current addresses and its key never touches disk.
	names := append([]string{cfg.Host}, cfg.Listen...)
	sc, err := ca.Issue(pki.HostNames(names...), time.Until(ca.Cert.NotAfter))
	if err != nil {
		return err
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		return err
	}

	listeners, err := listen(ctx, cfg)
	if err != nil {
		return err
	}
	handler, err := newHandler(l, cfg, logger)
	if err != nil {
		for _, ln := range listeners {
			ln.Close()
		}
		return err
	}
	srv := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		// No read or write timeout: layers of several GiB stream through.
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving on %s: %w", ln.Addr(), err)
			}
		}()
	}
	var addrs []string
	for _, ln := range listeners {
		addrs = append(addrs, ln.Addr().String())
	}
	logger.Info("buildset registry serving", "pid", os.Getpid(), "listen", addrs, "host", cfg.Host,
		"certificate_names", sc.Names, "root", l.root())
	ready()

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("buildset registry shutting down")
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("closing connections still open after the grace period", "err", err)
		srv.Close()
	}
	wg.Wait()
	if serveErr != nil {
		return serveErr
	}
	logger.Info("buildset registry stopped")
	return nil
}

// listen opens the registry's listeners: one for every address of the
// node, IPv4 and IPv6 (a dual-stack socket), unless addresses are given.
func listen(ctx context.Context, cfg *config) ([]net.Listener, error) {
	hosts := cfg.Listen
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	var lc net.ListenConfig
	var out []net.Listener
	for _, h := range hosts {
		addr := net.JoinHostPort(h, strconv.Itoa(cfg.Port))
		ln, err := lc.Listen(ctx, "tcp", addr)
		if h == "" {
			addr = "port " + strconv.Itoa(cfg.Port) + " of every address"
		}
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("listening on %s: %w: another process listens on port %d; choose another buildset_registry_port, or stop that process", addr, ErrPortInUse, cfg.Port)
			}
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("listening on %s: %w: buildset_registry_listen must list addresses of this node", addr, err)
			}
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		out = append(out, ln)
	}
	return out, nil
}
