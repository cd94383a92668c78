package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "docker_image_build") }

func TestDocs(t *testing.T) {
	ansibletest.CheckDocs(t, "docker_image_build.yml", params{})
	ansibletest.CheckReturn(t, "docker_image_build.yml", run)
}

const password = "s3cret-Pa55word-0f-the-registry"

func zuulVars(srcDir string) map[string]any {
	return map[string]any{"change": 42, "pipeline": "gate", "change_url": "https://review.example.org/42",
		"project": map[string]any{"src_dir": srcDir}}
}

// TestBadInput runs the module on each kind of bad input: it fails, names
// the image and what to fix, and never prints the password.
func TestBadInput(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("docker_image_build")
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	for rel, content := range map[string]string{
		"ok/Dockerfile":     "FROM scratch AS base\nCOPY Dockerfile /\n",
		"syntax/Dockerfile": "FROM scratch\nRUNN true\n",
	} {
		os.MkdirAll(filepath.Join(work, filepath.Dir(rel)), 0o755)
		os.WriteFile(filepath.Join(work, rel), []byte(content), 0o644)
	}
	cert := string(testenv.NewTLS(t, home).CA.CertPEM)
	br := map[string]any{"host": "127.0.0.1", "port": 1, "password": password, "cert": cert}
	image := func(kv ...any) map[string]any {
		m := map[string]any{"context": "ok", "repository": "myorg/app"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name  string
		image map[string]any
		addr  string
		want  []string
	}{
		{"missing context", image("context", "nowhere"), "", []string{"docker_images[0] (myorg/app)", "context directory", "nowhere", "does not exist"}},
		{"syntax error", image("context", "syntax"), "", []string{"docker_images[0] (myorg/app)", "line 2", "RUNN"}},
		{"missing target", image("target", "prod"), "", []string{"docker_images[0] (myorg/app)", `target stage "prod"`, "base"}},
		{"invalid platform", image("arch", []any{"linux/amd64", "linux/vax"}), "", []string{"docker_images[0] (myorg/app)", `arch[1] "linux/vax"`}},
		{"malformed build arg", image("build_args", []any{"VER SION"}), "", []string{"docker_images[0] (myorg/app)", `build_args[0] "VER SION"`, "KEY=value or KEY"}},
		{"invalid repository", image("repository", "My Org/App"), "", []string{"docker_images[0] (My Org/App)", "not a valid image name"}},
		{"unreachable buildkitd", image(), "unix://" + filepath.Join(home, "none.sock"), []string{"buildkit_addr unix://", "not reachable", "ensure-buildkit"}},
		{"unsupported key", image("tag", "x"), "", []string{"Unsupported parameters in docker_images[0]: tag"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := tc.addr
			if addr == "" {
				addr = "unix://" + filepath.Join(home, "never-reached.sock")
			}
			o := ansibletest.RunBinary(t, bin, map[string]any{
				"docker_images": []any{tc.image}, "zuul": zuulVars("src/example.org/org/app"),
				"buildset_registry": br, "buildkit_addr": addr, "docker_host": "none", "connect_timeout": 1,
				"log_file": filepath.Join(home, "build.log"), "_ansible_remote_tmp": home,
			}, "HOME="+home)
			o.CheckFailure(t, tc.want...)
			o.CheckNoSecrets(t, password)
		})
	}
}

// TestResultDataFile: a buildset registry the job's result data file
// should hold but cannot give (the file is corrupt, or its entry is not
// connection data) fails the build, naming the file, before anything is
// built; a file without the entry means no buildset registry, and the
// build is for the local Docker daemon only.
func TestResultDataFile(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("docker_image_build")
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	os.MkdirAll(work, 0o755)
	os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /\n"), 0o644)
	entry := func(br map[string]any) string {
		b, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": br}})
		return string(b)
	}
	tests := []struct {
		name, content string
		want          []string
	}{
		{"corrupt file", `{"secret_data": {"buildset_registry": {"host"`, []string{"results.json"}},
		{"entry without cert", entry(map[string]any{"host": "127.0.0.1", "port": 5000, "password": password}),
			[]string{"secret_data.buildset_registry in", "results.json", "buildset_registry.cert"}},
		{"entry not a mapping", entry(map[string]any{"host": []any{"a"}, "password": password}), []string{"secret_data.buildset_registry in", "results.json"}},
		// No registry known: nothing to push to, and docker_host none
		// leaves nothing to load into either.
		{"no entry", `{"data": {}, "secret_data": {}}`, []string{"nothing to deliver images to"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join(t.TempDir(), "results.json")
			os.WriteFile(f, []byte(tc.content), 0o600)
			zv := zuulVars("src/example.org/org/app")
			zv["executor"] = map[string]any{"result_data_file": f}
			o := ansibletest.RunBinary(t, bin, map[string]any{
				"docker_images": []any{map[string]any{"context": ".", "repository": "myorg/app"}}, "zuul": zv,
				"buildkit_addr": "unix://" + filepath.Join(home, "never-reached.sock"), "docker_host": "none",
				"oci_layout_dir": "", "_ansible_check_mode": true,
			}, "HOME="+home)
			o.CheckFailure(t, tc.want...)
			o.CheckNoSecrets(t, password)
			if tc.name == "no entry" && strings.Contains(o.Msg(), "results.json") {
				t.Errorf("a result data file without a buildset registry is not an error of the file: %s", o.Msg())
			}
		})
	}
}

// TestBuildThroughModule runs the module binary against real daemons:
// check mode pushes nothing, a build pushes every reference, the unchanged
// rebuild is not changed, the registry is read from the result data file
// when not given, and the build log reaches stderr at -vv.
func TestBuildThroughModule(t *testing.T) {
	t.Parallel()
	bin := lib.Bin("docker_image_build")
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	cfg := fmt.Sprintf("[registry.%q]\n  mirrors = [%q]\n[registry.%q]\n  http = false\n  ca = [%q]\n",
		"docker.io", reg.Host, reg.Host, reg.TLS.CAFile)
	bk := testenv.StartBuildkitd(t, cfg)
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "app")
	os.MkdirAll(work, 0o755)
	os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /\n"), 0o644)
	// The registry as the buildset_registry role returns it through
	// zuul_return: only in the executor's result data file.
	resultFile := filepath.Join(home, "results.json")
	rd, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": map[string]any{
		"host": "127.0.0.1", "port": reg.Port, "username": reg.Username, "password": reg.Password, "cert": string(reg.TLS.CA.CertPEM)}}})
	os.WriteFile(resultFile, rd, 0o600)
	zv := zuulVars("src/example.org/org/app")
	zv["executor"] = map[string]any{"result_data_file": resultFile}
	args := map[string]any{
		"docker_images": []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "1.0"}}},
		"zuul":          zv, "buildkit_addr": bk.Addr, "docker_host": "none",
	}
	tr := &http.Transport{TLSClientConfig: reg.TLS.Client().Transport.(*http.Transport).TLSClientConfig}
	head := func(tag string) (string, error) {
		ref, _ := name.ParseReference(reg.Host + "/myorg/app:" + tag)
		d, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
			remote.WithTransport(tr), remote.WithContext(context.Background()))
		if err != nil {
			return "", err
		}
		return d.Digest.String(), nil
	}
	check := map[string]any{"_ansible_check_mode": true}
	for k, v := range args {
		check[k] = v
	}
	o := ansibletest.RunBinary(t, bin, check, "HOME="+home)
	o.CheckNoSecrets(t, reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("check mode: %s", o.Stdout)
	}
	if _, err := head("latest"); err == nil {
		t.Error("check mode pushed")
	}
	if _, err := os.Stat(filepath.Join(home, "zuul-output")); !os.IsNotExist(err) {
		t.Error("check mode wrote the log file")
	}

	args["_ansible_verbosity"] = 2
	o = ansibletest.RunBinary(t, bin, args, "HOME="+home)
	o.CheckNoSecrets(t, reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("build: %s\n%s", o.Stdout, o.Stderr)
	}
	var res struct {
		Images []struct {
			Digest     string   `json:"digest"`
			References []string `json:"references"`
			CacheHits  int      `json:"cache_hits"`
		} `json:"images"`
		LogFile string `json:"log_file"`
	}
	json.Unmarshal(o.Stdout, &res)
	if len(res.Images) != 1 || len(res.Images[0].References) != 4 {
		t.Fatalf("result: %s", o.Stdout)
	}
	for _, tag := range []string{"latest", "1.0", "change_42_latest", "change_42_1.0"} {
		if d, err := head(tag); err != nil || d != res.Images[0].Digest {
			t.Errorf("%s: %s %v, reported %s", tag, d, err, res.Images[0].Digest)
		}
	}
	if !strings.Contains(string(o.Stderr), "COPY Dockerfile /") {
		t.Errorf("no build log on stderr at -vv: %s", o.Stderr)
	}
	if res.LogFile != filepath.Join(home, "zuul-output", "logs", "docker_image_build.log") {
		t.Errorf("log_file = %s", res.LogFile)
	}
	if b, err := os.ReadFile(res.LogFile); err != nil || !strings.Contains(string(b), "COPY Dockerfile /") {
		t.Errorf("log file: %v", err)
	} else if strings.Contains(string(b), reg.Password) {
		t.Error("the log file holds the registry password")
	}
	// No credentials on disk: no docker config was written.
	if _, err := os.Stat(filepath.Join(home, ".docker")); !os.IsNotExist(err) {
		t.Errorf("~/.docker exists: %v", err)
	}

	// Provenance is on by default: the tag is an index of the image and
	// its attestation manifest.
	ref, _ := name.ParseReference(reg.Host + "/myorg/app:latest")
	ropts := []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(tr), remote.WithContext(context.Background())}
	platformImage := func() string {
		t.Helper()
		idx, err := remote.Index(ref, ropts...)
		if err != nil {
			t.Fatalf("the pushed image is not an index: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil || len(im.Manifests) != 2 || im.Manifests[1].Annotations["vnd.docker.reference.type"] != "attestation-manifest" ||
			im.Manifests[1].Annotations["vnd.docker.reference.digest"] != im.Manifests[0].Digest.String() {
			t.Fatalf("want an image and its attestation manifest, got %+v (%v)", im, err)
		}
		return im.Manifests[0].Digest.String()
	}
	img := platformImage()

	// A rebuild is a new build with a new provenance (its time and
	// invocation ID): changed, the image itself the same.
	delete(args, "_ansible_verbosity")
	o = ansibletest.RunBinary(t, bin, args, "HOME="+home)
	o.CheckNoSecrets(t, reg.Password)
	if o.Failed() || !o.Changed() {
		t.Fatalf("rebuild with provenance: %s", o.Stdout)
	}
	if got := platformImage(); got != img {
		t.Errorf("the rebuilt image is %s, was %s", got, img)
	}
	if strings.Contains(string(o.Stderr), "COPY Dockerfile /") {
		t.Error("build log on stderr without -vv")
	}

	// Without provenance the build is reproducible: the second run
	// changes nothing.
	args["docker_images"] = []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "1.0"}, "provenance": false}}
	for i, want := range []bool{true, false} {
		o = ansibletest.RunBinary(t, bin, args, "HOME="+home)
		if o.Failed() || o.Changed() != want {
			t.Fatalf("run %d without provenance: changed %v, want %v: %s", i, o.Changed(), want, o.Stdout)
		}
	}
	if _, err := remote.Image(ref, ropts...); err != nil {
		t.Errorf("without provenance the tag is not a plain image: %v", err)
	}
}
