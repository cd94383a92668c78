package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/server"
)

// The demo runs imagegate's registry service as `imagegate-registry serve`
// runs it (pkg/server), and starts dockerd with internal/daemon, the
// error-returning starter internal/testenv wraps for tests. It links no
// test machinery (internal/depcheck checks it).

// serverRegistry is imagegate's registry service in this process: TLS from
// the CA it generates in its state directory, one write user with a random
// password, logging to <dir>/<name>.log.
type serverRegistry struct {
	Host               string
	Port               int
	Username, Password string
	CAPEM              []byte

	log  *os.File
	stop context.CancelFunc
	done chan error
}

func startRegistry(name, dir string) (rg *serverRegistry, err error) {
	rg = &serverRegistry{Username: "zuul", Password: randomHex(16)}
	cfg, err := server.ParseConfig([]byte(fmt.Sprintf(`listen: ["127.0.0.1:0"]
state_dir: %q
users:
  - {name: %s, password_env: DEMO_REGISTRY_PASSWORD, access: write}
`, filepath.Join(dir, name), rg.Username)), func(k string) (string, bool) {
		if k == "DEMO_REGISTRY_PASSWORD" {
			return rg.Password, true
		}
		return "", false
	})
	if err != nil {
		return nil, fmt.Errorf("configuring the %s: %w", name, err)
	}
	if rg.log, err = os.Create(filepath.Join(dir, name+".log")); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			rg.log.Close()
		}
	}()
	logger := slog.New(slog.NewTextHandler(rg.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, server.WithLogger(logger))
	if err != nil {
		stop()
		return nil, fmt.Errorf("starting the %s: %w", name, err)
	}
	rg.stop, rg.done = stop, make(chan error, 1)
	go func() { rg.done <- srv.Run(ctx) }()
	// Addrs waits until Run has bound its listener; Run fails before that
	// when it cannot listen.
	bound, cancel := context.WithTimeout(ctx, 30*time.Second)
	addrs := srv.Addrs(bound)
	cancel()
	if len(addrs) == 0 {
		stop()
		if err := <-rg.done; err != nil {
			return nil, fmt.Errorf("starting the %s: %w", name, err)
		}
		return nil, fmt.Errorf("starting the %s: not listening after 30s", name)
	}
	rg.Port = addrs[0].(*net.TCPAddr).Port
	rg.Host = addrs[0].String()
	if rg.CAPEM, err = os.ReadFile(srv.CAFile()); err != nil {
		rg.close()
		return nil, fmt.Errorf("reading the %s's CA: %w", name, err)
	}
	return rg, nil
}

// Transport returns an HTTP transport trusting the registry's CA.
func (rg *serverRegistry) Transport() *http.Transport {
	pool, _ := pki.CertPool(rg.CAPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr
}

// lab is the registry as the jobs' variables describe it.
func (rg *serverRegistry) lab() lab.Registry {
	return lab.Registry{Host: "127.0.0.1", Port: rg.Port, Username: rg.Username, Password: rg.Password, CA: string(rg.CAPEM)}
}

// close shuts the registry down gracefully and waits until it has.
func (rg *serverRegistry) close() {
	if rg == nil || rg.stop == nil {
		return
	}
	rg.stop()
	if err := <-rg.done; err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "demo: stopping the registry on %s: %v\n", rg.Host, err)
	}
	rg.log.Close()
	rg.stop = nil
}

// randomHex returns n random bytes, hex-encoded. crypto/rand.Read does not
// return errors (it crashes the program when the system's source fails).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
