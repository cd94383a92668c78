package transfer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// plainDistribution starts Debian's docker-registry serving plain HTTP on
// every address at a free port (htpasswd unless noAuth).
func plainDistribution(t *testing.T, noAuth bool) *testenv.Distribution {
	t.Helper()
	d, cmd := testenv.DistributionCommand(t, testenv.DistributionOptions{PlainHTTP: true, NoAuth: noAuth})
	d.Process = testenv.StartProcess(t, "docker-registry", cmd, d.Dir)
	testenv.WaitFor(t, "docker-registry", 30*time.Second, d.Process, func() error {
		resp, err := http.Get("http://" + d.Host + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return d
}

func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	ip := testenv.LocalIP()
	if transfer.IsLoopback(ip) {
		t.Fatal("this machine has no non-loopback IPv4 address: the tests of docker's conventions need one")
	}
	return ip
}

// noConventions keeps the machine's certs directories and daemon.json out
// of a test.
func noConventions() []transfer.Option {
	return []transfer.Option{transfer.WithCertsDirs(), transfer.WithDockerDaemonConfig("")}
}

// TestLoopbackPlainHTTP: a loopback registry that speaks only plain HTTP
// is reached over HTTP, with its basic credentials, as dockerd does, by
// 127.0.0.1 and by localhost; the copy keeps the digest.
func TestLoopbackPlainHTTP(t *testing.T) {
	t.Parallel()
	src := transfertest.Distribution(t)
	plain := plainDistribution(t, false)
	img := transfertest.Image(t, true, transfertest.Layer(41, 30_000))
	want := transfertest.Push(t, src, src.Host+"/org/app:1", img)
	for _, host := range []string{plain.Host, fmt.Sprintf("localhost:%d", plain.Port)} {
		c := newClient(t, append(noConventions(), transfer.WithEndpoint(src.Endpoint()),
			transfer.WithEndpoint(transfer.Endpoint{Host: host, Username: plain.Username, Password: plain.Password}))...)
		r, err := c.Copy(context.Background(), src.Host+"/org/app:1", host+"/org/app:1")
		if err != nil {
			t.Fatalf("copy to %s: %v", host, err)
		}
		if r.Digest != want {
			t.Errorf("copied %s, pushed %s", r.Digest, want)
		}
		d, err := c.Resolve(context.Background(), host+"/org/app:1")
		if err != nil || d.Digest != want {
			t.Errorf("%s resolves to %v (%v), want %s", host, d, err, want)
		}
	}
	// Wrong credentials are refused over HTTP as over HTTPS.
	c := newClient(t, append(noConventions(), transfer.WithEndpoint(transfer.Endpoint{Host: plain.Host, Username: plain.Username, Password: "wrong"}))...)
	if _, err := c.Repository(context.Background(), plain.Host, "org/app", true); err == nil {
		t.Error("wrong credentials accepted")
	}
}

// TestPlainHTTPNeedsDeclaration: a registry elsewhere that answers plain
// HTTP fails naming the host and what to set; declared insecure (a
// parameter or dockerd's daemon.json), it is reached anonymously; with
// credentials it is refused, and they never reach it.
func TestPlainHTTPNeedsDeclaration(t *testing.T) {
	t.Parallel()
	plain := plainDistribution(t, true)
	host := fmt.Sprintf("%s:%d", nonLoopbackIP(t), plain.Port)
	ctx := context.Background()

	c := newClient(t, noConventions()...)
	_, err := c.Resolve(ctx, host+"/org/app:1")
	if err == nil || !strings.Contains(err.Error(), "answers plain HTTP where HTTPS is required") ||
		!strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "insecure_registries") {
		t.Errorf("undeclared plain-HTTP registry: %v; want a failure naming %s and insecure_registries", err, host)
	}

	daemonJSON := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(daemonJSON, []byte(`{"insecure-registries": ["`+host+`"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, opt := range map[string]transfer.Option{
		"parameter":   transfer.WithInsecureRegistries(host),
		"cidr":        transfer.WithInsecureRegistries(nonLoopbackIP(t) + "/32"),
		"daemon.json": transfer.WithDockerDaemonConfig(daemonJSON),
	} {
		c := newClient(t, transfer.WithCertsDirs(), opt)
		if _, err := c.Resolve(ctx, host+"/org/app:1"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("%s: declared insecure, anonymous: %v; want the registry's 404 for a tag it does not have", name, err)
		}
	}

	// A scripted registry elsewhere that asks for basic credentials.
	var sawAuth atomic.Bool
	ln, err := net.Listen("tcp", nonLoopbackIP(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			sawAuth.Store(true)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	shost := ln.Addr().String()
	c = newClient(t, transfer.WithCertsDirs(), transfer.WithDockerDaemonConfig(""), transfer.WithInsecureRegistries(shost),
		transfer.WithEndpoint(transfer.Endpoint{Host: shost, Username: "u", Password: "secret"}))
	_, err = c.Repository(ctx, shost, "org/app", true)
	if !errors.Is(err, transfer.ErrCredentialsInClear) || !strings.Contains(err.Error(), shost) {
		t.Errorf("credentials to an insecure registry elsewhere: %v; want ErrCredentialsInClear naming %s", err, shost)
	}
	if sawAuth.Load() {
		t.Error("the credentials reached the registry in clear")
	}
}

// TestDaemonJSONInvalid: a daemon.json that does not parse fails naming it.
func TestDaemonJSONInvalid(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(p, []byte(`{"insecure-registries": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.New(transfer.WithDockerDaemonConfig(p)); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("New: %v; want a failure naming %s", err, p)
	}
	if _, err := transfer.New(transfer.WithInsecureRegistries("http://x.example")); err == nil {
		t.Error("an insecure registry with a scheme was accepted")
	}
}

// TestCertsDir: a registry trusted only through <certs dir>/<host:port>/ca.crt
// is reached; without it, its certificate is refused.
func TestCertsDir(t *testing.T) {
	t.Parallel()
	src := transfertest.Distribution(t)
	transfertest.Push(t, src, src.Host+"/org/app:1", transfertest.Image(t, true, transfertest.Layer(42, 1000)))
	ep := transfer.Endpoint{Host: src.Host, Username: src.Username, Password: src.Password}
	ctx := context.Background()

	c := newClient(t, transfer.WithCertsDirs(t.TempDir()), transfer.WithEndpoint(ep))
	if _, err := c.Resolve(ctx, src.Host+"/org/app:1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without certs.d: %v; want a certificate failure", err)
	}
	for _, layout := range []string{"docker", "containers"} {
		dirs := []string{t.TempDir(), t.TempDir()}
		root := dirs[0]
		if layout == "containers" {
			root = dirs[1]
		}
		writeFile(t, filepath.Join(root, src.Host, "ca.crt"), src.CA)
		c = newClient(t, transfer.WithCertsDirs(dirs...), transfer.WithEndpoint(ep))
		if _, err := c.Resolve(ctx, src.Host+"/org/app:1"); err != nil {
			t.Errorf("trusted through the %s certs directory: %v", layout, err)
		}
	}
}

// TestCertsDirInvalid: an invalid or unreadable file of a certs directory,
// or a key without its certificate, fails naming the file.
func TestCertsDirInvalid(t *testing.T) {
	t.Parallel()
	const host = "registry.example:5000"
	for _, tc := range []struct {
		name, file string
		content    []byte // nil makes a directory
	}{
		{"not a certificate", "ca.crt", []byte("not a certificate\n")},
		{"unreadable", "ca.crt", nil},
		{"key without certificate", "client.key", []byte("key\n")},
		{"certificate without key", "client.cert", []byte("cert\n")},
		{"invalid pair", "client.cert", []byte("cert\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, host, tc.file)
			if tc.content == nil {
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, p, tc.content)
			}
			if tc.name == "invalid pair" {
				writeFile(t, filepath.Join(root, host, "client.key"), []byte("key\n"))
			}
			_, err := transfer.New(transfer.WithCertsDirs(root), transfer.WithDockerDaemonConfig(""), transfer.WithEndpoint(transfer.Endpoint{Host: host}))
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("New: %v; want a failure naming %s", err, p)
			}
			// A registry without an endpoint fails at its first request.
			c := newClient(t, transfer.WithCertsDirs(root), transfer.WithDockerDaemonConfig(""))
			if _, err := c.Resolve(context.Background(), host+"/org/app:1"); err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("Resolve: %v; want a failure naming %s", err, p)
			}
		})
	}
}

// TestCertsDirClientCertificate: <name>.cert with <name>.key is presented
// to the registry.
func TestCertsDirClientCertificate(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, _ := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	client, _ := ca.Issue([]string{"imagegate client"}, time.Hour)
	pair, _ := server.TLSCertificate()
	var presented atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == "imagegate client" {
			presented.Store(true)
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	host := srv.Listener.Addr().String()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, host, "ca.crt"), ca.CertPEM)
	writeFile(t, filepath.Join(root, host, "client.cert"), client.CertPEM)
	writeFile(t, filepath.Join(root, host, "client.key"), client.KeyPEM)
	c := newClient(t, transfer.WithCertsDirs(root), transfer.WithDockerDaemonConfig(""))
	if _, err := c.Repository(context.Background(), host, "org/app", false); err != nil {
		t.Fatal(err)
	}
	if !presented.Load() {
		t.Error("the client certificate was not presented")
	}
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
