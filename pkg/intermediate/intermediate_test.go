package intermediate_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func buildset(r transfertest.Registry) *zuul.BuildsetRegistry {
	host, port, _ := strings.Cut(r.Host, ":")
	p, _ := strconv.Atoi(port)
	return &zuul.BuildsetRegistry{Host: host, Port: p, Username: r.Username, Password: r.Password, Cert: string(r.CA)}
}

// registries are the two registries, worked as the modules' defaults do.
func registries(br *zuul.BuildsetRegistry, ir *zuul.IntermediateRegistry) intermediate.Registries {
	return intermediate.Registries{BuildsetRegistry: br, IntermediateRegistry: ir, Jobs: 16, LayerJobs: 8, Retries: 4}
}

// irAt is the intermediate registry r under the host name host (an IPv6
// literal without brackets, say).
func irAt(r transfertest.Registry, host string) *zuul.IntermediateRegistry {
	_, port, _ := strings.Cut(r.Host, ":")
	p, _ := strconv.Atoi(port)
	return &zuul.IntermediateRegistry{Host: host, Port: p, Username: r.Username, Password: r.Password, Cert: string(r.CA)}
}

// TestRoundTrip pushes a build's images from a buildset registry to the
// intermediate registry, then pulls the artifacts into a second buildset
// registry, both ways round: imagegate's registry as buildset registry
// and Debian's docker-registry as intermediate registry, and the reverse.
// The intermediate registry is addressed as ::1, so the artifact URLs
// carry a bracketed IPv6 address.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		br, ir func(testing.TB) transfertest.Registry
	}{
		{"imagegate buildset, distribution intermediate", transfertest.Ours, transfertest.Distribution},
		{"distribution buildset, imagegate intermediate", transfertest.Distribution, transfertest.Ours},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			br1, br2, irReg := tc.br(t), tc.br(t), tc.ir(t)
			ir := irAt(irReg, "127.0.0.1")
			if tc.name[0] == 'i' { // docker-registry listens on ::1 too
				ir = irAt(irReg, "::1")
			}
			base := transfertest.Layer(1, 200_000)
			app := transfertest.Image(t, false, base, transfertest.Layer(2, 10_000))
			tool := transfertest.Index(t, true, transfertest.Image(t, true, base, transfertest.Layer(3, 10_000)))
			hub := transfertest.Image(t, true, base, transfertest.Layer(4, 10_000))
			want := map[string]string{
				"myorg/app:latest":       transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", app),
				"myorg/app:v1":           transfertest.Push(t, br1, br1.Host+"/myorg/app:v1", app),
				"quay.io/myorg/tool:1.0": transfertest.Push(t, br1, br1.Host+"/quay.io/myorg/tool:1.0", tool),
				"myorg/hub:latest":       transfertest.Push(t, br1, br1.Host+"/myorg/hub:latest", hub),
			}
			images := []zuul.Image{
				{Context: ".", Repository: "myorg/app", Tags: []string{"latest", "v1"}},
				{Context: ".", Repository: "quay.io/myorg/tool", Tags: []string{"1.0"}},
				{Context: ".", Repository: "docker.io/myorg/hub", Tags: []string{"latest"}},
			}
			vars := &zuul.Vars{Build: "0123456789abcdef"}
			cfg := registries(buildset(br1), ir)
			pushed, err := intermediate.Push(context.Background(), intermediate.PushSpec{Zuul: *vars, Registries: cfg, DockerImages: images})
			if err != nil {
				t.Fatal(err)
			}
			irHost := ir.Address()
			wantArts := []zuul.Artifact{
				zuul.NewContainerImageArtifact(ir.Host, ir.Port, "myorg/app", "latest", "0123456789abcdef_latest"),
				zuul.NewContainerImageArtifact(ir.Host, ir.Port, "myorg/app", "v1", "0123456789abcdef_v1"),
				zuul.NewContainerImageArtifact(ir.Host, ir.Port, "quay.io/myorg/tool", "1.0", "0123456789abcdef_1.0"),
				zuul.NewContainerImageArtifact(ir.Host, ir.Port, "docker.io/myorg/hub", "latest", "0123456789abcdef_latest"),
			}
			if a, b := jsonOf(pushed.Artifacts), jsonOf(wantArts); a != b {
				t.Errorf("artifacts\n%s\nwant\n%s", a, b)
			}
			if ir.Host == "::1" && !strings.HasPrefix(pushed.Artifacts[0].URL, "docker://[::1]:") {
				t.Errorf("artifact URL %s: IPv6 host not bracketed", pushed.Artifacts[0].URL)
			}
			if !pushed.Changed {
				t.Error("first push not changed")
			}
			for _, im := range pushed.Images {
				if _, d := transfertest.Manifest(t, irReg, strings.Replace(im.Target, irHost, irReg.Host, 1)); d != want[strings.TrimPrefix(im.Name, "docker.io/")] || im.Digest != d {
					t.Errorf("%s: intermediate registry has %s, result says %s, want %s", im.Target, d, im.Digest, want[im.Name])
				}
			}
			// The second push finds everything in place.
			again, err := intermediate.Push(context.Background(), intermediate.PushSpec{Zuul: *vars, Registries: cfg, DockerImages: images})
			if err != nil || again.Changed || len(again.Artifacts) != 4 {
				t.Errorf("second push: changed %v, %d artifacts, %v", again.Changed, len(again.Artifacts), err)
			}

			// A later change's job pulls them into its own buildset registry.
			arts := append([]zuul.Artifact{{Name: "docs", URL: "https://logs.example.org/docs"},
				{Name: "manifest", URL: "https://x", Metadata: map[string]any{"type": "zuul_manifest"}}}, pushed.Artifacts...)
			pcfg := registries(buildset(br2), ir)
			pulled, err := intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: pcfg, Artifacts: arts})
			if err != nil {
				t.Fatal(err)
			}
			if len(pulled.Images) != 4 || len(pulled.Ignored) != 2 || !pulled.Changed {
				t.Fatalf("pulled %+v", pulled)
			}
			for name, d := range want {
				if _, got := transfertest.Manifest(t, br2, br2.Host+"/"+name); got != d {
					t.Errorf("buildset registry: %s is %s, want %s", name, got, d)
				}
			}
			pulled, err = intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: pcfg, Artifacts: arts})
			if err != nil || pulled.Changed {
				t.Errorf("second pull: changed %v, %v", pulled.Changed, err)
			}
		})
	}
}

