package build

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestCacheRepositoryThrottled builds with a good cache of merged code in a
// buildset registry that answers 429 for every request of the cache's
// repository (a rate-limiting proxy in front of it): the build imports
// nothing, exports nothing, and still builds and pushes the image, with a
// warning naming the cache for each.
func TestCacheRepositoryThrottled(t *testing.T) {
	t.Parallel()
	s := newCacheSite(t)
	b := newBuildsetReg(t)
	if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := zuul.Vars{Build: "good", Pipeline: "post", Branch: "master",
		Project: zuul.Project{CanonicalName: "example.org/org/project", SrcDir: s.work}}
	node := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))
	ctx := context.Background()
	res, err := build.Build(ctx, build.Request{Images: cacheImages, Zuul: vars, WorkDir: s.work, Home: s.home,
		Registry: b.br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: true})
	if err != nil || res.Images[0].CacheTo == "" {
		t.Fatalf("first build: %v %+v", err, res)
	}
	mergedTag, _ := vars.MergedCacheTag()
	writeCache(t, b, "imagegate-cache/myorg/app:"+mergedTag, readCache(t, b, "imagegate-cache/myorg/app:good_cache"))

	_, proxied := transfertest.Proxy(t, transfertest.Registry{Host: b.Host, Username: b.Username, Password: b.Password, CA: b.CAPEM}, "",
		faultproxy.Config{Throttle: 1, RetryAfter: time.Second, Match: func(r *http.Request) bool {
			return strings.HasPrefix(r.URL.Path, "/v2/imagegate-cache/")
		}})
	caFile := filepath.Join(t.TempDir(), "proxy-ca.crt")
	if err := os.WriteFile(caFile, proxied.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	host, port := splitHostPort(t, proxied.Host)
	br := &zuul.BuildsetRegistry{Host: host, Port: port, Username: b.Username, Password: b.Password, Cert: string(proxied.CA)}
	if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte("y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := testenv.StartBuildkitd(t, buildkitdConfig(proxied.Host, caFile))
	vars.Build, vars.Pipeline, vars.Change = "throttled", "check", "7"
	res, err = build.Build(ctx, build.Request{Images: cacheImages, Zuul: vars, WorkDir: s.work, Home: s.home,
		Registry: br, BuildkitAddr: fresh.Addr, DockerHost: "none", Cache: true})
	if err != nil {
		t.Fatalf("the build failed because the cache's repository answers 429: %v", err)
	}
	if res.Images[0].Digest == "" || len(res.Images[0].CacheFrom) != 0 {
		t.Errorf("image %+v: want one built and pushed without any cache imported", res.Images[0])
	}
	for _, want := range []string{"not importing the cache of merged code", "the build cache was not exported"} {
		if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("warnings %q: want one containing %q", res.Warnings, want)
		}
	}
	t.Logf("warnings: %q", res.Warnings)
}

func splitHostPort(t *testing.T, hostport string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

// TestCacheCopiesThrottled runs a job of change Z, depending on a change
// ahead, against an intermediate registry that answers 429 for every
// request of the caches' repositories: the executor's pull copies the
// change ahead's image and warns for each cache (merged code's and the
// change ahead's), the build runs without a cache, and the push copies the
// image and returns its artifact, warning that its cache was not copied
// and returning no cache artifact. Nothing fails because of a cache.
func TestCacheCopiesThrottled(t *testing.T) {
	t.Parallel()
	s := newCacheSite(t)
	_, pushA := s.job(t, newBuildsetReg(t), zuul.Vars{Build: "a1", Change: "201", Pipeline: "check", Branch: "master"}, "change A\n")
	if len(pushA.Artifacts) != 2 {
		t.Fatalf("change A's artifacts: %+v", pushA.Artifacts)
	}

	_, proxied := transfertest.Proxy(t, transfertest.Registry{Host: s.ir.Host, Username: s.ir.Username, Password: s.ir.Password, CA: s.ir.CAPEM}, "",
		faultproxy.Config{Throttle: 1, RetryAfter: time.Second, Match: func(r *http.Request) bool {
			return strings.HasPrefix(r.URL.Path, "/v2/imagegate-cache/")
		}})
	host, port := splitHostPort(t, proxied.Host)
	b := newBuildsetReg(t)
	regs := s.registries(b)
	regs.IntermediateRegistry = &zuul.IntermediateRegistry{Host: host, Port: port, Username: s.ir.Username, Password: s.ir.Password,
		Cert: string(proxied.CA)}
	// Change A's artifacts as Zuul gives them, naming the registry as
	// Z's executor reaches it.
	var arts []zuul.Artifact
	for _, a := range pushA.Artifacts {
		a.URL = strings.Replace(a.URL, s.ir.Host, proxied.Host, 1)
		arts = append(arts, a)
	}
	vars := zuul.Vars{Build: "z1", Change: "202", Pipeline: "check", Branch: "master", Artifacts: arts,
		Project: zuul.Project{CanonicalName: "example.org/org/project", SrcDir: s.work}}
	ctx := context.Background()

	pulled, err := intermediate.Pull(ctx, intermediate.PullSpec{Zuul: vars, Registries: regs, Artifacts: arts, DockerImages: cacheImages, Cache: true})
	if err != nil {
		t.Fatalf("the pull failed because the caches answer 429: %v", err)
	}
	if len(pulled.Images) != 1 {
		t.Errorf("pulled %+v: want change A's image", pulled.Images)
	}
	for _, c := range pulled.Caches {
		if c.Copied {
			t.Errorf("cache %s copied through a registry answering 429", c.Source)
		}
	}
	if n := countContaining(pulled.Warnings, "429"); n != 2 {
		t.Errorf("pull warnings %q: want one per cache (2) naming the 429", pulled.Warnings)
	}

	if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte("change Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))
	res, err := build.Build(ctx, build.Request{Images: cacheImages, Zuul: vars, WorkDir: s.work, Home: s.home,
		Registry: b.br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: true})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if len(res.Images[0].CacheFrom) != 0 {
		t.Errorf("the build imported %v, which the pull could not copy", res.Images[0].CacheFrom)
	}

	pushed, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: vars, Registries: regs, DockerImages: cacheImages, Cache: true})
	if err != nil {
		t.Fatalf("the push failed because the cache's repository answers 429: %v", err)
	}
	if len(pushed.Artifacts) != 1 || pushed.Artifacts[0].Metadata["type"] != zuul.ContainerImageType {
		t.Errorf("push artifacts %+v: want the image's only", pushed.Artifacts)
	}
	if countContaining(pushed.Warnings, "429") == 0 {
		t.Errorf("push warnings %q: want the cache's, naming the 429", pushed.Warnings)
	}
}

func countContaining(ws []string, s string) int {
	n := 0
	for _, w := range ws {
		if strings.Contains(w, s) {
			n++
		}
	}
	return n
}
