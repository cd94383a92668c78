package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/hubtest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/dockerhub"
)

// The promoted set: images with promoteTags tags each; every other image
// is a two-platform index, as multi-arch projects publish.
const (
	promoteImages = 20
	promoteTags   = 3
	promoteLayers = 4 // on top of the busybox base
)

// promoteSite is emulated Docker Hub (web API emulated, in front of
// imagegate's registry) holding the staged images of change 42.
type promoteSite struct {
	hub *hubtest.Server
	// reg is the emulation's registry endpoint.
	reg        transfertest.Registry
	user, pass string
	// staged maps each final reference (repo:tag) to the staged digest.
	staged map[string]string
}

// BenchmarkPromote promotes 20 images with 3 tags each on emulated Docker
// Hub, with the docker_image_promote module, and the way upstream's
// promote-container-image role does it: per tag, `skopeo copy --all` from
// the staging tag to the final tag, then a Docker Hub login and the tag's
// DELETE (remove-registry-tag), and per image the login and tag listing of
// the stale sweep; sequential, as Ansible loops run. Each side gets its own
// registries with the same content. Requests are counted at the emulation
// (web API and registry endpoint, token requests included).
func BenchmarkPromote(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/docker_image_promote", "GOOS=linux", "GOARCH=amd64")
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	skopeo := testenv.Tool(b, "SKOPEO", "skopeo")

	ours := newPromoteSite(b)
	upstream := newPromoteSite(b)

	// imagegate: one module run, as Ansible runs it.
	args := map[string]any{
		"docker_images":        ours.images(),
		"docker_credentials":   map[string]any{"username": ours.user, "password": ours.pass},
		"docker_registry":      "docker.io",
		"docker_registry_url":  "https://" + ours.hub.RegistryHost,
		"docker_hub_url":       ours.hub.URL,
		"docker_registry_cert": string(ours.hub.CACert),
		"zuul":                 map[string]any{"change": "42", "pipeline": "promote"},
	}
	argsFile := filepath.Join(b.TempDir(), "args")
	ab, _ := json.Marshal(args)
	if err := os.WriteFile(argsFile, ab, 0o600); err != nil {
		b.Fatal(err)
	}
	ours.hub.ResetRequests()
	b.ResetTimer()
	start := time.Now()
	cmd := exec.Command(bin, argsFile)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("docker_image_promote: %v\n%s", err, out.Bytes())
	}
	oursTime := time.Since(start)
	b.StopTimer()
	oursReq := ours.hub.Requests()
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10
	}
	var res struct {
		Failed bool
		Msg    string
	}
	if json.Unmarshal(out.Bytes(), &res); res.Failed {
		b.Fatalf("docker_image_promote failed: %s", res.Msg)
	}
	oursOK, oursLeft := ours.verify(b)
	if oursOK != len(ours.staged) || oursLeft != 0 {
		b.Fatalf("docker_image_promote: %d of %d final tags at the staged digest, %d staging tags left", oursOK, len(ours.staged), oursLeft)
	}

	// Upstream: skopeo and the Docker Hub API, tag by tag.
	certDir := b.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), upstream.hub.CACert, 0o644); err != nil {
		b.Fatal(err)
	}
	hubTransport := upstream.reg.Transport()
	ctx := context.Background()
	upstream.hub.ResetRequests()
	start = time.Now()
	for i := 0; i < promoteImages; i++ {
		repo := promoteRepo(i)
		for _, tag := range promoteTagNames() {
			reg := upstream.hub.RegistryHost
			c := exec.Command(skopeo, "--insecure-policy", "copy", "--all", "--quiet",
				"--src-cert-dir", certDir, "--dest-cert-dir", certDir,
				"--src-creds", upstream.user+":"+upstream.pass, "--dest-creds", upstream.user+":"+upstream.pass,
				"docker://"+reg+"/"+repo+":change_42_"+tag, "docker://"+reg+"/"+repo+":"+tag)
			if o, err := c.CombinedOutput(); err != nil {
				b.Fatalf("skopeo copy %s:%s: %v\n%s", repo, tag, err, o)
			}
			// remove-registry-tag: a login, then the DELETE.
			hc, err := dockerhub.New(upstream.user, upstream.pass, dockerhub.WithURL(upstream.hub.URL), dockerhub.WithTransport(hubTransport))
			if err != nil {
				b.Fatal(err)
			}
			if err := hc.DeleteTag(ctx, repo, "change_42_"+tag); err != nil {
				b.Fatal(err)
			}
		}
		// remove-registry-tag's sweep: a login and the tag listing.
		hc, err := dockerhub.New(upstream.user, upstream.pass, dockerhub.WithURL(upstream.hub.URL), dockerhub.WithTransport(hubTransport))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := hc.Tags(ctx, repo); err != nil {
			b.Fatal(err)
		}
	}
	upTime := time.Since(start)
	upReq := upstream.hub.Requests()
	// skopeo 1.9 re-encodes an OCI index it does not fully know (it drops
	// the descriptors' artifactType), so a promoted index can get another
	// digest than the one tested in the gate: counted, not fatal.
	upOK, upLeft := upstream.verify(b)
	if upLeft != 0 {
		b.Fatalf("upstream way: %d staging tags left", upLeft)
	}

	tags := float64(promoteImages * promoteTags)
	perTag := func(c hubtest.Counts) string { return fmt.Sprintf("%.1f", float64(c.Total())/tags) }
	Table(fmt.Sprintf("promote %d images x %d tags on emulated Docker Hub (%d two-platform indexes, images of %d layers)",
		promoteImages, promoteTags, promoteImages/2, promoteLayers+1), [][]string{
		{"method", "wall time", "web API req", "registry req", "req/tag", "digest kept", "peak RSS", "binary"},
		{"docker_image_promote", Seconds(oursTime), fmt.Sprint(oursReq.Hub), fmt.Sprint(oursReq.Registry), perTag(oursReq),
			fmt.Sprintf("%d/%d", oursOK, len(ours.staged)), MiB(rss), MiB(fi.Size())},
		{"skopeo copy --all + tag delete", Seconds(upTime), fmt.Sprint(upReq.Hub), fmt.Sprint(upReq.Registry), perTag(upReq),
			fmt.Sprintf("%d/%d", upOK, len(upstream.staged)), "", ""},
		{"ratio (upstream / imagegate)", Ratio(upTime.Seconds(), oursTime.Seconds()), "", "", Ratio(float64(upReq.Total()), float64(oursReq.Total())), "", "", ""},
	})
	b.ReportMetric(oursTime.Seconds(), "imagegate_s")
	b.ReportMetric(upTime.Seconds(), "upstream_s")
	b.ReportMetric(float64(oursReq.Total())/tags, "imagegate_req/tag")
	b.ReportMetric(float64(upReq.Total())/tags, "upstream_req/tag")
	b.ReportMetric(upTime.Seconds()/oursTime.Seconds(), "speedup")
	b.ReportMetric(float64(upReq.Total())/float64(oursReq.Total()), "request_ratio")
}

