// Package registrytest starts imagegate's registry for tests: in-process
// over TLS on an ephemeral loopback port, with a generated CA (pkg/pki),
// filesystem storage in a temporary directory and a write user with a
// random password. It is the registry every other package's tests push to
// and pull from.
package registrytest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry"
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
	// Root is the storage directory.
	Root string
	// Handler is the registry handler.
	Handler *registry.Registry
	// Driver is the filesystem storage driver under Root.
	Driver *filesystem.Driver

	logs *syncBuffer
}

// New starts a registry for the test and stops it at the test's end. opts
// are applied after the write user, so tests may add users
// (registry.WithUsers) or refuse anonymous reads. The registry's log is
// printed when the test fails.
func New(t testing.TB, opts ...registry.Option) *Registry {
	t.Helper()
	dir := t.TempDir()
	rg := &Registry{Username: "zuul", Password: RandomPassword(t), Root: filepath.Join(dir, "storage"), logs: &syncBuffer{}}
	drv, err := filesystem.New(rg.Root)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	rg.Driver = drv
	log := slog.New(slog.NewTextHandler(rg.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := append([]registry.Option{
		registry.WithUsers(registry.User{Name: rg.Username, Password: rg.Password, Access: registry.AccessWrite}),
		registry.WithLogger(log),
	}, opts...)
	rg.Handler, err = registry.New(drv, all...)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	cert, caPEM := serverCert(t)
	rg.CAPEM = caPEM
	rg.CAFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(rg.CAFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registrytest: listening: %v", err)
	}
	rg.Port = l.Addr().(*net.TCPAddr).Port
	rg.Host = l.Addr().String()
	srv := &http.Server{
		Handler:           rg.Handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rg.logs.Write([]byte("serve: " + err.Error() + "\n"))
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		if t.Failed() {
			t.Logf("--- registry log (%s) ---\n%s", rg.Host, rg.logs.String())
		}
	})
	return rg
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
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// serverCert issues a certificate for every name of this host from a new
// CA, and returns it with the CA's PEM.
func serverCert(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	ca, err := pki.NewCA("imagegate registrytest CA", 24*time.Hour)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return cert, ca.CertPEM
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
