package build

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/zuul"
)

func TestPlanValidation(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	write := func(rel, content string) {
		p := filepath.Join(work, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok/Dockerfile", "FROM scratch AS base\nCOPY a /a\nFROM base AS final\n")
	write("ok/a", "a")
	write("syntax/Dockerfile", "FROM scratch\nCOPPY a /a\n")
	write("nofrom/Dockerfile", "# nothing\n")
	write("dirty/Dockerfile", "FROM scratch\n")
	os.MkdirAll(filepath.Join(work, "dirty", SiblingsDir), 0o755)
	os.MkdirAll(filepath.Join(home, "src", "example.org", "org", "lib"), 0o755)

	br := &zuul.BuildsetRegistry{Host: "127.0.0.1", Port: 5000, Username: "zuul", Password: "pw"}
	ok := zuul.Image{Context: "ok", Repository: "myorg/app", Tags: []string{"latest"}}
	tests := []struct {
		name string
		mod  func(im *zuul.Image)
		want []string
	}{
		{"valid", func(im *zuul.Image) {}, nil},
		{"missing context", func(im *zuul.Image) { im.Context = "nope" }, []string{"context directory", "nope", "does not exist"}},
		{"missing path", func(im *zuul.Image) { im.Path = "sub" }, []string{"path", "sub", "does not exist"}},
		{"missing dockerfile", func(im *zuul.Image) { im.Dockerfile = "Containerfile" }, []string{"Dockerfile", "Containerfile", "does not exist"}},
		{"syntax error", func(im *zuul.Image) { im.Context = "syntax" }, []string{"line 2", "unknown instruction", "COPPY"}},
		{"empty Dockerfile", func(im *zuul.Image) { im.Context = "nofrom" }, []string{"no instructions"}},
		{"missing target", func(im *zuul.Image) { im.Target = "tests" }, []string{`target stage "tests"`, "base, final"}},
		{"target case", func(im *zuul.Image) { im.Target = "FINAL" }, nil},
		{"invalid platform", func(im *zuul.Image) { im.Arch = []string{"linux/amd64", "linux/sparc99"} }, []string{`arch[1] "linux/sparc99"`, "unknown architecture"}},
		{"platform without arch", func(im *zuul.Image) { im.Arch = []string{"linux"} }, []string{`arch[0] "linux"`}},
		{"windows platform", func(im *zuul.Image) { im.Arch = []string{"windows/amd64"} }, []string{"only linux"}},
		{"duplicate platform", func(im *zuul.Image) { im.Arch = []string{"linux/arm64", "linux/arm64/v8"} }, []string{"listed twice"}},
		{"bare build arg (from the environment)", func(im *zuul.Image) { im.BuildArgs = []string{"A=1", "NOVALUE"} }, nil},
		{"malformed build arg", func(im *zuul.Image) { im.BuildArgs = []string{"A=1", "NO VALUE"} }, []string{`build_args[1] "NO VALUE"`, "KEY=value or KEY"}},
		{"build arg without a key", func(im *zuul.Image) { im.BuildArgs = []string{"=1"} }, []string{`build_args[0] "=1"`}},
		{"bad build arg key", func(im *zuul.Image) { im.BuildArgs = []string{"1X=2"} }, []string{`build_args[0] "1X=2"`}},
		{"malformed label", func(im *zuul.Image) { im.Labels = []string{"nolabel"} }, []string{`labels[0] "nolabel"`}},
		{"upper-case repository", func(im *zuul.Image) { im.Repository = "MyOrg/App" }, []string{`repository "MyOrg/App" is not a valid image name`}},
		{"repository with tag", func(im *zuul.Image) { im.Repository = "myorg/app:1" }, []string{"carries a tag"}},
		{"bad tag", func(im *zuul.Image) { im.Tags = []string{"a:b"} }, []string{`tag "a:b" is not a valid tag`}},
		{"missing sibling", func(im *zuul.Image) { im.Siblings = []string{"example.org/org/none"} }, []string{`siblings[0]`, "required-projects"}},
		{"escaping sibling", func(im *zuul.Image) { im.Siblings = []string{"../etc"} }, []string{`siblings[0] "../etc"`}},
		{"siblings dir exists", func(im *zuul.Image) { im.Context = "dirty"; im.Siblings = []string{"example.org/org/lib"} }, []string{".zuul-siblings already exists"}},
		{"several problems at once", func(im *zuul.Image) { im.BuildArgs = []string{"-X"}; im.Arch = []string{"linux/nope"} }, []string{"build_args[0]", "arch[0]"}},
	}
	b := &builder{addr: "unix:///nonexistent.sock", options: options{log: slog.New(slog.DiscardHandler), lookupEnv: os.LookupEnv}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			im := ok
			tc.mod(&im)
			req := &Request{Zuul: zuul.Vars{Change: "7", Pipeline: "check"}, Home: home, Registry: br}
			p, err := b.planImage(req, work, br.Address(), 0, im)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				want := []string{"127.0.0.1:5000/myorg/app:latest", "127.0.0.1:5000/myorg/app:change_7_latest"}
				if strings.Join(p.push, " ") != strings.Join(want, " ") {
					t.Errorf("push = %v", p.push)
				}
				return
			}
			if err == nil {
				t.Fatal("expected an error")
			}
			if !errors.Is(err, ErrInvalidImage) || !strings.HasPrefix(err.Error(), "docker_images[0] (") {
				t.Errorf("error does not name the image or is not ErrInvalidImage: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPlanNames(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	b := &builder{options: options{log: slog.New(slog.DiscardHandler), lookupEnv: os.LookupEnv}}
	br := &zuul.BuildsetRegistry{Host: "::1", Port: 5001}
	req := &Request{Zuul: zuul.Vars{Pipeline: "periodic", Change: ""}, Home: home, Registry: br, DockerRegistry: "registry.example.org"}
	im := zuul.Image{Context: ".", Repository: "docker.io/myorg/app", Tags: []string{"v1"}, Labels: []string{"a=b"}, BuildArgs: []string{"X=1=2"}}
	p, err := b.planImage(req, home, br.Address(), 0, im)
	if err != nil {
		t.Fatal(err)
	}
	// docker.io/ is not a path in the buildset registry; the staging tag is
	// the pipeline form when there is no change.
	if got := strings.Join(p.push, " "); got != "[::1]:5001/myorg/app:v1 [::1]:5001/myorg/app:periodic_v1" {
		t.Errorf("push = %s", got)
	}
	if got := strings.Join(p.dockerNames, " "); got != "registry.example.org/docker.io/myorg/app:v1 registry.example.org/docker.io/myorg/app:periodic_v1" {
		t.Errorf("docker names = %s", got)
	}
	if p.spec.BuildArgs["X"] != "1=2" || p.spec.Labels["a"] != "b" {
		t.Errorf("spec = %+v", p.spec)
	}
	if _, ok := p.spec.Labels["org.zuul-ci.change"]; ok {
		t.Error("change label without a change")
	}
	req.Zuul = zuul.Vars{}
	if _, err := b.planImage(req, home, br.Address(), 0, im); err == nil || !strings.Contains(err.Error(), "staging tag") {
		t.Errorf("no change and no pipeline: %v", err)
	}
}

// TestBuildArgsFromEnvironment: a bare KEY takes its value from the
// environment, as docker build --build-arg KEY does (an empty value
// included); a KEY that is not set is not passed at all.
func TestBuildArgsFromEnvironment(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	env := map[string]string{"HTTP_PROXY": "http://proxy.example.org:3128", "EMPTY": ""}
	b := &builder{options: options{log: slog.New(slog.DiscardHandler), lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}
	req := &Request{Zuul: zuul.Vars{Change: "1"}, Home: home}
	im := zuul.Image{Context: ".", Repository: "myorg/app", Tags: []string{"latest"},
		BuildArgs: []string{"HTTP_PROXY", "EMPTY", "UNSET", "GIVEN=x", "HTTP_PROXY_TOO=y"}}
	p, err := b.planImage(req, home, "", 0, im)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"HTTP_PROXY": "http://proxy.example.org:3128", "EMPTY": "", "GIVEN": "x", "HTTP_PROXY_TOO": "y"}
	if !maps.Equal(p.spec.BuildArgs, want) {
		t.Errorf("build args %v, want %v", p.spec.BuildArgs, want)
	}
	if _, err := Build(context.Background(), Request{BuildkitAddr: "unix:///nonexistent.sock"}, WithLookupEnv(nil)); err == nil {
		t.Error("Build accepted a nil WithLookupEnv")
	}
}

func TestSpecAttributes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := &Spec{ContextDir: dir, DockerfileDir: dir, Dockerfile: "Dockerfile", Target: "final",
		BuildArgs: map[string]string{"A": "1"}, Labels: map[string]string{"org.zuul-ci.change": "3"},
		Platforms: []string{"linux/amd64", "linux/arm64"}, Push: []string{"r:1/a:x", "r:1/a:y"}, CompressionLevel: 3}
	opt, err := s.solveOpt(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"filename": "Dockerfile", "target": "final", "build-arg:A": "1",
		"label:org.zuul-ci.change": "3", "platform": "linux/amd64,linux/arm64"}
	for k, v := range want {
		if opt.FrontendAttrs[k] != v {
			t.Errorf("attr %s = %q, want %q", k, opt.FrontendAttrs[k], v)
		}
	}
	if opt.Frontend != "dockerfile.v0" || len(opt.Exports) != 1 || opt.Exports[0].Type != "image" ||
		opt.Exports[0].Attrs["name"] != "r:1/a:x,r:1/a:y" || opt.Exports[0].Attrs["push"] != "true" ||
		opt.Exports[0].Attrs["compression-level"] != "3" {
		t.Errorf("exports = %+v", opt.Exports)
	}
	if _, ok := opt.LocalMounts["context"]; !ok {
		t.Error("no context mount")
	}
	s.DockerfileDir = filepath.Join(dir, "missing")
	if _, err := s.solveOpt(nil); err == nil {
		t.Error("missing Dockerfile directory accepted")
	}
}
