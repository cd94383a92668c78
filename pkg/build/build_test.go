package build

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func TestBuildPushAndRebuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.write(t, "app/Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n")
	e.write(t, "app/hello.txt", "hello\n")
	logFile := filepath.Join(t.TempDir(), "logs", "build.log")
	req := e.request(zuul.Image{Context: "app", Repository: "myorg/app", Tags: []string{"latest", "v1"}})
	req.LogFile = logFile
	rep, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	im := rep.Images[0]
	if !rep.Changed || !im.Changed || len(im.References) != 4 || im.Platforms[0] != "linux/amd64" || im.Steps == 0 {
		t.Errorf("first build: %+v", rep)
	}
	for _, tag := range []string{"latest", "v1", "change_42_latest", "change_42_v1"} {
		if d := e.digest(t, "myorg/app:"+tag); d != im.Digest {
			t.Errorf("%s: registry holds %s, reported %s", tag, d, im.Digest)
		}
	}
	img := e.image(t, "myorg/app:latest")
	cf, _ := img.ConfigFile()
	if cf.Config.Labels["org.zuul-ci.change"] != "42" || cf.Config.Labels["org.zuul-ci.change_url"] != "https://review.example.org/42" {
		t.Errorf("labels = %v", cf.Config.Labels)
	}
	log, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(log), "COPY hello.txt /hello.txt") {
		t.Errorf("build log %v:\n%s", err, log)
	}

	rep2, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Images[0].Digest != im.Digest || rep2.Changed || rep2.Images[0].CacheHits == 0 {
		t.Errorf("rebuild of unchanged input: %+v", rep2.Images[0])
	}

	e.write(t, "app/hello.txt", "hello again\n")
	rep3, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if rep3.Images[0].Digest == im.Digest || !rep3.Changed {
		t.Errorf("rebuild of changed input: %+v", rep3.Images[0])
	}
}

// TestSpeculativeBase builds FROM myorg/base and FROM quay.io/myorg/base
// with the buildset registry holding both: the results sit on those exact
// layers, as buildkitd resolves Docker Hub and quay.io through the mirror.
func TestSpeculativeBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hub := testenv.BusyboxImage(t, testenv.FileLayer("etc/origin", []byte("hub\n")))
	quay := testenv.BusyboxImage(t, testenv.FileLayer("etc/origin", []byte("quay\n")))
	e.pushBase(t, "myorg/base:latest", hub)
	e.pushBase(t, "quay.io/myorg/base:latest", quay)
	e.write(t, "hub/Dockerfile", "FROM myorg/base\nRUN cp /etc/origin /built-on\n")
	e.write(t, "quay/Dockerfile", "FROM quay.io/myorg/base\nRUN cp /etc/origin /built-on\n")
	rep, err := Build(context.Background(), *e.request(
		zuul.Image{Context: "hub", Repository: "myorg/hubapp", Tags: []string{"latest"}},
		zuul.Image{Context: "quay", Repository: "quay.io/myorg/quayapp", Tags: []string{"latest"}}))
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		repo string
		base v1.Image
	}{{"myorg/hubapp:latest", hub}, {"quay.io/myorg/quayapp:latest", quay}} {
		app := e.image(t, tc.repo)
		if d, _ := app.Digest(); d.String() != rep.Images[i].Digest {
			t.Errorf("%s: registry %s, reported %s", tc.repo, d, rep.Images[i].Digest)
		}
		baseLayers, _ := tc.base.Layers()
		appLayers, _ := app.Layers()
		if len(appLayers) != len(baseLayers)+1 {
			t.Fatalf("%s: %d layers on a %d-layer base", tc.repo, len(appLayers), len(baseLayers))
		}
		for j, bl := range baseLayers {
			bd, _ := bl.Digest()
			if ad, _ := appLayers[j].Digest(); ad != bd {
				t.Errorf("%s layer %d: %s, base has %s", tc.repo, j, ad, bd)
			}
		}
	}
}

func TestMultiPlatformIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.write(t, "multi/Dockerfile", "FROM scratch\nARG TARGETARCH\nCOPY hello-${TARGETARCH}.txt /hello.txt\n")
	e.write(t, "multi/hello-amd64.txt", "amd64\n")
	e.write(t, "multi/hello-arm64.txt", "arm64\n")
	rep, err := Build(context.Background(), *e.request(zuul.Image{Context: "multi", Repository: "myorg/multi",
		Tags: []string{"latest"}, Arch: []string{"linux/amd64", "linux/arm64"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rep.Images[0].Platforms, ","); got != "linux/amd64,linux/arm64" {
		t.Errorf("platforms = %s", got)
	}
	ref, _ := name.ParseReference(e.reg.Host + "/myorg/multi:change_42_latest")
	idx, err := remote.Index(ref, e.remoteOp...)
	if err != nil {
		t.Fatalf("not an index: %v", err)
	}
	if d, _ := idx.Digest(); d.String() != rep.Images[0].Digest {
		t.Errorf("index %s, reported %s", d, rep.Images[0].Digest)
	}
	im, _ := idx.IndexManifest()
	var plats []string
	for _, m := range im.Manifests {
		if m.Platform != nil {
			plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
		}
	}
	if strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("index platforms = %v", plats)
	}
}

func TestSiblings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pushBase(t, "myorg/base:latest", testenv.BusyboxImage(t))
	lib := filepath.Join(e.home, "src", "example.org", "org", "lib")
	os.MkdirAll(filepath.Join(lib, "pkg"), 0o755)
	os.WriteFile(filepath.Join(lib, "pkg", "lib.txt"), []byte("library\n"), 0o644)
	e.write(t, "ok/Dockerfile", "FROM myorg/base\nARG ZUUL_SIBLINGS\nCOPY .zuul-siblings/ /siblings/\n"+
		"RUN test \"$ZUUL_SIBLINGS\" = example.org/org/lib && cat /siblings/example.org/org/lib/pkg/lib.txt > /lib.txt\n")
	e.write(t, "bad/Dockerfile", "FROM myorg/base\nCOPY .zuul-siblings/ /siblings/\nRUN false\n")
	rep, err := Build(context.Background(), *e.request(zuul.Image{Context: "ok", Repository: "myorg/sib",
		Tags: []string{"latest"}, Siblings: []string{"example.org/org/lib"}}))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images[0].Digest == "" {
		t.Error("no digest")
	}
	if _, err := os.Stat(filepath.Join(e.workDir, "ok", SiblingsDir)); !os.IsNotExist(err) {
		t.Errorf("siblings left after a build: %v", err)
	}
	_, err = Build(context.Background(), *e.request(zuul.Image{Context: "bad", Repository: "myorg/sibbad",
		Tags: []string{"latest"}, Siblings: []string{"example.org/org/lib"}}))
	if err == nil {
		t.Fatal("RUN false succeeded")
	}
	if _, err := os.Stat(filepath.Join(e.workDir, "bad", SiblingsDir)); !os.IsNotExist(err) {
		t.Errorf("siblings left after a failed build: %v", err)
	}
}

func TestFailingStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pushBase(t, "myorg/base:latest", testenv.BusyboxImage(t))
	e.write(t, "ok/Dockerfile", "FROM scratch\nCOPY Dockerfile /\n")
	e.write(t, "fail/Dockerfile", "FROM myorg/base AS build\nRUN echo first\n"+
		"RUN for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo output line $i; done; exit 3\n")
	rep, err := Build(context.Background(), *e.request(
		zuul.Image{Context: "ok", Repository: "myorg/first", Tags: []string{"latest"}},
		zuul.Image{Context: "fail", Repository: "myorg/failing", Tags: []string{"latest"}}))
	var ie *ImageError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an ImageError", err)
	}
	msg := err.Error()
	for _, want := range []string{"docker_images[1] (myorg/failing)", "nothing was pushed", "exit code: 3",
		"failing step: [3/3] RUN for i in", "output line 25"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "output line 5\n") || len(ie.Output) != tailLines {
		t.Errorf("output should be the last %d lines, got %d:\n%s", tailLines, len(ie.Output), msg)
	}
	if rep == nil || len(rep.Images) != 1 || rep.Images[0].Repository != "myorg/first" {
		t.Errorf("the image built before the failure is not reported: %+v", rep)
	}
	e.absent(t, "myorg/failing:latest")
	e.absent(t, "myorg/failing:change_42_latest")
}

// TestValidateBeforeBuilding: one bad image stops every build.
func TestValidateBeforeBuilding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.write(t, "ok/Dockerfile", "FROM scratch\nCOPY Dockerfile /\n")
	e.write(t, "bad/Dockerfile", "FROM scratch\nCOPY Dockerfile /\n")
	_, err := Build(context.Background(), *e.request(
		zuul.Image{Context: "ok", Repository: "myorg/ok", Tags: []string{"latest"}},
		zuul.Image{Context: "bad", Repository: "myorg/bad", Tags: []string{"latest"}, Target: "nope"}))
	if err == nil || !strings.Contains(err.Error(), `docker_images[1] (myorg/bad)`) || !strings.Contains(err.Error(), "nothing was built") {
		t.Fatalf("err = %v", err)
	}
	e.absent(t, "myorg/ok:latest")

	// Check mode plans and pushes nothing.
	req := e.request(zuul.Image{Context: "ok", Repository: "myorg/ok", Tags: []string{"latest"}})
	rep, err := Build(context.Background(), *req, WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Changed || len(rep.Images[0].References) != 2 || rep.Images[0].Digest != "" {
		t.Errorf("check mode: %+v", rep)
	}
	e.absent(t, "myorg/ok:latest")
}

