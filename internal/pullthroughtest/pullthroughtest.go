// Package pullthroughtest is the pull-through scenario of the tests and
// benchmarks: base images on a real registry (Debian's docker-registry)
// behind a counting, rate-limited proxy (internal/ratelimit) that stands
// for Docker Hub and quay.io; the intermediate registry (pkg/server)
// configured with that upstream as a shared cache; and buildset
// registries started by the buildset_registry module's code
// (buildset.Apply), each pointing its namespaces at the intermediate
// registry anonymously.
package pullthroughtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ratelimit"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/buildset"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/server"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Image is a base image on the upstream: Ref as a job names it
// (library/base:1 for docker.io, quay.io/org/tool:2) and its blobs.
type Image struct {
	Ref      string
	Upstream string // repository:tag on the emulated upstream
	Digest   v1.Hash
	Blobs    []v1.Hash
	Size     int64
}

// Site is the upstream, its proxy and the intermediate registry.
type Site struct {
	Limit *ratelimit.Proxy
	// LimitCA is the PEM CA of the proxy's certificate, for clients
	// pulling from the upstream directly.
	LimitCA []byte
	IRHost  string
	IRCA    []byte
	Images  []Image
	IRLogs  *testenv.SyncBuffer
}

// Options size the scenario.
type Options struct {
	// Layers and LayerSize make each base image.
	Layers    int
	LayerSize int64
	// Limit configures the upstream's proxy (quota, latency, bandwidth).
	Limit ratelimit.Config
}

// NewSite starts the upstream with two base images (library/base:1 for
// docker.io, quay.io/org/tool:2 stored as quay/org/tool:2 upstream, the
// quay.io upstream being https://<proxy>/quay), the proxy and the
// intermediate registry with pull_through configured.
func NewSite(t testing.TB, o Options) *Site {
	t.Helper()
	up := testenv.StartDistribution(t, testenv.DistributionOptions{NoAuth: true})
	upPool := x509.NewCertPool()
	upPool.AppendCertsFromPEM(up.TLS.CA.CertPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: upPool}
	s := &Site{}
	for _, im := range []Image{{Ref: "library/base:1", Upstream: "library/base:1"}, {Ref: "quay.io/org/tool:2", Upstream: "quay/org/tool:2"}} {
		img, err := random.Image(o.LayerSize, int64(o.Layers))
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(up.Host + "/" + im.Upstream)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithTransport(tr)); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
		im.Digest, _ = img.Digest()
		cfg, _ := img.ConfigName()
		im.Blobs = append(im.Blobs, cfg)
		layers, _ := img.Layers()
		for _, l := range layers {
			d, _ := l.Digest()
			n, _ := l.Size()
			im.Blobs = append(im.Blobs, d)
			im.Size += n
		}
		s.Images = append(s.Images, im)
	}

	dir := testenv.ShortTempDir(t)
	tl := testenv.NewTLS(t, dir)
	cert, err := tl.Server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	s.LimitCA = tl.CA.CertPEM
	s.Limit, err = ratelimit.Start(up.Host, ratelimit.Options{Certificate: cert, UpstreamRoots: upPool}, o.Limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Limit.Close() })

	yaml := fmt.Sprintf(`listen: ["127.0.0.1:0"]
state_dir: %s
shutdown_timeout: 5s
users:
  - name: zuul
    password: %s
    access: write
pull_through:
  upstreams:
    - registry: docker.io
      url: %s
      ca_file: %s
    - registry: quay.io
      url: %s/quay
      ca_file: %s
`, filepath.Join(dir, "ir"), testenv.RandomString(t, 24), s.Limit.URL(), tl.CAFile, s.Limit.URL(), tl.CAFile)
	cfg, err := server.ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("intermediate registry config: %v\n%s", err, yaml)
	}
	s.IRLogs = &testenv.SyncBuffer{}
	srv, err := server.New(context.Background(), cfg, server.WithLogger(slog.New(slog.NewTextHandler(s.IRLogs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("--- intermediate registry log ---\n%s", s.IRLogs.String())
		}
	})
	addrs := srv.Addrs(context.Background())
	if len(addrs) == 0 {
		t.Fatal("the intermediate registry did not bind")
	}
	s.IRHost = addrs[0].String()
	if s.IRCA, err = os.ReadFile(srv.CAFile()); err != nil {
		t.Fatal(err)
	}
	return s
}

// StartBuildset starts a buildset registry under root on a free port,
// caching docker.io and quay.io from the intermediate registry (no
// credentials: anonymous reads), and removes it at the test's end. exe is
// the buildset_registry executable ("" for the running one, whose main
// calls buildset.ServeIfRequested).
func (s *Site) StartBuildset(t testing.TB, root, exe string) *zuul.BuildsetRegistry {
	t.Helper()
	spec := buildset.Spec{Root: root, Port: testenv.FreePort(t), Host: "127.0.0.1", Listen: []string{"127.0.0.1"},
		PullThrough: true, UpstreamCA: string(s.IRCA), UpstreamTagTTL: 5 * time.Minute,
		Namespaces: [][]string{{"docker.io", "https://" + s.IRHost}, {"quay.io", "https://" + s.IRHost + "/quay.io"}}}
	var opts []buildset.Option
	if exe != "" {
		opts = append(opts, buildset.WithExecutable(exe))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := buildset.Apply(ctx, spec, opts...)
	if err != nil {
		t.Fatalf("starting the buildset registry: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(res.LogFile); err == nil {
				t.Logf("--- buildset registry log ---\n%s", b)
			}
		}
		if _, err := buildset.Apply(context.Background(), buildset.Spec{State: buildset.Absent, Root: root}); err != nil {
			t.Errorf("removing the buildset registry: %v", err)
		}
	})
	return res.Registry
}

// Pull pulls ref (as a job names it) from the registry at host, trusting
// caPEM, as crane does: the manifest, the config and every layer, read to
// the end. It returns the bytes of the layers.
func Pull(host string, caPEM []byte, ref string) (int64, error) {
	pool, err := pki.CertPool(caPEM)
	if err != nil {
		return 0, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	r, err := name.ParseReference(host + "/" + ref)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(r, remote.WithTransport(tr))
	if err != nil {
		return 0, fmt.Errorf("pulling %s: %w", r, err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return 0, fmt.Errorf("pulling %s: config: %w", r, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return 0, fmt.Errorf("pulling %s: %w", r, err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("pulling %s: layer: %w", r, err)
		}
		total += n
	}
	return total, nil
}
