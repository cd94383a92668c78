package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

const (
	wholeAhead     = 10      // images of changes ahead
	wholeAheadSize = 8 << 20 // each one's own layer
	wholeAheadUUID = "0123456789abcdef0123456789abcdef"
)

// wholeDockerfiles are the buildset's two images: app1 FROM a speculative
// image of a change ahead (BR is the buildset registry), app2 from
// scratch with a file of the context.
var wholeDockerfiles = map[string]string{
	"app1": `FROM BR/myorg/ahead0:latest
RUN dd if=/dev/urandom of=/data bs=1M count=10 2>/dev/null && echo built > /stamp
`,
	"app2": `FROM scratch
COPY payload /payload
`,
}

// wholePhases are the times of one buildset's phases.
type wholePhases struct {
	start, pull, daemon, build, push, consume time.Duration
}

func (p wholePhases) total() time.Duration {
	return p.start + p.pull + p.daemon + p.build + p.push + p.consume
}

// BenchmarkWholeBuildset runs one buildset as the jobs run it: start the
// buildset registry, pull ten images of changes ahead (busybox and 8 MiB of
// their own each) from the intermediate registry into it, build two images
// (one FROM a speculative image) and push them to the buildset registry,
// push them to the intermediate registry, and a consumer (a fresh dockerd)
// pulls both from the buildset registry with `docker pull`.
//
// imagegate: the buildset_registry module binary, then the packages the
// modules call (intermediate.Pull, build.Build on a buildkitd started as
// ensure-buildkit does, intermediate.Push), with their
// defaults (the BuildKit cache on: the first build of a branch, so the pull
// finds no cache and the build exports one). Upstream: Debian's
// docker-registry as the buildset registry (TLS certificate and htpasswd
// made in the start phase, as run-buildset-registry does), `skopeo copy
// --all` per image for the pulls and the pushes between registries,
// `docker build` + `docker push` (legacy builder, Debian's dockerd) on a
// node's dockerd, restarted with the buildset registry as its mirror as
// use-buildset-registry does. The build daemon's (re)start is its own
// phase. Each side has its own intermediate registry (docker-registry)
// holding the same images.
func BenchmarkWholeBuildset(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/buildset_registry", "GOOS=linux", "GOARCH=amd64")
	work := b.TempDir()
	ctx := context.Background()

	// The images of the changes ahead, in each side's intermediate
	// registry.
	var ahead []v1.Image
	for i := range wholeAhead {
		img, err := mutate.AppendLayers(testenv.BusyboxImage(b), transfertest.Layer(uint64(5000+i), wholeAheadSize))
		if err != nil {
			b.Fatal(err)
		}
		ahead = append(ahead, img)
	}
	newIR := func() (transfertest.Registry, []zuul.Artifact) {
		ir := transfertest.Distribution(b)
		host, port := splitHostPort(b, ir.Host)
		var arts []zuul.Artifact
		for i, img := range ahead {
			repo := fmt.Sprintf("myorg/ahead%d", i)
			transfertest.Push(b, ir, fmt.Sprintf("%s/%s:%s_latest", ir.Host, repo, wholeAheadUUID), img)
			arts = append(arts, zuul.NewContainerImageArtifact(host, port, repo, "latest", wholeAheadUUID+"_latest"))
		}
		return ir, arts
	}
	// writeContexts writes the two build contexts under dir for the
	// buildset registry at host.
	writeContexts := func(dir, host string) {
		for name, df := range wholeDockerfiles {
			d := filepath.Join(dir, name)
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "Dockerfile"), []byte(strings.ReplaceAll(df, "BR", host)), 0o644); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 10<<20)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			if err := os.WriteFile(filepath.Join(d, "payload"), payload, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	images := []zuul.Image{{Context: "app1", Repository: "myorg/app1", Tags: []string{"latest"}},
		{Context: "app2", Repository: "myorg/app2", Tags: []string{"latest"}}}
	consume := func(host, user, pass string) time.Duration {
		dd := testenv.StartDockerd(b, testenv.DockerdOptions{})
		defer dd.Stop()
		dd.Login(host, user, pass)
		start := time.Now()
		for _, im := range images {
			dd.Docker("pull", "-q", host+"/"+im.Repository+":latest")
		}
		return time.Since(start)
	}
	checkIR := func(ir transfertest.Registry, tag string) {
		for _, im := range images {
			if _, err := transfertest.ManifestErr(ir, ir.Host+"/"+im.Repository+":"+tag); err != nil {
				b.Fatalf("%s:%s is not in the intermediate registry: %v", im.Repository, tag, err)
			}
		}
	}

	// imagegate.
	runImagegate := func() wholePhases {
		var p wholePhases
		ir, arts := newIR()
		irHost, irPort := splitHostPort(b, ir.Host)
		root := filepath.Join(testenv.ShortTempDir(b), "br")
		b.Cleanup(func() { runModule(b, bin, map[string]any{"state": "absent", "buildset_registry_root": root}) })
		d, res := timeModule(b, bin, map[string]any{"buildset_registry_root": root, "buildset_registry_port": testenv.FreePort(b),
			"buildset_registry_host": "127.0.0.1"})
		p.start = d
		m := res["buildset_registry"].(map[string]any)
		br := &zuul.BuildsetRegistry{Host: m["host"].(string), Port: int(m["port"].(float64)), Username: m["username"].(string),
			Password: m["password"].(string), Cert: m["cert"].(string)}
		src := filepath.Join(work, "ig", "src", "example.org", "org", "project")
		writeContexts(src, br.Address())
		vars := zuul.Vars{Build: "fedcba9876543210fedcba9876543210", Change: "2", Pipeline: "check", Branch: "master",
			Project: zuul.Project{CanonicalName: "example.org/org/project", SrcDir: src}, Artifacts: arts}
		regs := intermediate.Registries{BuildsetRegistry: br, IntermediateRegistry: &zuul.IntermediateRegistry{Host: irHost, Port: irPort,
			Username: ir.Username, Password: ir.Password, Cert: string(ir.CA)}, Jobs: 16, LayerJobs: 8, Retries: 4}

		start := time.Now()
		pulled, err := intermediate.Pull(ctx, intermediate.PullSpec{Zuul: vars, Registries: regs, Artifacts: arts, DockerImages: images, Cache: true})
		if err != nil {
			b.Fatalf("pull: %v", err)
		}
		p.pull = time.Since(start)
		if len(pulled.Images) != wholeAhead {
			b.Fatalf("pulled %d images, want %d: %s", len(pulled.Images), wholeAhead, pulled.Msg)
		}

		start = time.Now()
		node := testenv.StartBuildkitd(b, brBuildkitdConfig(b, br))
		defer node.Stop()
		p.daemon = time.Since(start)
		start = time.Now()
		built, err := build.Build(ctx, build.Request{Images: images, Zuul: vars, WorkDir: src, Home: filepath.Join(work, "ig"),
			Registry: br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: true})
		if err != nil {
			b.Fatalf("build: %v", err)
		}
		p.build = time.Since(start)
		b.Logf("imagegate build: %+v warnings %v", built.Images, built.Warnings)

		start = time.Now()
		if _, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: vars, Registries: regs, DockerImages: images, Cache: true}); err != nil {
			b.Fatalf("push: %v", err)
		}
		p.push = time.Since(start)
		checkIR(ir, vars.Build+"_latest")

		testenv.TrustCA(b, br.Address(), []byte(br.Cert))
		p.consume = consume(br.Address(), br.Username, br.Password)
		return p
	}

	// Upstream.
	runUpstream := func() wholePhases {
		var p wholePhases
		ir, arts := newIR()
		const buildUUID = "00112233445566778899aabbccddeeff"
		dir := filepath.Join(work, "up")
		os.MkdirAll(dir, 0o755)
		dd := testenv.StartDockerd(b, testenv.DockerdOptions{})
		defer dd.Stop()

		start := time.Now()
		dist := testenv.StartDistribution(b, testenv.DistributionOptions{})
		p.start = time.Since(start)
		br := transfertest.Registry{Host: dist.Host, Username: dist.Username, Password: dist.Password, CA: dist.TLS.CA.CertPEM}
		testenv.TrustCA(b, br.Host, br.CA)
		writeContexts(dir, br.Host)
		authFile := writeAuthFile(b, dir, ir, br)
		irCerts, brCerts := certDir(b, dir, "ir", ir.CA), certDir(b, dir, "br", br.CA)
		skopeo := func(from, to, fromCerts, toCerts string) {
			timeCommand(b, nil, "skopeo", "--insecure-policy", "copy", "--all", "--quiet", "--authfile", authFile,
				"--src-cert-dir", fromCerts, "--dest-cert-dir", toCerts, from, to)
		}

		start = time.Now()
		for i, a := range arts {
			skopeo(a.URL, fmt.Sprintf("docker://%s/myorg/ahead%d:latest", br.Host, i), irCerts, brCerts)
		}
		p.pull = time.Since(start)

		// use-buildset-registry: the mirror in daemon.json, and a restart.
		start = time.Now()
		var cfg map[string]any
		if err := json.Unmarshal(mustRead(b, dd.ConfigFile), &cfg); err != nil {
			b.Fatal(err)
		}
		cfg["registry-mirrors"] = []string{"https://" + br.Host + "/"}
		data, _ := json.Marshal(cfg)
		if err := os.WriteFile(dd.ConfigFile, data, 0o644); err != nil {
			b.Fatal(err)
		}
		dd.Restart()
		p.daemon = time.Since(start)

		dd.Login(br.Host, br.Username, br.Password)
		start = time.Now()
		for _, im := range images {
			ref := br.Host + "/" + im.Repository
			for _, args := range [][]string{
				{"build", "-q", "-t", ref + ":latest", "-t", ref + ":change_2_latest", filepath.Join(dir, im.Context)},
				{"push", "-q", ref + ":latest"},
				{"push", "-q", ref + ":change_2_latest"},
			} {
				timeCommand(b, append(dd.Env(), "DOCKER_BUILDKIT=0"), "docker", args...)
			}
		}
		p.build = time.Since(start)

		start = time.Now()
		for _, im := range images {
			skopeo(fmt.Sprintf("docker://%s/%s:change_2_latest", br.Host, im.Repository),
				fmt.Sprintf("docker://%s/%s:%s_latest", ir.Host, im.Repository, buildUUID), brCerts, irCerts)
		}
		p.push = time.Since(start)
		checkIR(ir, buildUUID+"_latest")

		p.consume = consume(br.Host, br.Username, br.Password)
		return p
	}

	b.ResetTimer()
	up := runUpstream()
	ig := runImagegate()
	b.StopTimer()

	row := func(phase string, u, i time.Duration) []string {
		return []string{phase, Seconds(u), Seconds(i), Ratio(u.Seconds(), i.Seconds())}
	}
	Table(fmt.Sprintf("one buildset end to end: %d images of changes ahead (%s), 2 images built (one FROM a speculative image), pushed to both registries, pulled by a consumer",
		wholeAhead, MiB(wholeAhead*wholeAheadSize)), [][]string{
		{"phase", "upstream (docker-registry, skopeo, docker build/push, docker pull)", "imagegate (modules)", "speed-up"},
		row("start the buildset registry", up.start, ig.start),
		row("pull 10 images of changes ahead from the intermediate registry", up.pull, ig.pull),
		row("(re)start the build daemon (dockerd with the mirror / buildkitd)", up.daemon, ig.daemon),
		row("build 2 images + push to the buildset registry", up.build, ig.build),
		row("push 2 images to the intermediate registry", up.push, ig.push),
		row("consumer pulls both (docker pull)", up.consume, ig.consume),
		row("total", up.total(), ig.total()),
	})
	b.ReportMetric(up.total().Seconds(), "upstream-s")
	b.ReportMetric(ig.total().Seconds(), "imagegate-s")
	b.ReportMetric(up.total().Seconds()/ig.total().Seconds(), "speedup")
}
