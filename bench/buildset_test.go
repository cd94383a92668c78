package bench

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// startRuns is how many starts of each kind are measured; the table shows
// the median and the range.
const startRuns = 5

// BenchmarkBuildsetStartup measures how long the buildset_registry module
// takes from its start to a registry answering over TLS (the module returns
// only then), for a first start (CA and password generated), a start on
// existing data after a stop, and a run on a registry already running. It
// compares with Debian's docker-registry (distribution 2.8) started on a
// prepared TLS and htpasswd configuration, from exec to its first answer.
// It also reports the size of the module binary, built as `make build`
// builds it, and the idle daemons' peak RSS.
func BenchmarkBuildsetStartup(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/buildset_registry", "GOOS=linux", "GOARCH=amd64")
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	deps, heavy := linkedModules(b, bin)

	var cold, restart, noop []time.Duration
	var rss int64
	for i := 0; i < startRuns; i++ {
		root := filepath.Join(b.TempDir(), "br")
		port := testenv.FreePort(b)
		start := map[string]any{"buildset_registry_root": root, "buildset_registry_port": port, "buildset_registry_host": "127.0.0.1"}
		stop := map[string]any{"state": "stopped", "buildset_registry_root": root}
		b.Cleanup(func() { runModule(b, bin, map[string]any{"state": "absent", "buildset_registry_root": root}) })

		d, res := timeModule(b, bin, start)
		cold = append(cold, d)
		if i == 0 {
			if r, err := PeakRSS(int(res["pid"].(float64))); err == nil {
				rss = r
			}
		}
		d, _ = timeModule(b, bin, start)
		noop = append(noop, d)
		runModule(b, bin, stop)
		d, _ = timeModule(b, bin, start)
		restart = append(restart, d)
	}

	// The module hard-links itself into the root when it can; from another
	// file system it copies itself.
	var copied []time.Duration
	if shm, err := os.MkdirTemp("/dev/shm", "igbench"); err == nil && !sameDevice("/dev/shm", b.TempDir()) {
		b.Cleanup(func() { os.RemoveAll(shm) })
		other := filepath.Join(shm, "buildset_registry")
		data, err := os.ReadFile(bin)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(other, data, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < startRuns; i++ {
			root := filepath.Join(b.TempDir(), "br")
			b.Cleanup(func() { runModule(b, other, map[string]any{"state": "absent", "buildset_registry_root": root}) })
			d, _ := timeModule(b, other, map[string]any{"buildset_registry_root": root, "buildset_registry_port": testenv.FreePort(b), "buildset_registry_host": "127.0.0.1"})
			copied = append(copied, d)
		}
	}

	var dist []time.Duration
	var distRSS int64
	for i := 0; i < startRuns; i++ {
		d, r := timeDistribution(b)
		dist = append(dist, d)
		if i == 0 {
			distRSS = r
		}
	}
	distBin := testenv.Tool(b, "DOCKER_REGISTRY", "docker-registry")
	distSize := int64(0)
	if st, err := os.Stat(distBin); err == nil {
		distSize = st.Size()
	}

	Table("buildset registry start-up (module start to TLS answer; median [min-max] of 5)", [][]string{
		{"what", "imagegate buildset_registry", "docker-registry 2.8 (Debian)", "ratio (docker-registry / imagegate)"},
		{"first start (new CA, password)", span(cold), span(dist), Ratio(median(dist).Seconds(), median(cold).Seconds())},
		{"first start, module on another file system (copied)", span(copied), "", Ratio(median(dist).Seconds(), median(copied).Seconds())},
		{"start after stop (same data)", span(restart), "", Ratio(median(dist).Seconds(), median(restart).Seconds())},
		{"already running (changed: false)", span(noop), "", ""},
		{"idle daemon peak RSS", MiB(rss), MiB(distRSS), Ratio(float64(distRSS), float64(rss))},
		{"binary size", fmt.Sprintf("%s (%.1f MB, stripped)", MiB(fi.Size()), float64(fi.Size())/1e6), MiB(distSize), ""},
		{"Go modules linked", fmt.Sprintf("%d; go-containerregistry/buildkit: %s", deps, heavy), "", ""},
	})
	b.ReportMetric(float64(median(cold).Milliseconds()), "cold-start-ms")
	b.ReportMetric(float64(median(restart).Milliseconds()), "restart-ms")
	b.ReportMetric(float64(median(copied).Milliseconds()), "cold-start-copy-ms")
	b.ReportMetric(float64(median(noop).Milliseconds()), "noop-ms")
	b.ReportMetric(float64(median(dist).Milliseconds()), "distribution-start-ms")
	b.ReportMetric(float64(fi.Size())/1e6, "binary-MB")
	b.ReportMetric(float64(rss)/(1<<20), "daemon-peak-RSS-MiB")
}

// linkedModules lists the Go modules linked into bin and names the heavy
// ones that must stay out of this module.
func linkedModules(b *testing.B, bin string) (int, string) {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		b.Fatalf("go version -m: %v", err)
	}
	n, heavy := 0, []string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "dep" {
			continue
		}
		n++
		if strings.Contains(f[1], "go-containerregistry") || strings.Contains(f[1], "moby/buildkit") {
			heavy = append(heavy, f[1])
		}
	}
	if len(heavy) == 0 {
		return n, "none"
	}
	return n, strings.Join(heavy, ", ")
}

