// Package clientconf_test proves, with real clients, that the
// use_buildset_registry module makes them pull speculative images from the
// buildset registry: dockerd through registry-mirrors, podman through
// registries.conf, buildkitd through buildkitd.toml and ctr through
// containerd's hosts.toml. Each client runs in a testenv.Sandbox whose
// /etc/hosts and certificate directories the module edits at their real
// default paths; the namespaces' upstream registries are unreachable here,
// so a successful pull of the expected digest proves the mirror was used.
package clientconf_test

import (
	"crypto/rand"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry"
)

// Images in the buildset registry, by repository as stored there (the
// namespace mapping rule: docker.io content without a prefix).
const (
	dockerApp = "myorg/app"
	quayApp   = "quay.io/myorg/app"
	quayBase  = "quay.io/myorg/base"
)

type fixture struct {
	// registry is the buildset_registry module parameter.
	registry map[string]any
	// location is zuul-jobs.buildset-registry:<port>.
	location string
	// images maps repository to the speculative image pushed there.
	images map[string]v1.Image
	digest map[string]string
	module string
	// address is host:port, and ropts reach the registry with its
	// credentials.
	address string
	ropts   []remote.Option
}

// head returns the digest of ref (repository:tag) in the registry.
func (f *fixture) head(ref string) (string, error) {
	r, err := name.ParseReference(f.address + "/" + ref)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r, f.ropts...)
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// lib holds the module, built once as `make build` builds it, beside its
// documentation: ANSIBLE_LIBRARY.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "use_buildset_registry") }

// newFixture starts imagegate's registry (registrytest: TLS, a write user,
// anonymous reads) served on host, the machine's non-loopback address:
// loopback registries are "insecure" to dockerd, which would then skip
// certificate checks and prove nothing about the CA. It pushes one distinct
// speculative image per repository and builds the module.
func newFixture(t *testing.T, host string) *fixture {
	t.Helper()
	return newFixtureWith(t, host)
}

// newFixtureWith is newFixture with options for the registry (a
// pull-through cache).
func newFixtureWith(t *testing.T, host string, opts ...registry.Option) *fixture {
	t.Helper()
	rg := registrytest.New(t, opts...)
	ca, err := pki.NewCA("clientconf test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue(pki.HostNames(host), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listening on %s: %v", host, err)
	}
	// Clients rejecting the certificate (on purpose, in some tests) make
	// handshake errors; they are not worth a line on stderr.
	srv := &http.Server{Handler: rg.Handler, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	f := &fixture{
		registry: map[string]any{"host": host, "port": port, "username": rg.Username,
			"password": rg.Password, "cert": string(ca.CertPEM)},
		location: "zuul-jobs.buildset-registry:" + strconv.Itoa(port),
		images:   map[string]v1.Image{},
		digest:   map[string]string{},
	}
	pool, _ := pki.CertPool(ca.CertPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	auth := remote.WithAuth(&authn.Basic{Username: rg.Username, Password: rg.Password})
	for _, repo := range []string{dockerApp, quayApp, quayBase} {
		mark := make([]byte, 16)
		rand.Read(mark)
		img := testenv.BusyboxImage(t, testenv.FileLayer("speculative/"+filepath.Base(repo), mark))
		ref, err := name.ParseReference(net.JoinHostPort(host, strconv.Itoa(port)) + "/" + repo + ":latest")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithTransport(tr), auth); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		f.images[repo], f.digest[repo] = img, d.String()
	}
	f.module = lib.Bin("use_buildset_registry")
	f.address = net.JoinHostPort(host, strconv.Itoa(port))
	f.ropts = []remote.Option{remote.WithTransport(tr), auth}
	return f
}

// args returns module arguments for the given clients; paths not given are
// the module's defaults, which the sandbox makes private.
func (f *fixture) args(clients []string, paths map[string]any) map[string]any {
	a := map[string]any{"buildset_registry": f.registry, "clients": clients}
	for k, v := range paths {
		a[k] = v
	}
	return a
}

// run runs the module inside the sandbox and fails t unless it succeeded
// with the expected changed value.
func (f *fixture) run(t *testing.T, sb *testenv.Sandbox, args map[string]any, wantChanged bool) *ansibletest.Output {
	t.Helper()
	out := ansibletest.RunBinary(t, sb.Wrap(t, f.module), args)
	if out.Failed() || out.Changed() != wantChanged {
		t.Fatalf("module: failed=%v changed=%v (want %v): %s\nstderr: %s", out.Failed(), out.Changed(), wantChanged, out.Stdout, out.Stderr)
	}
	return out
}

// localAddr returns a non-loopback, non-link-local address of this machine
// in the given family ("ipv4" or "ipv6"). A machine without one cannot run
// these tests: that is a setup failure, not a skip.
func localAddr(t *testing.T, family string) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if (ipn.IP.To4() != nil) == (family == "ipv4") {
			return ipn.IP.String()
		}
	}
	t.Fatalf("this machine has no non-loopback %s address (interfaces: %v)", family, addrs)
	return ""
}