func jsonOf(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

func TestPullChecksAndSupersedes(t *testing.T) {
	t.Parallel()
	br, irReg := transfertest.Ours(t), transfertest.Distribution(t)
	ir := irAt(irReg, "127.0.0.1")
	older := transfertest.Push(t, irReg, irReg.Host+"/myorg/app:aaa_latest", transfertest.Image(t, false, transfertest.Layer(10, 1000)))
	newer := transfertest.Push(t, irReg, irReg.Host+"/myorg/app:bbb_latest", transfertest.Image(t, false, transfertest.Layer(11, 1000)))
	art := func(name, build string) zuul.Artifact {
		return zuul.NewContainerImageArtifact(ir.Host, ir.Port, "myorg/app", "latest", build+"_latest")
	}
	a1, a2 := art("a", "aaa"), art("b", "bbb")
	a1.Name, a2.Name = "app from change 1", "app from change 2"
	cfg := registries(buildset(br), ir)

	// Check mode: the later artifact would be copied; nothing is.
	r, err := intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: cfg, Artifacts: []zuul.Artifact{a1, a2}}, intermediate.WithCheckMode(true))
	if err != nil || !r.Changed || len(r.Images) != 1 || r.Images[0].Digest != newer || len(r.Ignored) != 1 ||
		!strings.Contains(r.Ignored[0].Reason, `superseded by artifact "app from change 2"`) {
		t.Fatalf("check mode: %+v %v", r, err)
	}
	r, err = intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: cfg, Artifacts: []zuul.Artifact{a1, a2}})
	if err != nil || !r.Changed || r.Images[0].Name != "app from change 2" {
		t.Fatalf("pull: %+v %v", r, err)
	}
	if _, d := transfertest.Manifest(t, br, br.Host+"/myorg/app:latest"); d != newer || d == older {
		t.Errorf("buildset registry has %s, want the later artifact's %s", d, newer)
	}

	bad := []struct {
		name string
		arts []zuul.Artifact
		msg  string
	}{
		{"malformed url", []zuul.Artifact{a1, {Name: "broken", URL: "http://x/y:z", Metadata: map[string]any{"type": "container_image", "repository": "r", "tag": "t"}}},
			`artifact "broken": url "http://x/y:z" is not of the form docker://`},
		{"no host", []zuul.Artifact{{Name: "hostless", URL: "docker://myorg/app:t", Metadata: map[string]any{"type": "container_image", "repository": "r", "tag": "t"}}},
			`artifact "hostless": url "docker://myorg/app:t"`},
		{"bad repository", []zuul.Artifact{{Name: "upper", URL: "docker://" + ir.Address() + "/a:b", Metadata: map[string]any{"type": "container_image", "repository": "Bad/Name", "tag": "t"}}},
			`artifact "upper": metadata.repository "Bad/Name"`},
		{"missing metadata", []zuul.Artifact{{Name: "half", URL: "docker://" + ir.Address() + "/a:b", Metadata: map[string]any{"type": "container_image"}}},
			`artifact "half": metadata.repository and metadata.tag are required`},
		{"missing tag", []zuul.Artifact{art("x", "ccc")}, `reading source manifest ` + ir.Address() + `/myorg/app:ccc_latest`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			br := transfertest.Ours(t)
			_, err := intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: registries(buildset(br), ir), Artifacts: tc.arts})
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %q", err, tc.msg)
			}
			// Nothing half-published: a bad artifact stops the good one too.
			if tc.name == "malformed url" {
				r, err := intermediate.Pull(context.Background(), intermediate.PullSpec{Registries: registries(buildset(br), ir), Artifacts: []zuul.Artifact{a1}},
					intermediate.WithCheckMode(true))
				if err != nil || !r.Changed {
					t.Errorf("the good artifact was copied although another one was malformed (%+v, %v)", r, err)
				}
			}
		})
	}
}

