package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// The intermediate-registry benchmark: 10 images sharing a base of 20
// layers of 14 MiB, each with one own layer of 2 MiB: 30 distinct layers,
// 300 MiB in all, as changes ahead leave them in the intermediate
// registry.
const (
	transferImages    = 10
	transferBase      = 20
	transferBaseSize  = 14 << 20
	transferOwnSize   = 2 << 20
	transferBuildUUID = "6a0e1f2b3c4d"
)

// BenchmarkIntermediatePull populates a fresh buildset registry
// (imagegate's) from an intermediate registry (Debian's docker-registry,
// TLS and htpasswd) with the 10 images, three ways, each into its own
// fresh buildset registry of the same kind:
//
//   - as upstream's pull-from-intermediate-registry role does: one
//     `skopeo --insecure-policy copy --all` per artifact, in sequence;
//   - with crane copy per artifact, in sequence (go-containerregistry
//     alone, which cannot mount across registries);
//   - with the intermediate_registry_pull module (all artifacts at once).
//
// Each result is checked: every tag holds the intermediate registry's
// digest. The three alternate over several rounds (IMAGEGATE_BENCH_ROUNDS,
// default 3) and the table shows the median round of each, with the
// spread: on a shared machine one round says little.
func BenchmarkIntermediatePull(b *testing.B) {
	ir := transfertest.Distribution(b)
	work := b.TempDir()

	// The images, pushed once: image 0 uploads the base, the others mount it.
	b.Logf("making %d images (%d MiB)", transferImages, (transferBase*transferBaseSize+transferImages*transferOwnSize)>>20)
	var base []v1.Layer
	for i := range transferBase {
		base = append(base, transfertest.Layer(uint64(1000+i), transferBaseSize))
	}
	var refs []string
	var digests []string
	for i := range transferImages {
		ref := fmt.Sprintf("%s/myorg/img%d:%s_latest", ir.Host, i, transferBuildUUID)
		layers := append([]v1.Layer{}, base...)
		if i > 0 {
			first, _ := name.ParseReference(refs[0])
			for j := range layers {
				layers[j] = &remote.MountableLayer{Layer: base[j], Reference: first}
			}
		}
		layers = append(layers, transfertest.Layer(uint64(2000+i), transferOwnSize))
		digests = append(digests, transfertest.Push(b, ir, ref, transfertest.Image(b, false, layers...)))
		refs = append(refs, ref)
	}
	total := int64(transferBase*transferBaseSize + transferImages*transferOwnSize)
	base = nil
	debug.FreeOSMemory() // the layers are in the registry now

	irHost, irPort := splitHostPort(b, ir.Host)
	var artifacts []zuul.Artifact
	for i := range transferImages {
		a := zuul.NewContainerImageArtifact(irHost, irPort, fmt.Sprintf("myorg/img%d", i), "latest", transferBuildUUID+"_latest")
		artifacts = append(artifacts, a)
	}
	// check runs after each copy, untimed: every tag holds the
	// intermediate registry's digest, and every blob reads back from the
	// buildset registry with its digest (hashed here, independently of
	// both registries' own checks).
	check := func(br transfertest.Registry, how string) {
		c, err := transfer.New(transfer.WithEndpoint(br.Endpoint()))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		seen := map[string]bool{}
		var read int64
		for i := range transferImages {
			ref := fmt.Sprintf("%s/myorg/img%d:latest", br.Host, i)
			d, err := c.Resolve(context.Background(), ref)
			if err != nil || d.Digest != digests[i] {
				b.Fatalf("%s: buildset registry img%d: %v %v, want %s", how, i, d, err, digests[i])
			}
			read += transfertest.CheckBlobs(b, br, ref, seen)
		}
		if read < total {
			b.Fatalf("%s: read back %d bytes of blobs, want at least %d", how, read, total)
		}
	}

	// The module, built as make build builds it.
	bin := filepath.Join(work, "intermediate_registry_pull")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./modules/intermediate_registry_pull")
	build.Dir = daemon.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the module: %v\n%s", err, out)
	}
	fi, _ := os.Stat(bin)
	crane := testenv.Tool(b, "CRANE", "crane")

	// Upstream: skopeo copy --all per artifact, in sequence. Credentials
	// in an auth file and CAs in cert directories stand for the role's
	// config.json and /etc/docker/certs.d entries.
	runSkopeo := func() run {
		br := transfertest.Ours(b)
		authFile := writeAuthFile(b, work, ir, br)
		irCerts, brCerts := certDir(b, work, "ir", ir.CA), certDir(b, work, "br-"+br.Host, br.CA)
		var total run
		for i, a := range artifacts {
			dst := fmt.Sprintf("docker://%s/myorg/img%d:latest", br.Host, i)
			r, _ := timeCommand(b, nil, "skopeo", "--insecure-policy", "copy", "--all", "--quiet", "--authfile", authFile,
				"--src-cert-dir", irCerts, "--dest-cert-dir", brCerts, a.URL, dst)
			total.add(r)
		}
		check(br, "skopeo")
		return total
	}
	// go-containerregistry alone: crane copy per artifact, in sequence.
	runCrane := func() run {
		br := transfertest.Ours(b)
		home := filepath.Join(work, "crane-"+br.Host)
		os.MkdirAll(filepath.Join(home, ".docker"), 0o700)
		os.WriteFile(filepath.Join(home, ".docker", "config.json"), mustRead(b, writeAuthFile(b, work, ir, br)), 0o600)
		bundle := filepath.Join(home, "ca-bundle.crt")
		os.WriteFile(bundle, append(append([]byte{}, ir.CA...), br.CA...), 0o644)
		var total run
		for i := range artifacts {
			src := strings.TrimPrefix(artifacts[i].URL, "docker://")
			dst := fmt.Sprintf("%s/myorg/img%d:latest", br.Host, i)
			r, _ := timeCommand(b, []string{"HOME=" + home, "SSL_CERT_FILE=" + bundle}, crane, "copy", src, dst)
			total.add(r)
		}
		check(br, "crane")
		return total
	}
	// imagegate: the module, once, for all artifacts.
	var copied, mounted int
	var bytesCopied int64
	runModule := func() run {
		br := transfertest.Ours(b)
		brHost, brPort := splitHostPort(b, br.Host)
		args := map[string]any{
			"zuul": map[string]any{"build": "f00d", "artifacts": artifacts},
			"buildset_registry": map[string]any{"host": brHost, "port": brPort, "username": br.Username,
				"password": br.Password, "cert": string(br.CA)},
			"intermediate_registry": map[string]any{"host": irHost, "port": irPort, "username": ir.Username,
				"password": ir.Password, "cert": string(ir.CA)},
		}
		argsFile := filepath.Join(work, "args.json")
		ab, _ := json.Marshal(args)
		os.WriteFile(argsFile, ab, 0o600)
		r, out := timeCommand(b, nil, bin, argsFile)
		var res struct {
			Failed bool
			Msg    string
			Images []intermediateImage
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Failed {
			b.Fatalf("module: %v %s", err, out)
		}
		check(br, "module")
		copied, mounted, bytesCopied = 0, 0, 0
		for _, im := range res.Images {
			copied += im.BlobsCopied
			mounted += im.BlobsMounted
			bytesCopied += im.BytesCopied
		}
		return r
	}

	// Rounds alternate the three, so that a change in the machine's load
	// (other work on a shared machine) does not favour one of them; each
	// copies into a fresh buildset registry. The table shows medians.
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("IMAGEGATE_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	// The benchmark's own timer (ns/op) counts the module runs only, all
	// rounds together; the tables and metrics give per-round medians.
	var skopeoRuns, craneRuns, moduleRuns []run
	b.ResetTimer()
	b.StopTimer()
	for range rounds {
		skopeoRuns = append(skopeoRuns, runSkopeo())
		craneRuns = append(craneRuns, runCrane())
		b.StartTimer()
		moduleRuns = append(moduleRuns, runModule())
		b.StopTimer()
	}
	skopeo, cr, ours := medianRun(skopeoRuns), medianRun(craneRuns), medianRun(moduleRuns)

	row := func(how string, r run, all []run) []string {
		return []string{how, Seconds(r.wall), spread(all), MBps(total, r.wall), Seconds(r.cpu), MiB(r.peakRSS),
			Ratio(skopeo.wall.Seconds(), r.wall.Seconds())}
	}
	Table(fmt.Sprintf("Populate a buildset registry from the intermediate registry: %d images sharing a base, %d distinct layers, %s (median of %d rounds)",
		transferImages, transferBase+transferImages, MiB(total), rounds), [][]string{
		{"how", "time", "min-max", "throughput", "CPU (user+sys)", "peak RSS", "speed vs skopeo"},
		row("skopeo copy --all, per artifact (upstream)", skopeo, skopeoRuns),
		row("crane copy, per artifact (go-containerregistry)", cr, craneRuns),
		row("intermediate_registry_pull module (imagegate)", ours, moduleRuns),
	})
	Table("intermediate_registry_pull: what crossed the wire", [][]string{
		{"blobs uploaded", "blobs mounted", "bytes uploaded", "module binary"},
		{strconv.Itoa(copied), strconv.Itoa(mounted), MiB(bytesCopied), MiB(fi.Size())},
	})
	b.ReportMetric(skopeo.wall.Seconds(), "skopeo-s")
	b.ReportMetric(cr.wall.Seconds(), "crane-s")
	b.ReportMetric(ours.wall.Seconds(), "module-s")
	b.ReportMetric(skopeo.wall.Seconds()/ours.wall.Seconds(), "speedup-vs-skopeo")
	b.ReportMetric(float64(ours.peakRSS)/(1<<20), "module-peak-RSS-MiB")
	b.ReportMetric(float64(bytesCopied)/(1<<20), "module-uploaded-MiB")
}

// medianRun is the run of median wall time.
func medianRun(rs []run) run {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b run) int { return cmp.Compare(a.wall, b.wall) })
	return s[len(s)/2]
}