func TestUnreachableBuildkitd(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	addr := "unix://" + filepath.Join(home, "no-buildkitd.sock")
	_, err := Build(context.Background(), Request{BuildkitAddr: addr, Home: home, WorkDir: home, Zuul: zuul.Vars{Change: "1"},
		Images:   []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}},
		Registry: &zuul.BuildsetRegistry{Host: "127.0.0.1", Port: 1, Username: "zuul", Password: "pw", Cert: string(testenv.NewTLS(t, home).CA.CertPEM)}, DockerHost: "none"}, WithTimeouts(Timeouts{Image: time.Hour, Connect: 500 * time.Millisecond}))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "ensure-buildkit") {
		t.Errorf("err = %v", err)
	}
}

// TestDockerLoad loads the built image into a real dockerd under its tag
// and staging tag; docker runs it; an unchanged rebuild loads nothing.
func TestDockerLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := testenv.StartDockerd(t, testenv.DockerdOptions{})
	e.pushBase(t, "myorg/base:latest", testenv.BusyboxImage(t))
	e.write(t, "app/Dockerfile", "FROM myorg/base\nRUN echo from the build > /msg\nCMD [\"cat\", \"/msg\"]\n")
	req := e.request(zuul.Image{Context: "app", Repository: "myorg/app", Tags: []string{"latest"}})
	req.DockerHost = d.Host
	req.DockerRegistry = "registry.example.org"
	rep, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"registry.example.org/myorg/app:latest", "registry.example.org/myorg/app:change_42_latest"}
	if strings.Join(rep.Images[0].DockerNames, " ") != strings.Join(want, " ") {
		t.Errorf("docker names = %v", rep.Images[0].DockerNames)
	}
	for _, n := range want {
		if out := d.Docker("run", "--rm", "--network", "none", n); out != "from the build\n" {
			t.Errorf("docker run %s printed %q", n, out)
		}
	}
	rep2, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Changed {
		t.Errorf("unchanged rebuild reported changed: %+v", rep2.Images[0])
	}
	// An image removed from dockerd is loaded again: changed.
	d.Docker("rmi", want[1])
	rep3, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if !rep3.Changed || d.Docker("run", "--rm", "--network", "none", want[1]) != "from the build\n" {
		t.Errorf("reload: %+v", rep3.Images[0])
	}
}

// TestDockerOnlyMultiPlatform: without a buildset registry, a
// multi-platform build is loaded into dockerd for the node's platform.
func TestDockerOnlyMultiPlatform(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := testenv.StartDockerd(t, testenv.DockerdOptions{})
	e.write(t, "multi/Dockerfile", "FROM scratch\nARG TARGETARCH\nCOPY hello-${TARGETARCH}.txt /hello.txt\n")
	e.write(t, "multi/hello-amd64.txt", "amd64\n")
	e.write(t, "multi/hello-arm64.txt", "arm64\n")
	req := e.request(zuul.Image{Context: "multi", Repository: "myorg/multi", Tags: []string{"latest"}, Arch: []string{"linux/arm64", Native()}})
	req.Registry, req.DockerHost = nil, d.Host
	rep, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images[0].References) != 0 || len(rep.Images[0].DockerNames) != 2 {
		t.Errorf("result = %+v", rep.Images[0])
	}
	if arch := strings.TrimSpace(d.Docker("image", "inspect", "-f", "{{.Architecture}}", "myorg/multi:change_42_latest")); "linux/"+arch != Native() {
		t.Errorf("loaded architecture %s", arch)
	}
}

// TestImagegateRegistry uses imagegate's own registry (bearer token auth)
// as buildset registry: the speculative quay.io base resolves through the
// mirror, every tag is pushed with the session's credentials, and the
// unchanged rebuild keeps the digest.
func TestImagegateRegistry(t *testing.T) {
	t.Parallel()
	e := newImagegateEnv(t)
	base := testenv.BusyboxImage(t, testenv.FileLayer("etc/origin", []byte("speculative quay\n")))
	e.pushBase(t, "quay.io/myorg/base:latest", base)
	e.write(t, "app/Dockerfile", "FROM quay.io/myorg/base\nRUN cat /etc/origin > /built-on\n")
	req := e.request(zuul.Image{Context: "app", Repository: "quay.io/myorg/app", Tags: []string{"latest", "2"}})
	rep, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"latest", "2", "change_42_latest", "change_42_2"} {
		if d := e.digest(t, "quay.io/myorg/app:"+tag); d != rep.Images[0].Digest {
			t.Errorf("%s: %s, reported %s", tag, d, rep.Images[0].Digest)
		}
	}
	baseLayers, _ := base.Layers()
	appLayers, _ := e.image(t, "quay.io/myorg/app:latest").Layers()
	for j, bl := range baseLayers {
		bd, _ := bl.Digest()
		if ad, _ := appLayers[j].Digest(); ad != bd {
			t.Errorf("layer %d: %s, speculative base has %s", j, ad, bd)
		}
	}
	rep2, err := Build(context.Background(), *req)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Changed || rep2.Images[0].Digest != rep.Images[0].Digest {
		t.Errorf("unchanged rebuild: %+v", rep2.Images[0])
	}
}
