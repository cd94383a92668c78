package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/buildset"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// cacheBenchDockerfile has an expensive step no change touches (hashing
// 4 GB in busybox: about 20 CPU-seconds here) and a small step each change
// changes.
const cacheBenchDockerfile = `FROM myorg/base
RUN for i in 1 2 3 4; do head -c 1000000000 /dev/zero | sha256sum; done > /expensive
COPY changed.txt /changed.txt
RUN cat /expensive /changed.txt > /summary
`

// cacheBenchImages is the job's docker_images.
var cacheBenchImages = []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}}

// BenchmarkBuildCache measures the BuildKit cache across changes
// (docs/cache.md) as the jobs run it: change 1 merges and its post build
// exports the cache of merged code through the registries (buildset
// registry, then the executor's copy to the intermediate registry); change
// 2's check build then runs on a fresh node (a new buildkitd with an empty
// state directory) with a fresh buildset registry: the executor copies the
// cache of merged code into it (intermediate_registry_pull), and
// docker_image_build imports it and exports its own (the cache options as
// the roles pass them: the defaults). Beside it, upstream's way: a fresh
// builder per build with no cache, the same Dockerfile and change, a fresh
// buildkitd and no import. Every registry is TLS with authentication; the
// buildset registries are the buildset_registry module's daemon.
func BenchmarkBuildCache(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/buildset_registry", "GOOS=linux", "GOARCH=amd64")
	ir := transfertest.Ours(b)
	irHost, irPort := splitHostPort(b, ir.Host)
	home := b.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "project")
	if err := os.MkdirAll(work, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(cacheBenchDockerfile), 0o644); err != nil {
		b.Fatal(err)
	}
	root := testenv.ShortTempDir(b)
	ctx := context.Background()

	type job struct {
		pull, build, push time.Duration
		res               *build.ImageResult
	}
	// runJob runs one build job: pull (executor), build on a fresh node,
	// push (executor); cache false is upstream's way (no import, no
	// export, no cache copies).
	runJob := func(n int, vars zuul.Vars, changed string, cache bool) job {
		var j job
		br := startBenchBuildset(b, filepath.Join(root, "br"+strconv.Itoa(n)), bin)
		pushBase(b, br)
		regs := intermediate.Registries{BuildsetRegistry: br, IntermediateRegistry: &zuul.IntermediateRegistry{Host: irHost, Port: irPort,
			Username: ir.Username, Password: ir.Password, Cert: string(ir.CA)}, Jobs: 16, LayerJobs: 8, Retries: 4}
		vars.Project = zuul.Project{CanonicalName: "example.org/org/project", SrcDir: work}
		if err := os.WriteFile(filepath.Join(work, "changed.txt"), []byte(changed), 0o644); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		pulled, err := intermediate.Pull(ctx, intermediate.PullSpec{Zuul: vars, Registries: regs, DockerImages: cacheBenchImages, Cache: cache})
		if err != nil {
			b.Fatalf("pull: %v", err)
		}
		j.pull = time.Since(start)
		b.Logf("pull %s: %s %v", vars.Build, pulled.Msg, pulled.Warnings)
		node := testenv.StartBuildkitd(b, brBuildkitdConfig(b, br))
		defer node.Stop()
		start = time.Now()
		res, err := build.Build(ctx, build.Request{Images: cacheBenchImages, Zuul: vars, WorkDir: work, Home: home,
			Registry: br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: cache})
		if err != nil {
			b.Fatalf("build %s: %v", vars.Build, err)
		}
		j.build = time.Since(start)
		j.res = &res.Images[0]
		b.Logf("build %s: from %v to %s, %d of %d steps cached, warnings %v", vars.Build, j.res.CacheFrom, j.res.CacheTo,
			j.res.CacheHits, j.res.Steps, res.Warnings)
		start = time.Now()
		if _, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: vars, Registries: regs, DockerImages: cacheBenchImages, Cache: cache}); err != nil {
			b.Fatalf("push: %v", err)
		}
		j.push = time.Since(start)
		return j
	}

	b.ResetTimer()
	// Change 1 merged: its post build finds no cache and writes the cache
	// of merged code.
	first := runJob(1, zuul.Vars{Build: "b1post", Change: "1", Pipeline: "post", Branch: "master"}, "change 1\n", true)
	// Upstream: change 2 on a fresh builder, no cache.
	upstream := runJob(2, zuul.Vars{Build: "b2up", Change: "2", Pipeline: "check", Branch: "master"}, "change 2\n", false)
	// imagegate: change 2 on a fresh node importing the cache of merged
	// code.
	cached := runJob(3, zuul.Vars{Build: "b2ig", Change: "2", Pipeline: "check", Branch: "master"}, "change 2\n", true)
	b.StopTimer()
	if len(cached.res.CacheFrom) == 0 || cached.res.CacheHits == 0 {
		b.Errorf("change 2's build did not reuse the cache of merged code: from %v, %d of %d steps cached",
			cached.res.CacheFrom, cached.res.CacheHits, cached.res.Steps)
	}

	row := func(how string, j job) []string {
		total := j.pull + j.build + j.push
		return []string{how, Seconds(j.pull), Seconds(j.build), Seconds(j.push), Seconds(total),
			fmt.Sprintf("%d of %d", j.res.CacheHits, j.res.Steps),
			Ratio((upstream.pull + upstream.build + upstream.push).Seconds(), total.Seconds()), Ratio(upstream.build.Seconds(), j.build.Seconds())}
	}
	Table("BuildKit cache across changes: change 2 built on a fresh node (fresh buildkitd, fresh buildset registry); unchanged step hashes 4 GB, changed step one small file", [][]string{
		{"", "pull from intermediate (executor)", "build + push to buildset registry", "push to intermediate (executor)", "job total", "steps cached", "job speed vs upstream", "build speed vs upstream"},
		row("upstream: fresh builder, no cache", upstream),
		row("imagegate: import the cache of merged code, export own", cached),
		row("(change 1's post build: no cache yet, exports the cache of merged code)", first),
	})
	b.ReportMetric(upstream.build.Seconds(), "upstream-build-s")
	b.ReportMetric(cached.build.Seconds(), "cached-build-s")
	b.ReportMetric(upstream.build.Seconds()/cached.build.Seconds(), "build-speedup")
	b.ReportMetric((upstream.pull+upstream.build+upstream.push).Seconds()/(cached.pull+cached.build+cached.push).Seconds(), "job-speedup")
}

