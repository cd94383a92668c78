package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/quaytest"
	"github.com/imagegate/imagegate/internal/ratelimit"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/quay"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// counter is a registry behind a proxy that counts every request
// (internal/ratelimit without a quota): the registry as the promote sees
// it. Content is staged at the registry itself, uncounted.
type counter struct {
	proxy *ratelimit.Proxy
	// CA is the PEM the proxy's certificate chains to.
	CA []byte
}

func newCounter(b *testing.B, upstream string, upstreamCA []byte) *counter {
	b.Helper()
	ca, err := pki.NewCA("bench counting proxy CA", 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	pair, err := sc.TLSCertificate()
	if err != nil {
		b.Fatal(err)
	}
	roots, err := pki.CertPool(upstreamCA)
	if err != nil {
		b.Fatal(err)
	}
	p, err := ratelimit.Start(upstream, ratelimit.Options{Certificate: pair, UpstreamRoots: roots},
		ratelimit.Config{Counts: func(*http.Request) bool { return false }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return &counter{proxy: p, CA: ca.CertPEM}
}

// moduleRun runs an Ansible module binary on args, as Ansible runs it, and
// returns its wall time and peak RSS; a failed module fails b.
func moduleRun(b *testing.B, bin string, args map[string]any) (time.Duration, int64) {
	b.Helper()
	argsFile := filepath.Join(b.TempDir(), "args")
	ab, _ := json.Marshal(args)
	if err := os.WriteFile(argsFile, ab, 0o600); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(bin, argsFile)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%s", filepath.Base(bin), err, out.Bytes())
	}
	d := time.Since(start)
	var res struct {
		Failed bool
		Msg    string
	}
	if json.Unmarshal(out.Bytes(), &res); res.Failed {
		b.Fatalf("%s failed: %s", filepath.Base(bin), res.Msg)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10
	}
	return d, rss
}

// promoteContent is what each staged image holds: every other image a
// two-platform index, as in BenchmarkPromote.
func promoteContent(b *testing.B, i int) remote.Taggable {
	if i%2 == 1 {
		return testenv.ChangeIndex(b, "42", time.Now(), func(arch string) [][]byte { return promoteLayersOf(i, arch) })
	}
	return promoteImage(b, i, "amd64")
}

// containerImages is container_images for the promoted set, on registry
// quay.io.
func containerImages() []any {
	var out []any
	for i := 0; i < promoteImages; i++ {
		var tags []any
		for _, t := range promoteTagNames() {
			tags = append(tags, t)
		}
		out = append(out, map[string]any{"context": ".", "registry": "quay.io",
			"repository": "quay.io/" + promoteRepo(i), "tags": tags})
	}
	return out
}

// quaySite is quay emulated (internal/quaytest) in front of imagegate's
// registry, its registry endpoint behind a counting proxy, holding the
// images of change 42 under change_42_<tag>, as upload-container-image
// stages them.
type quaySite struct {
	q     *quaytest.Server
	count *counter
	// reg is the emulation's registry endpoint, uncounted.
	reg    transfertest.Registry
	token  string
	staged map[string]string
}

func newQuaySite(b *testing.B) *quaySite {
	b.Helper()
	backend := registrytest.New(b)
	s := &quaySite{token: "bench-" + fmt.Sprint(time.Now().UnixNano()), staged: map[string]string{}}
	s.q = quaytest.New(b, quaytest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	s.q.WithToken(s.token, quaytest.ScopeRead, quaytest.ScopeWrite)
	s.reg = transfertest.Registry{Host: s.q.RegistryHost, Username: backend.Username, Password: backend.Password, CA: s.q.CACert}
	s.count = newCounter(b, s.q.RegistryHost, s.q.CACert)
	for i := 0; i < promoteImages; i++ {
		content := promoteContent(b, i)
		for _, tag := range promoteTagNames() {
			s.staged[promoteRepo(i)+":"+tag] = s.reg.Push(b, promoteRepo(i)+":change_42_"+tag, content)
		}
	}
	return s
}

// requests is the registry requests and web API calls so far.
func (s *quaySite) requests() (registry, api int) {
	return int(s.count.proxy.Requests()), len(s.q.Calls())
}

// verify counts the final tags at the staged digest and the change tags
// left.
func (s *quaySite) verify(b *testing.B) (kept, left int) {
	b.Helper()
	for ref, want := range s.staged {
		repo, tag, _ := strings.Cut(ref, ":")
		if s.reg.Digest(b, ref) == want {
			kept++
		}
		if s.reg.Digest(b, repo+":change_42_"+tag) != "" {
			left++
		}
	}
	return kept, left
}

// BenchmarkContainerPromoteTag promotes 20 images with 3 tags each on
// emulated quay (promote_container_image_method: tag) with the
// container_image_promote module, and as upstream's promote-container-image
// role does: per tag, `skopeo copy --all` from the change tag to the final
// tag, then the change tag's DELETE through quay's API
// (remove-registry-tag), and per image the tag listing of the stale sweep;
// sequential, as Ansible loops run. Each side has its own emulation with
// the same content; registry requests are counted at a proxy in front of
// the registry endpoint, web API calls at the emulation.
func BenchmarkContainerPromoteTag(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/container_image_promote", "GOOS=linux", "GOARCH=amd64")
	skopeo := testenv.Tool(b, "SKOPEO", "skopeo")
	ours, upstream := newQuaySite(b), newQuaySite(b)

	args := map[string]any{
		"container_images": containerImages(),
		"container_registry_credentials": map[string]any{"quay.io": map[string]any{
			"username": ours.reg.Username, "password": ours.reg.Password, "api_token": ours.token,
			"repository": "^quay.io/myorg/", "type": "quay",
			"registry_url": "https://" + ours.count.proxy.Host(), "api_url": ours.q.URL,
			"cert": string(ours.count.CA) + string(ours.q.CACert)}},
		"zuul": map[string]any{"change": "42", "pipeline": "promote"},
	}
	r0, a0 := ours.requests()
	b.ResetTimer()
	oursTime, rss := moduleRun(b, bin, args)
	b.StopTimer()
	r1, a1 := ours.requests()
	oursReg, oursAPI := r1-r0, a1-a0
	if kept, left := ours.verify(b); kept != len(ours.staged) || left != 0 {
		b.Fatalf("container_image_promote: %d of %d final tags at the staged digest, %d change tags left", kept, len(ours.staged), left)
	}

	certDir := b.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), upstream.count.CA, 0o644); err != nil {
		b.Fatal(err)
	}
	api, err := quay.New(upstream.q.URL, upstream.token, quay.WithTransport(&http.Transport{TLSClientConfig: tlsTrusting(b, upstream.q.CACert)}))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	creds := upstream.reg.Username + ":" + upstream.reg.Password
	host := upstream.count.proxy.Host()
	r0, a0 = upstream.requests()
	start := time.Now()
	for i := 0; i < promoteImages; i++ {
		repo := promoteRepo(i)
		for _, tag := range promoteTagNames() {
			c := exec.Command(skopeo, "--insecure-policy", "copy", "--all", "--quiet",
				"--src-cert-dir", certDir, "--dest-cert-dir", certDir, "--src-creds", creds, "--dest-creds", creds,
				"docker://"+host+"/"+repo+":change_42_"+tag, "docker://"+host+"/"+repo+":"+tag)
			if o, err := c.CombinedOutput(); err != nil {
				b.Fatalf("skopeo copy %s:%s: %v\n%s", repo, tag, err, o)
			}
			if err := api.DeleteTag(ctx, repo, "change_42_"+tag); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := api.Tags(ctx, repo); err != nil {
			b.Fatal(err)
		}
	}
	upTime := time.Since(start)
	r1, a1 = upstream.requests()
	upReg, upAPI := r1-r0, a1-a0
	// skopeo may re-encode an index it does not fully know (see
	// BenchmarkPromote): counted, not fatal.
	upKept, upLeft := upstream.verify(b)
	if upLeft != 0 {
		b.Fatalf("upstream way: %d change tags left", upLeft)
	}

	tags := float64(promoteImages * promoteTags)
	perTag := func(n int) string { return fmt.Sprintf("%.1f", float64(n)/tags) }
	Table(fmt.Sprintf("container promote, tag method: %d images x %d tags on emulated quay (%d two-platform indexes, images of %d layers)",
		promoteImages, promoteTags, promoteImages/2, promoteLayers+1), [][]string{
		{"method", "wall time", "web API req", "registry req", "req/tag", "digest kept", "peak RSS"},
		{"container_image_promote", Seconds(oursTime), fmt.Sprint(oursAPI), fmt.Sprint(oursReg), perTag(oursAPI + oursReg),
			fmt.Sprintf("%d/%d", len(ours.staged), len(ours.staged)), MiB(rss)},
		{"skopeo copy --all + quay tag delete", Seconds(upTime), fmt.Sprint(upAPI), fmt.Sprint(upReg), perTag(upAPI + upReg),
			fmt.Sprintf("%d/%d", upKept, len(upstream.staged)), ""},
		{"ratio (upstream / imagegate)", Ratio(upTime.Seconds(), oursTime.Seconds()), "", "",
			Ratio(float64(upAPI+upReg), float64(oursAPI+oursReg)), "", ""},
	})
	b.ReportMetric(oursTime.Seconds(), "imagegate_s")
	b.ReportMetric(upTime.Seconds(), "upstream_s")
	b.ReportMetric(float64(oursAPI+oursReg)/tags, "imagegate_req/tag")
	b.ReportMetric(float64(upAPI+upReg)/tags, "upstream_req/tag")
	b.ReportMetric(upTime.Seconds()/oursTime.Seconds(), "speedup")
}

// BenchmarkContainerPromoteIntermediate promotes 20 images with 3 tags
// each with promote_container_image_method: intermediate-registry: the gate
// build's artifacts, found through Zuul's builds API, are copied from the
// intermediate registry (imagegate's) to the target (imagegate's), with the
// container_image_promote module, and as upstream's role does it: the
// builds query, then a `skopeo copy --all` per artifact. Both registries
// are behind counting proxies; the builds API counts its own requests.
func BenchmarkContainerPromoteIntermediate(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/container_image_promote", "GOOS=linux", "GOARCH=amd64")
	skopeo := testenv.Tool(b, "SKOPEO", "skopeo")

	type site struct {
		ir, target   transfertest.Registry // uncounted
		irC, targetC *counter
		api          *httptest.Server
		apiRequests  atomic.Int64
		want         map[string]string // repo:tag -> digest built in the gate
	}
	newSite := func() *site {
		s := &site{want: map[string]string{}}
		s.ir, s.target = transfertest.Ours(b), transfertest.Ours(b)
		s.irC, s.targetC = newCounter(b, s.ir.Host, s.ir.CA), newCounter(b, s.target.Host, s.target.CA)
		irHost, irPort := splitHostPort(b, s.irC.proxy.Host())
		build := zuul.Build{UUID: "gateuuid", JobName: "app-upload", Result: "SUCCESS", Pipeline: "gate",
			StartTime: time.Now().UTC().Format(zuul.BuildTime), Project: "myorg/app"}
		build.SetChange("42", "1")
		for i := 0; i < promoteImages; i++ {
			content := promoteContent(b, i)
			repo := "quay.io/" + promoteRepo(i)
			for _, tag := range promoteTagNames() {
				s.want[promoteRepo(i)+":"+tag] = s.ir.Push(b, repo+":gateuuid_"+tag, content)
				a := zuul.NewContainerImageArtifact(irHost, irPort, repo, tag, "gateuuid_"+tag)
				build.Artifacts = append(build.Artifacts, zuul.BuildArtifact{Name: a.Name, URL: a.URL, Metadata: a.Metadata})
			}
		}
		body, err := json.Marshal([]zuul.Build{build})
		if err != nil {
			b.Fatal(err)
		}
		s.api = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.apiRequests.Add(1)
			if r.URL.Path != "/api/tenant/lab/builds" || r.URL.Query().Get("change") != "42" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}))
		b.Cleanup(s.api.Close)
		return s
	}
	requests := func(s *site) (int, int) {
		return int(s.irC.proxy.Requests()), int(s.targetC.proxy.Requests() + s.apiRequests.Load())
	}
	verify := func(s *site) (kept int) {
		for ref, want := range s.want {
			if s.target.Digest(b, ref) == want {
				kept++
			}
		}
		return kept
	}
	ours, upstream := newSite(), newSite()

	args := map[string]any{
		"container_images": containerImages(),
		"container_registry_credentials": map[string]any{
			"quay.io": map[string]any{"username": ours.target.Username, "password": ours.target.Password,
				"repository": "^quay.io/myorg/", "type": "generic",
				"registry_url": "https://" + ours.targetC.proxy.Host(), "cert": string(ours.targetC.CA)},
			ours.irC.proxy.Host(): map[string]any{"username": ours.ir.Username, "password": ours.ir.Password, "cert": string(ours.irC.CA)},
		},
		"promote_container_image_method":   "intermediate-registry",
		"promote_container_image_api":      ours.api.URL + "/api/tenant/lab",
		"promote_container_image_api_cert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ours.api.Certificate().Raw})),
		"promote_container_image_pipeline": "gate",
		"promote_container_image_job":      "app-upload",
		"zuul":                             map[string]any{"change": "42", "patchset": "1", "pipeline": "promote"},
	}
	b.ResetTimer()
	oursTime, rss := moduleRun(b, bin, args)
	b.StopTimer()
	oursIR, oursOther := requests(ours)
	if kept := verify(ours); kept != len(ours.want) {
		b.Fatalf("container_image_promote: %d of %d final tags at the gate's digest", kept, len(ours.want))
	}

	irCerts, targetCerts := b.TempDir(), b.TempDir()
	os.WriteFile(filepath.Join(irCerts, "ca.crt"), upstream.irC.CA, 0o644)
	os.WriteFile(filepath.Join(targetCerts, "ca.crt"), upstream.targetC.CA, 0o644)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsTrusting(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.api.Certificate().Raw}))}}
	start := time.Now()
	builds, err := zuul.QueryBuilds(context.Background(), hc, upstream.api.URL+"/api/tenant/lab", "change=42&patchset=1&pipeline=gate&job_name=app-upload")
	if err != nil || len(builds) != 1 {
		b.Fatalf("builds API: %d builds, %v", len(builds), err)
	}
	for _, a := range builds[0].Artifacts {
		repo, _ := a.Metadata["repository"].(string)
		tag, _ := a.Metadata["tag"].(string)
		c := exec.Command(skopeo, "--insecure-policy", "copy", "--all", "--quiet",
			"--src-cert-dir", irCerts, "--dest-cert-dir", targetCerts,
			"--src-creds", upstream.ir.Username+":"+upstream.ir.Password,
			"--dest-creds", upstream.target.Username+":"+upstream.target.Password,
			a.URL, "docker://"+upstream.targetC.proxy.Host()+"/"+strings.TrimPrefix(repo, "quay.io/")+":"+tag)
		if o, err := c.CombinedOutput(); err != nil {
			b.Fatalf("skopeo copy %s: %v\n%s", a.URL, err, o)
		}
	}
	upTime := time.Since(start)
	upIR, upOther := requests(upstream)
	upKept := verify(upstream)

	tags := float64(promoteImages * promoteTags)
	perTag := func(n int) string { return fmt.Sprintf("%.1f", float64(n)/tags) }
	Table(fmt.Sprintf("container promote, intermediate-registry method: %d images x %d tags (%d two-platform indexes, images of %d layers)",
		promoteImages, promoteTags, promoteImages/2, promoteLayers+1), [][]string{
		{"method", "wall time", "intermediate req", "target + API req", "req/tag", "digest kept", "peak RSS"},
		{"container_image_promote", Seconds(oursTime), fmt.Sprint(oursIR), fmt.Sprint(oursOther), perTag(oursIR + oursOther),
			fmt.Sprintf("%d/%d", len(ours.want), len(ours.want)), MiB(rss)},
		{"builds query + skopeo copy --all per artifact", Seconds(upTime), fmt.Sprint(upIR), fmt.Sprint(upOther), perTag(upIR + upOther),
			fmt.Sprintf("%d/%d", upKept, len(upstream.want)), ""},
		{"ratio (upstream / imagegate)", Ratio(upTime.Seconds(), oursTime.Seconds()), "", "",
			Ratio(float64(upIR+upOther), float64(oursIR+oursOther)), "", ""},
	})
	b.ReportMetric(oursTime.Seconds(), "imagegate_s")
	b.ReportMetric(upTime.Seconds(), "upstream_s")
	b.ReportMetric(float64(oursIR+oursOther)/tags, "imagegate_req/tag")
	b.ReportMetric(float64(upIR+upOther)/tags, "upstream_req/tag")
	b.ReportMetric(upTime.Seconds()/oursTime.Seconds(), "speedup")
}

func tlsTrusting(b *testing.B, caPEM []byte) *tls.Config {
	b.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		b.Fatal("no certificate in the PEM")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