func TestPushChecks(t *testing.T) {
	t.Parallel()
	br, irReg := transfertest.Ours(t), transfertest.Distribution(t)
	transfertest.Push(t, br, br.Host+"/myorg/app:latest", transfertest.Image(t, false, transfertest.Layer(20, 1000)))
	ir := irAt(irReg, "127.0.0.1")
	wrongIR := *ir
	wrongIR.Password = "wrong"
	deadIR := *ir
	deadIR.Port = 1
	tests := []struct {
		name   string
		ir     *zuul.IntermediateRegistry
		vars   zuul.Vars
		images []zuul.Image
		msg    string
	}{
		{"missing tag", ir, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest", "nope"}}},
			"docker_images[0] (myorg/app), tag nope: reading source manifest"},
		{"wrong credentials", &wrongIR, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
			"check the username and password"},
		{"unreachable", &deadIR, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
			"connection refused"},
		{"no build", ir, zuul.Vars{}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}}, "zuul.build is empty"},
		{"empty tags", ir, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{}}}, "docker_images[0] (myorg/app): tags is empty"},
		{"duplicate", ir, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}, {Repository: "myorg/app", Tags: []string{"latest"}}},
			"docker_images[1] (myorg/app), tag latest: docker_images[0] (myorg/app) lists the same repository and tag"},
		{"bad repository", ir, zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "My/App", Tags: []string{"latest"}}}, "docker_images[0] (My/App), tag latest"},
		{"same registry", irAt(br, "127.0.0.1"), zuul.Vars{Build: "b"}, []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}}, "must be different registries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := registries(buildset(br), tc.ir)
			cfg.Retries = 1
			r, err := intermediate.Push(context.Background(), intermediate.PushSpec{Zuul: tc.vars, Registries: cfg, DockerImages: tc.images})
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), br.Password) || strings.Contains(err.Error(), irReg.Password) {
				t.Errorf("error shows a password: %v", err)
			}
			if tc.name == "missing tag" && (len(r.Artifacts) != 1 || r.Artifacts[0].Name != "myorg/app:latest") {
				t.Errorf("artifacts %+v: want only the tag that was copied", r.Artifacts)
			}
		})
	}
}