func spread(rs []run) string {
	lo, hi := rs[0].wall, rs[0].wall
	for _, r := range rs {
		lo, hi = min(lo, r.wall), max(hi, r.wall)
	}
	return fmt.Sprintf("%.2f-%.2fs", lo.Seconds(), hi.Seconds())
}

type intermediateImage struct {
	BlobsCopied  int   `json:"blobs_copied"`
	BlobsMounted int   `json:"blobs_mounted"`
	BytesCopied  int64 `json:"bytes_copied"`
}

func splitHostPort(b *testing.B, hostport string) (string, int) {
	b.Helper()
	host, port, _ := strings.Cut(hostport, ":")
	p, err := strconv.Atoi(port)
	if err != nil {
		b.Fatal(err)
	}
	return host, p
}

// writeAuthFile writes a docker config with both registries' credentials,
// for the tools compared against (a temporary file, removed with the test
// directory).
func writeAuthFile(b *testing.B, dir string, regs ...transfertest.Registry) string {
	b.Helper()
	auths := map[string]any{}
	for _, r := range regs {
		auths[r.Host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
	}
	f, err := os.CreateTemp(dir, "auth*.json")
	if err != nil {
		b.Fatal(err)
	}
	json.NewEncoder(f).Encode(map[string]any{"auths": auths})
	f.Close()
	return f.Name()
}

func certDir(b *testing.B, dir, name string, ca []byte) string {
	b.Helper()
	d := filepath.Join(dir, name+"-certs")
	if err := os.MkdirAll(d, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "ca.crt"), ca, 0o644); err != nil {
		b.Fatal(err)
	}
	return d
}

func mustRead(b *testing.B, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// run is one measured command.
type run struct {
	wall, cpu time.Duration
	peakRSS   int64
}

func (r *run) add(o run) {
	r.wall += o.wall
	r.cpu += o.cpu
	r.peakRSS = max(r.peakRSS, o.peakRSS)
}

// timeCommand runs a command and returns its wall time, CPU time (user and
// system) and peak RSS. The peak is VmHWM polled from /proc while it runs:
// the rusage maximum would include this process's own peak, which a child
// started with vfork inherits until exec.
func timeCommand(b *testing.B, env []string, name string, args ...string) (run, []byte) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// Start returns once the child has exec'd: its memory is its own.
	done := make(chan struct{})
	var peak int64
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if p, err := PeakRSS(cmd.Process.Pid); err == nil {
				peak = max(peak, p)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	r := run{wall: time.Since(start)}
	close(done)
	if err != nil {
		b.Fatalf("%s %s: %v\n%s\n%s", name, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r.peakRSS = peak
	return r, stdout.Bytes()
}
