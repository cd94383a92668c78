package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
)

// registryProcess is imagegate-registry started from its binary.
type registryProcess struct {
	*daemon.Process
	host       string
	caPEM      []byte
	user, pass string
}

// buildRegistryCommand builds cmd/imagegate-registry as `make build` does.
func buildRegistryCommand(b *testing.B) string {
	b.Helper()
	return ansibletest.BuildModule(b, "github.com/imagegate/imagegate/cmd/imagegate-registry")
}

// startRegistryProcess runs `imagegate-registry serve` with a write user,
// a generated certificate and the given storage section, and waits until
// its health endpoint answers ok. env carries the secrets.
func startRegistryProcess(b *testing.B, bin, storage string, env []string) *registryProcess {
	b.Helper()
	dir := testenv.ShortTempDir(b)
	port, mon := testenv.FreePort(b), testenv.FreePort(b)
	rp := &registryProcess{host: "127.0.0.1:" + strconv.Itoa(port), user: "zuul", pass: testenv.RandomString(b, 16)}
	cfg := fmt.Sprintf(`listen: ["127.0.0.1:%d"]
state_dir: %s
monitoring:
  listen: 127.0.0.1:%d
log:
  level: warn
users:
  - name: zuul
    password_env: BENCH_PASSWORD
    access: write
%s`, port, filepath.Join(dir, "state"), mon, storage)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Env = append(append(os.Environ(), "BENCH_PASSWORD="+rp.pass), env...)
	rp.Process = testenv.StartProcess(b, "imagegate-registry", cmd, dir)
	testenv.WaitFor(b, "imagegate-registry", time.Minute, rp.Process, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", mon))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("health: %d", resp.StatusCode)
		}
		return nil
	})
	var err error
	if rp.caPEM, err = os.ReadFile(filepath.Join(dir, "state", "tls", "ca.crt")); err != nil {
		b.Fatal(err)
	}
	return rp
}

// BenchmarkRegistryStorage pushes and pulls the image of
// BenchmarkRegistry (8 layers, 512 MiB) through imagegate-registry on the
// filesystem driver, the S3 driver (versitygw on loopback, over TLS, posix
// backend on the same disk) and the Swift driver (Debian's all-in-one
// Swift on loopback, the proxy over TLS, tempauth, one replica on the
// same disk), each registry a separate process over TLS driven by the same
// client (go-containerregistry, 4 parallel layer transfers). It prints
// throughput both ways, each object store driver's ratios against the
// filesystem driver, the peak RSS (VmHWM) of each registry process and of
// the store (versitygw; Swift's proxy with its workers, account, container
// and object servers and memcached, summed). Each direction runs three
// times per driver, alternating, each push to a new repository; the best
// run counts.
func BenchmarkRegistryStorage(b *testing.B) {
	dir := b.TempDir()
	img := benchImage(b, dir)
	total := int64(registryBenchLayers * registryBenchLayerSize)
	bin := buildRegistryCommand(b)

	s3 := testenv.StartVersitygw(b)
	s3Storage := fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    endpoint: %s
    path_style: true
    access_key_id: %s
    secret_access_key_env: BENCH_S3_SECRET
    ca_file: %s
`, s3.NewBucket(b), s3.Endpoint, s3.AccessKey, s3.CAFile)
	sw := testenv.StartSwift(b, testenv.SwiftOptions{})
	swiftStorage := fmt.Sprintf(`storage:
  driver: swift
  swift:
    container: %s
    auth_url: %s
    user: "%s"
    key_env: BENCH_SWIFT_KEY
    ca_file: %s
`, sw.NewContainerName(b), sw.AuthURL, sw.User, sw.CAFile)
	onS3 := startRegistryProcess(b, bin, s3Storage, []string{"BENCH_S3_SECRET=" + s3.SecretKey})
	onSwift := startRegistryProcess(b, bin, swiftStorage, []string{"BENCH_SWIFT_KEY=" + sw.Key})
	onFS := startRegistryProcess(b, bin, "", nil)

	pool := x509.NewCertPool()
	for _, rp := range []*registryProcess{onFS, onS3, onSwift} {
		pool.AppendCertsFromPEM(rp.caPEM)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}

	type target struct {
		name, unit string
		rp         *registryProcess
		store      func() string
		push, pull []time.Duration
	}
	sumPeaks := func(what string, pids ...int) func() string {
		return func() string {
			var sum int64
			for _, pid := range pids {
				p, err := TreePeakRSS(pid)
				if err != nil {
					return "-"
				}
				sum += p
			}
			return MiB(sum) + " (" + what + ")"
		}
	}
	targets := []*target{
		{name: "filesystem", unit: "fs", rp: onFS, store: func() string { return "-" }},
		{name: "s3 (versitygw)", unit: "s3", rp: onS3, store: sumPeaks("versitygw", s3.Cmd.Process.Pid)},
		{name: "swift (all-in-one)", unit: "swift", rp: onSwift, store: sumPeaks("swift servers", sw.Pids()...)},
	}
	b.ResetTimer()
	for round := range registryBenchRounds {
		for _, tg := range targets {
			ref, err := name.ParseReference(fmt.Sprintf("%s/bench/image-%d:latest", tg.rp.host, round))
			if err != nil {
				b.Fatal(err)
			}
			opts := []remote.Option{remote.WithTransport(tr), remote.WithContext(context.Background()),
				remote.WithAuth(&authn.Basic{Username: tg.rp.user, Password: tg.rp.pass})}
			start := time.Now()
			if err := remote.Write(ref, img, opts...); err != nil {
				b.Fatalf("pushing to %s: %v", tg.name, err)
			}
			tg.push = append(tg.push, time.Since(start))
			start = time.Now()
			if err := pullAll(ref, opts...); err != nil {
				b.Fatalf("pulling from %s: %v", tg.name, err)
			}
			tg.pull = append(tg.pull, time.Since(start))
		}
	}
	b.StopTimer()

	rows := [][]string{{"driver", "push", "push MB/s", "pull", "pull MB/s", "registry peak RSS", "store peak RSS"}}
	fsPush, fsPull := minDuration(targets[0].push), minDuration(targets[0].pull)
	var ratios [][]string
	for _, tg := range targets {
		push, pull := minDuration(tg.push), minDuration(tg.pull)
		peak, err := PeakRSS(tg.rp.Cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rows = append(rows, []string{tg.name, Seconds(push), MBps(total, push), Seconds(pull), MBps(total, pull), MiB(peak), tg.store()})
		b.ReportMetric(float64(total)/1e6/push.Seconds(), tg.unit+"-push-MB/s")
		b.ReportMetric(float64(total)/1e6/pull.Seconds(), tg.unit+"-pull-MB/s")
		b.ReportMetric(float64(peak)/(1<<20), tg.unit+"-registry-peak-RSS-MiB")
		if tg.rp != onFS {
			ratios = append(ratios, []string{tg.unit + " / filesystem",
				"", Ratio(fsPush.Seconds(), push.Seconds()) + " of its speed",
				"", Ratio(fsPull.Seconds(), pull.Seconds()) + " of its speed", "", ""})
		}
	}
	Table(fmt.Sprintf("Intermediate registry: push and pull of %d layers, %s in all, on the filesystem, S3 (versitygw) and Swift drivers, TLS (best of %d)",
		registryBenchLayers, MiB(total), registryBenchRounds), append(rows, ratios...))
}
