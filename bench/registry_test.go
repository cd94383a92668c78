package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
)

const (
	registryBenchLayers    = 8
	registryBenchLayerSize = 64 << 20 // 8 x 64 MiB = 512 MiB
	registryBenchRounds    = 3
)

// fileLayer is an uncompressed layer streamed from a file, so the client
// holds no layer in memory.
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

func (l *fileLayer) Digest() (v1.Hash, error)                 { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)                 { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                     { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)      { return types.OCIUncompressedLayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)       { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error)     { return os.Open(l.path) }
func (l *fileLayer) String() string                           { return filepath.Base(l.path) }
func (l *fileLayer) Exists() (bool, error)                    { _, err := os.Stat(l.path); return err == nil, err }
func (l *fileLayer) hash(r io.Reader) (v1.Hash, int64, error) { return v1.SHA256(r) }

// benchImage writes 8 random 64 MiB layers under dir and returns the image.
func benchImage(b *testing.B, dir string) v1.Image {
	b.Helper()
	img := empty.Image
	for i := range registryBenchLayers {
		p := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, registryBenchLayerSize); err != nil {
			b.Fatal(err)
		}
		f.Close()
		l := &fileLayer{path: p, size: registryBenchLayerSize}
		rf, _ := os.Open(p)
		l.digest, _, err = l.hash(rf)
		rf.Close()
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	return img
}

// registryTarget is one registry under test.
type registryTarget struct {
	name       string
	host       string
	user, pass string
	pid        func() int
	push, pull []time.Duration
}

// BenchmarkRegistry pushes and pulls an image of 8 layers totalling 512
// MiB through imagegate's registry and through Debian's docker-registry
// (distribution 2.8, htpasswd), both over TLS on the same disk, with the
// same client (go-containerregistry, 4 parallel layer transfers), and
// prints throughput both ways, the ratios, and each server's peak RSS
// (VmHWM). Each direction runs three times per registry, alternating, each
// push to a new repository; the best run counts.
func BenchmarkRegistry(b *testing.B) {
	dir := b.TempDir()
	img := benchImage(b, dir)
	total := int64(registryBenchLayers * registryBenchLayerSize)

	ours := registrytest.StartProcess(b)
	dist := testenv.StartDistribution(b, testenv.DistributionOptions{})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ours.CAPEM)
	pool.AppendCertsFromPEM(dist.TLS.CA.CertPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}

	targets := []*registryTarget{
		{name: "imagegate", host: ours.Host, user: ours.Username, pass: ours.Password, pid: ours.PID},
		{name: "docker-registry 2.8", host: dist.Host, user: dist.Username, pass: dist.Password, pid: func() int { return dist.Cmd.Process.Pid }},
	}
	b.ResetTimer()
	for round := range registryBenchRounds {
		for _, tg := range targets {
			ref, err := name.ParseReference(fmt.Sprintf("%s/bench/image-%d:latest", tg.host, round))
			if err != nil {
				b.Fatal(err)
			}
			opts := []remote.Option{remote.WithTransport(tr), remote.WithContext(context.Background()),
				remote.WithAuth(&authn.Basic{Username: tg.user, Password: tg.pass})}
			// A new repository per round, so no layer is skipped as present.
			start := time.Now()
			if err := remote.Write(ref, img, opts...); err != nil {
				b.Fatalf("pushing to %s: %v", tg.name, err)
			}
			tg.push = append(tg.push, time.Since(start))
		}
		for _, tg := range targets {
			ref, _ := name.ParseReference(fmt.Sprintf("%s/bench/image-%d:latest", tg.host, round))
			start := time.Now()
			if err := pullAll(ref, remote.WithTransport(tr), remote.WithContext(context.Background()),
				remote.WithAuth(&authn.Basic{Username: tg.user, Password: tg.pass})); err != nil {
				b.Fatalf("pulling from %s: %v", tg.name, err)
			}
			tg.pull = append(tg.pull, time.Since(start))
		}
	}
	b.StopTimer()

	rows := [][]string{{"registry", "push", "push MB/s", "pull", "pull MB/s", "peak RSS"}}
	best := map[string][2]time.Duration{}
	rss := map[string]int64{}
	for _, tg := range targets {
		push, pull := minDuration(tg.push), minDuration(tg.pull)
		best[tg.name] = [2]time.Duration{push, pull}
		peak, err := PeakRSS(tg.pid())
		if err != nil {
			b.Fatal(err)
		}
		rss[tg.name] = peak
		rows = append(rows, []string{tg.name, Seconds(push), MBps(total, push), Seconds(pull), MBps(total, pull), MiB(peak)})
	}
	o, d := best["imagegate"], best["docker-registry 2.8"]
	rows = append(rows, []string{"imagegate / docker-registry",
		"", Ratio(d[0].Seconds(), o[0].Seconds()) + " faster",
		"", Ratio(d[1].Seconds(), o[1].Seconds()) + " faster",
		Ratio(float64(rss["imagegate"]), float64(rss["docker-registry 2.8"])) + " of its RSS"})
	Table(fmt.Sprintf("Registry: push and pull of %d layers, %s in all, TLS, go-containerregistry client (best of %d)",
		registryBenchLayers, MiB(total), registryBenchRounds), rows)
	b.ReportMetric(float64(total)/1e6/o[0].Seconds(), "imagegate-push-MB/s")
	b.ReportMetric(float64(total)/1e6/o[1].Seconds(), "imagegate-pull-MB/s")
	b.ReportMetric(float64(total)/1e6/d[0].Seconds(), "distribution-push-MB/s")
	b.ReportMetric(float64(total)/1e6/d[1].Seconds(), "distribution-pull-MB/s")
	b.ReportMetric(float64(rss["imagegate"])/(1<<20), "imagegate-peak-RSS-MiB")
	b.ReportMetric(float64(rss["docker-registry 2.8"])/(1<<20), "distribution-peak-RSS-MiB")
}

// pullAll fetches an image's manifest, config and every layer (4 at a
// time), verifying each layer's digest, and discards the bytes.
func pullAll(ref name.Reference, opts ...remote.Option) error {
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(layers))
	var wg sync.WaitGroup
	for _, l := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rc, err := l.Compressed() // verifies the digest at EOF
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			if _, err := io.Copy(io.Discard, rc); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func minDuration(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}
