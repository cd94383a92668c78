// Command testregistry serves imagegate's registry from a directory, as a
// separate process, for tests and benchmarks that must measure or kill a
// real server (peak RSS, crash safety). It is not the product's server
// command.
//
//	testregistry -root DIR -cert FILE -key FILE [-addr 127.0.0.1:0] [-addr-file FILE] [-v]
//
// The write user's name and password come from IMAGEGATE_TEST_USER and
// IMAGEGATE_TEST_PASSWORD, never from the command line. The address the
// server listens on is written to -addr-file once it accepts connections.
// SIGTERM shuts it down gracefully.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testregistry:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", "", "storage directory")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	addrFile := flag.String("addr-file", "", "file to write the listen address to")
	certFile := flag.String("cert", "", "TLS certificate (PEM, with its chain)")
	keyFile := flag.String("key", "", "TLS key (PEM)")
	verbose := flag.Bool("v", false, "log every request")
	flag.Parse()
	user, password := os.Getenv("IMAGEGATE_TEST_USER"), os.Getenv("IMAGEGATE_TEST_PASSWORD")
	if *root == "" || *certFile == "" || *keyFile == "" || user == "" || password == "" {
		return errors.New("-root, -cert, -key, IMAGEGATE_TEST_USER and IMAGEGATE_TEST_PASSWORD are required")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	drv, err := filesystem.New(*root)
	if err != nil {
		return err
	}
	rg, err := registry.New(drv, registry.WithLogger(log),
		registry.WithUsers(registry.User{Name: user, Password: password, Access: registry.AccessWrite}))
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if *addrFile != "" {
		tmp := filepath.Join(filepath.Dir(*addrFile), "."+filepath.Base(*addrFile)+".tmp")
		if err := os.WriteFile(tmp, []byte(l.Addr().String()), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           rg,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