// startBenchBuildset starts a buildset registry as run-buildset-registry
// does, with the buildset_registry module binary as its daemon, and removes
// it at the end.
func startBenchBuildset(b *testing.B, root, exe string) *zuul.BuildsetRegistry {
	b.Helper()
	spec := buildset.Spec{Root: root, Port: testenv.FreePort(b), Host: "127.0.0.1", Listen: []string{"127.0.0.1"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := buildset.Apply(ctx, spec, buildset.WithExecutable(exe))
	if err != nil {
		b.Fatalf("starting the buildset registry: %v", err)
	}
	b.Cleanup(func() {
		if _, err := buildset.Apply(context.Background(), buildset.Spec{State: buildset.Absent, Root: root}); err != nil {
			b.Errorf("removing the buildset registry: %v", err)
		}
	})
	return res.Registry
}

// brRegistry is a buildset registry as a transfertest.Registry.
func brRegistry(br *zuul.BuildsetRegistry) transfertest.Registry {
	return transfertest.Registry{Host: br.Address(), Username: br.Username, Password: br.Password, CA: []byte(br.Cert)}
}

// pushBase writes the busybox base image as myorg/base:latest, the image
// a change ahead provided.
func pushBase(b *testing.B, br *zuul.BuildsetRegistry) {
	b.Helper()
	transfertest.Push(b, brRegistry(br), br.Address()+"/myorg/base:latest", testenv.BusyboxImage(b))
}

// brBuildkitdConfig trusts the buildset registry as ensure-buildkit does,
// with it as Docker Hub's mirror.
func brBuildkitdConfig(b *testing.B, br *zuul.BuildsetRegistry) string {
	b.Helper()
	caFile := filepath.Join(b.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, []byte(br.Cert), 0o644); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("[registry.%q]\n  mirrors = [%q]\n[registry.%q]\n  http = false\n  ca = [%q]\n", "docker.io", br.Address(), br.Address(), caFile)
}
