package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/quaytest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
)

// quayIO is quay emulated (internal/quaytest, in front of imagegate's
// registry) as quay.io itself: inside the scenario's sandbox, quay.io
// resolves to a loopback address of its own where one TLS listener on
// port 443 serves both the web API (/api/v1) and the registry, as quay.io
// does, with a certificate for quay.io whose CA the sandbox's
// /etc/docker/certs.d/quay.io trusts. So a job configuration written for
// quay.io runs unchanged: no registry_url, api_url or cert, the type (quay)
// inferred from the name as upstream does.
type quayIO struct {
	backend *registrytest.Registry
	q       *quaytest.Server
	// token is an application token with repo:read and repo:write.
	token string
}

func startQuayIO(w *world) *quayIO {
	t := w.t
	t.Helper()
	s := &quayIO{backend: registrytest.New(t), token: "quay-" + nonce(t)}
	s.q = quaytest.New(t, quaytest.Backend{Host: s.backend.Host, CA: s.backend.CAPEM, Username: s.backend.Username, Password: s.backend.Password})
	s.q.WithToken(s.token, quaytest.ScopeRead, quaytest.ScopeWrite)

	// A loopback address of its own, so port 443 is free there.
	octet := func(n int64) int64 {
		v, err := rand.Int(rand.Reader, big.NewInt(n))
		if err != nil {
			t.Fatal(err)
		}
		return v.Int64()
	}
	ip := fmt.Sprintf("127.%d.%d.%d", 100+octet(100), 1+octet(250), 1+octet(250))
	ca, err := pki.NewCA("e2e quay.io CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue([]string{"quay.io", ip}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := sc.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.CertPool(s.q.CACert)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := url.Parse(s.q.URL)
	reg, _ := url.Parse("https://" + s.q.RegistryHost)
	front := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			if strings.HasPrefix(r.In.URL.Path, "/api/") {
				r.SetURL(api)
			} else {
				r.SetURL(reg)
			}
			// quay.io, so the registry's token realm points back here.
			r.Out.Host = r.In.Host
		},
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		FlushInterval: -1,
	}
	l, err := net.Listen("tcp", ip+":443")
	if err != nil {
		t.Fatalf("quay.io on %s:443: %v", ip, err)
	}
	srv := &http.Server{Handler: front, ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })

	hosts, err := os.OpenFile(w.sb.Path("/etc/hosts"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(hosts, "%s quay.io\n", ip)
	if cerr := hosts.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	w.trust("quay.io", ca.CertPEM)
	return s
}

// trust makes the jobs trust ca for registry (host[:port]) through the
// sandbox's /etc/docker/certs.d, as a node's administrator would.
func (w *world) trust(registry string, ca []byte) {
	w.t.Helper()
	dir := filepath.Join(w.sb.Path("/etc/docker/certs.d"), registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// tags lists a repository's tags in quay's registry.
func (s *quayIO) tags(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(s.backend.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, remoteOpts(s.backend)...)
	if err != nil {
		return nil // a repository never pushed to
	}
	sort.Strings(tags)
	return tags
}

// usePodman points podman, as the jobs run it, at private storage, so
// neither the build's podman load nor the test jobs touch the machine's.
func usePodman(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	storage, conf := filepath.Join(dir, "storage.conf"), filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(storage, fmt.Appendf(nil, "[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "run")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONTAINERS_STORAGE_CONF", storage)
	t.Setenv("CONTAINERS_CONF", conf)
}