func promoteRepo(i int) string { return fmt.Sprintf("myorg/image%02d", i) }

func promoteTagNames() []string { return []string{"latest", "2", "2.1"} }

// newPromoteSite starts emulated Docker Hub and stages every image there
// under change_42_<tag>, as docker_image_upload leaves them.
func newPromoteSite(b *testing.B) *promoteSite {
	b.Helper()
	backend := registrytest.New(b)
	s := &promoteSite{user: backend.Username, pass: backend.Password, staged: map[string]string{}}
	s.hub = hubtest.New(b, hubtest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	s.reg = transfertest.Registry{Host: s.hub.RegistryHost, Username: backend.Username, Password: backend.Password, CA: s.hub.CACert}
	for i := 0; i < promoteImages; i++ {
		repo := promoteRepo(i)
		var content remote.Taggable = promoteImage(b, i, "amd64")
		if i%2 == 1 {
			content = testenv.ChangeIndex(b, "42", time.Now(), func(arch string) [][]byte { return promoteLayersOf(i, arch) })
		}
		for _, tag := range promoteTagNames() {
			s.staged[repo+":"+tag] = s.reg.Push(b, repo+":change_42_"+tag, content)
		}
	}
	return s
}

func (s *promoteSite) images() []any {
	var out []any
	for i := 0; i < promoteImages; i++ {
		var tags []any
		for _, t := range promoteTagNames() {
			tags = append(tags, t)
		}
		out = append(out, map[string]any{"context": ".", "repository": promoteRepo(i), "tags": tags})
	}
	return out
}

// verify counts the final tags holding the staged digest, and the
// staging tags left.
func (s *promoteSite) verify(b *testing.B) (preserved, left int) {
	b.Helper()
	for ref, want := range s.staged {
		repo, tag, _ := strings.Cut(ref, ":")
		if s.reg.Digest(b, ref) == want {
			preserved++
		}
		if s.reg.Digest(b, repo+":change_42_"+tag) != "" {
			left++
		}
	}
	return preserved, left
}

// promoteImage is a busybox image with promoteLayers small layers of its
// own on top, labelled as the build labels an image of change 42.
func promoteImage(b *testing.B, i int, arch string) v1.Image {
	b.Helper()
	return testenv.ChangeImage(b, "42", arch, time.Now(), promoteLayersOf(i, arch)...)
}

func promoteLayersOf(i int, arch string) [][]byte {
	var layers [][]byte
	for l := 0; l < promoteLayers; l++ {
		layers = append(layers, testenv.FileLayer(fmt.Sprintf("app/%d.txt", l), []byte(fmt.Sprintf("image %d layer %d %s\n", i, l, arch))))
	}
	return layers
}
