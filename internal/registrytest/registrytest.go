// Package registrytest starts imagegate's registry for tests: in-process
// over TLS on an ephemeral loopback port, with a generated CA (pkg/pki),
// filesystem storage in a temporary directory and a write user with a
// random password. It is the registry every other package's tests push to
// and pull from.
package registrytest

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// Registry is a running test registry.
type Registry struct {
	// Host is the address clients use: 127.0.0.1:<port>.
	Host string
	// Port is the TCP port.
	Port int
	// CAPEM is the PEM of the CA that signed the server certificate: what
	// clients must trust. The certificate covers every name in
	// pki.HostNames (localhost, 127.0.0.1, ::1, the host's addresses and
	// names, zuul-jobs.buildset-registry).
	CAPEM []byte
	// CAFile holds CAPEM, for tools that read a file (SSL_CERT_FILE,
	// --cert-dir, ...).
	CAFile string
	// Username and Password are a user with write access; the password is
	// 128 random bits, hex-encoded.
	Username, Password string
	// Root is the storage directory ("" for NewWithDriver).
	Root string
	// Handler is the registry handler.
	Handler *registry.Registry
	// Driver is the filesystem storage driver under Root (nil for
	// NewWithDriver).
	Driver *filesystem.Driver

	logs *testenv.SyncBuffer
	srv  *http.Server
	done chan struct{}
}

// New starts a registry for the test and stops it at the test's end. opts
// are applied after the write user, so tests may add users
// (registry.WithUsers) or refuse anonymous reads. The registry's log is
// printed when the test fails.
func New(t testing.TB, opts ...registry.Option) *Registry {
	t.Helper()
	return NewWithDriver(t, nil, opts...)
}

// NewWithDriver starts a registry as New does, on drv instead of a
// filesystem driver (New's when nil).
func NewWithDriver(t testing.TB, drv storage.Driver, opts ...registry.Option) *Registry {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	rg, err := serve(t.TempDir(), drv, logs, opts...)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	rg.logs = logs
	t.Cleanup(func() {
		rg.Close()
		if t.Failed() {
			t.Logf("--- registry log (%s) ---\n%s", rg.Host, rg.logs.String())
		}
	})
	return rg
}

func serve(dir string, drv storage.Driver, log io.Writer, opts ...registry.Option) (*Registry, error) {
	rg := &Registry{Username: "zuul", Password: randomHex(16)}
	if drv == nil {
		rg.Root = filepath.Join(dir, "storage")
		fs, err := filesystem.New(rg.Root)
		if err != nil {
			return nil, err
		}
		rg.Driver, drv = fs, fs
	}
	var err error
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := append([]registry.Option{
		registry.WithUsers(registry.User{Name: rg.Username, Password: rg.Password, Access: registry.AccessWrite}),
		registry.WithLogger(logger),
	}, opts...)
	if rg.Handler, err = registry.New(drv, all...); err != nil {
		return nil, err
	}
	cert, caPEM, err := serverCert()
	if err != nil {
		return nil, err
	}
	rg.CAPEM = caPEM
	rg.CAFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(rg.CAFile, caPEM, 0o644); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}
	rg.Port = l.Addr().(*net.TCPAddr).Port
	rg.Host = l.Addr().String()
	rg.srv = &http.Server{
		Handler:           rg.Handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	rg.done = make(chan struct{})
	go func() {
		defer close(rg.done)
		if err := rg.srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("serve", "err", err)
		}
	}()
	return rg, nil
}

// Close stops the registry and waits until it has.
func (rg *Registry) Close() {
	rg.srv.Close()
	<-rg.done
}

// URL returns https://<Host>.
func (rg *Registry) URL() string { return "https://" + rg.Host }

// TLSConfig returns a client TLS configuration trusting the registry's CA.
func (rg *Registry) TLSConfig() *tls.Config {
	pool, _ := pki.CertPool(rg.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Client returns an HTTP client trusting the registry's CA.
func (rg *Registry) Client() *http.Client {
	return &http.Client{Transport: rg.Transport()}
}

// Transport returns an HTTP transport trusting the registry's CA.
func (rg *Registry) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = rg.TLSConfig()
	return tr
}

// Logs returns what the registry logged so far.
func (rg *Registry) Logs() string { return rg.logs.String() }

// RandomPassword returns 128 random bits, hex-encoded.
func RandomPassword(t testing.TB) string {
	t.Helper()
	return randomHex(16)
}

// randomHex returns n random bytes, hex-encoded. crypto/rand.Read does not
// return errors (it crashes the program when the system's source fails).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serverCert issues a certificate for every name of this host from a new
// CA, and returns it with the CA's PEM.
func serverCert() (tls.Certificate, []byte, error) {
	ca, err := pki.NewCA("imagegate registrytest CA", 24*time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, ca.CertPEM, nil
}