// timeModule runs the module as Ansible does and returns its wall time and
// result; it fails b unless the registry answers afterwards.
func timeModule(b *testing.B, bin string, args map[string]any) (time.Duration, map[string]any) {
	b.Helper()
	argsFile := filepath.Join(b.TempDir(), "args")
	data, _ := json.Marshal(args)
	if err := os.WriteFile(argsFile, data, 0o600); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	out, err := exec.Command(bin, argsFile).Output()
	d := time.Since(t0)
	if err != nil {
		b.Fatalf("module: %v\n%s", err, out)
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil || res["failed"] != false {
		b.Fatalf("module result: %s", out)
	}
	br := res["buildset_registry"].(map[string]any)
	client := caClient(b, br["cert"].(string))
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%v/v2/", br["port"]))
	if err != nil {
		b.Fatalf("registry does not answer after the module returned: %v", err)
	}
	resp.Body.Close()
	return d, res
}

func runModule(b *testing.B, bin string, args map[string]any) {
	argsFile := filepath.Join(b.TempDir(), "args")
	data, _ := json.Marshal(args)
	os.WriteFile(argsFile, data, 0o600)
	if out, err := exec.Command(bin, argsFile).Output(); err != nil {
		b.Errorf("module %v: %v\n%s", args["state"], err, out)
	}
}

func caClient(b *testing.B, caPEM string) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		b.Fatal("buildset_registry.cert is not PEM")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// timeDistribution starts docker-registry on a TLS and htpasswd
// configuration prepared beforehand (testenv.DistributionCommand), and
// returns the time from exec to its first answer, polled every
// millisecond, and its peak RSS then.
func timeDistribution(b *testing.B) (time.Duration, int64) {
	dist, cmd := testenv.DistributionCommand(b, testenv.DistributionOptions{})
	client := dist.TLS.Client()
	t0 := time.Now()
	p := testenv.StartProcess(b, "docker-registry", cmd, dist.Dir)
	url := "https://" + dist.Host + "/v2/"
	deadline := t0.Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			b.Fatalf("docker-registry did not answer: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	d := time.Since(t0)
	rss, _ := PeakRSS(cmd.Process.Pid)
	p.Stop()
	return d, rss
}

func sameDevice(a, b string) bool {
	sa, erra := os.Stat(a)
	sb, errb := os.Stat(b)
	if erra != nil || errb != nil {
		return false
	}
	return sa.Sys().(*syscall.Stat_t).Dev == sb.Sys().(*syscall.Stat_t).Dev
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func span(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%s [%s-%s]", Seconds(median(s)), Seconds(s[0]), Seconds(s[len(s)-1]))
}
