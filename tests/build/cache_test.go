package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	gtypes "github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// cacheDockerfile has a step whose output is random, so that the layer of
// every execution differs: a layer equal to an earlier build's was reused
// from that build's cache, never rebuilt.
const cacheDockerfile = `FROM myorg/base
RUN head -c 32 /dev/urandom | od -x > /step1
COPY changed.txt /changed.txt
`

// cacheSite is the intermediate registry and a project checkout; each
// buildset gets its own buildset registry and each build a fresh node
// (a new buildkitd with an empty root).
type cacheSite struct {
	ir   *registrytest.Registry
	work string
	home string
	// lastPull is the result of the last job's pull.
	lastPull *intermediate.PullResult
}

func newCacheSite(t *testing.T) *cacheSite {
	home := t.TempDir()
	work := filepath.Join(home, "src", "example.org", "org", "project")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(cacheDockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return &cacheSite{ir: registrytest.New(t), work: work, home: home}
}

// buildsetReg is one buildset's registry, as run-buildset-registry leaves
// it, with the base image a change ahead provided.
type buildsetReg struct {
	*registrytest.Registry
	br *zuul.BuildsetRegistry
}

func newBuildsetReg(t *testing.T) *buildsetReg {
	r := registrytest.New(t)
	b := &buildsetReg{Registry: r, br: &zuul.BuildsetRegistry{Host: "127.0.0.1", Port: r.Port, Username: r.Username,
		Password: r.Password, Cert: string(r.CAPEM)}}
	ref, _ := name.ParseReference(r.Host + "/myorg/base:latest")
	if err := remote.Write(ref, testenv.BusyboxImage(t), b.opts()...); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *buildsetReg) opts() []remote.Option {
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: b.Username, Password: b.Password}),
		remote.WithTransport(&http.Transport{TLSClientConfig: b.TLSConfig()}), remote.WithContext(context.Background())}
}

// layers are the digests of the layers of <repo>:latest.
func (b *buildsetReg) layers(t *testing.T, repo string) []string {
	t.Helper()
	ref, _ := name.ParseReference(b.Host + "/" + repo + ":latest")
	img, err := remote.Image(ref, b.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var ds []string
	for _, l := range ls {
		d, _ := l.Digest()
		ds = append(ds, d.String())
	}
	return ds
}

func (s *cacheSite) registries(b *buildsetReg) intermediate.Registries {
	return intermediate.Registries{BuildsetRegistry: b.br, IntermediateRegistry: &zuul.IntermediateRegistry{Host: "127.0.0.1",
		Port: s.ir.Port, Username: s.ir.Username, Password: s.ir.Password, Cert: string(s.ir.CAPEM)},
		Jobs: 4, LayerJobs: 4, Retries: 1}
}

var cacheImages = []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}}

// job runs one build job as the jobs do: pull into its buildset registry
// (executor), build on a fresh node, push to the intermediate registry
// (executor). It returns the build's and the push's results.
func (s *cacheSite) job(t *testing.T, b *buildsetReg, vars zuul.Vars, changed string) (*build.Result, *intermediate.PushResult) {
	t.Helper()
	ctx := context.Background()
	vars.Project = zuul.Project{CanonicalName: "example.org/org/project", SrcDir: s.work}
	pulled, err := intermediate.Pull(ctx, intermediate.PullSpec{Zuul: vars, Registries: s.registries(b), Artifacts: vars.Artifacts,
		DockerImages: cacheImages, Cache: true})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	t.Logf("pull %s: %s %v", vars.Build, pulled.Msg, pulled.Warnings)
	s.lastPull = pulled
	if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	node := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))
	defer node.Stop()
	res, err := build.Build(ctx, build.Request{Images: cacheImages, Zuul: vars, WorkDir: s.work, Home: s.home,
		Registry: b.br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: true})
	if err != nil {
		t.Fatalf("build %s: %v", vars.Build, err)
	}
	t.Logf("build %s: from %v to %s, %d of %d steps cached, warnings %v", vars.Build, res.Images[0].CacheFrom,
		res.Images[0].CacheTo, res.Images[0].CacheHits, res.Images[0].Steps, res.Warnings)
	pushed, err := intermediate.Push(ctx, intermediate.PushSpec{Zuul: vars, Registries: s.registries(b), DockerImages: cacheImages, Cache: true})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return res, pushed
}

// buildkitdConfig trusts the buildset registry as ensure-buildkit does,
// with it as Docker Hub's mirror.
func buildkitdConfig(host, caFile string) string {
	return fmt.Sprintf("[registry.%q]\n  mirrors = [%q]\n[registry.%q]\n  http = false\n  ca = [%q]\n", "docker.io", host, host, caFile)
}

// TestCacheAcrossChanges is the cache's threat model, run: a check build
// of change X cannot alter the layers change Y's build gets.
//
//  1. Merged code is built in the post pipeline: its cache becomes the
//     cache of merged code in the intermediate registry.
//  2. Change X's check build exports a poisoned cache: the same step keys
//     mapped to layers of other content, crafted here as X's node could
//     (it holds its buildset registry's credentials). X's push copies it
//     to the intermediate registry under X's build only; the cache of
//     merged code is untouched.
//  3. Change Y, not depending on X, builds on a fresh node: it reuses the
//     merged build's layer for the unchanged step (the mechanism works)
//     and none of X's.
//  4. Change Y2 depends on X (X's artifacts reach it through
//     zuul.artifacts): it imports X's cache and gets X's layers. That
//     dependency is the only way X's cache reaches a build.
func TestCacheAcrossChanges(t *testing.T) {
	t.Parallel()
	s := newCacheSite(t)
	irOpts := []remote.Option{remote.WithAuth(&authn.Basic{Username: s.ir.Username, Password: s.ir.Password}),
		remote.WithTransport(&http.Transport{TLSClientConfig: s.ir.TLSConfig()})}
	mergedTag, _ := zuul.MergedCacheTag("example.org/org/project", "master")
	mergedRef := s.ir.Host + "/imagegate-cache/myorg/app:" + mergedTag

	// 1. Merged code, post pipeline: the first build finds no cache.
	brM := newBuildsetReg(t)
	resM, pushM := s.job(t, brM, zuul.Vars{Build: "m0", Pipeline: "post", Branch: "master"}, "merged\n")
	if len(resM.Images[0].CacheFrom) != 0 {
		t.Errorf("the first build imported %v", resM.Images[0].CacheFrom)
	}
	// The missing cache is a warning naming the image, not a failure.
	if !slices.ContainsFunc(s.lastPull.Warnings, func(w string) bool {
		return strings.Contains(w, "no cache of merged code for myorg/app in the intermediate registry yet")
	}) {
		t.Errorf("the first pull did not warn that there is no cache yet: %q", s.lastPull.Warnings)
	}
	if resM.Images[0].CacheTo == "" || !hasCache(pushM, "merged", true) || !hasCache(pushM, "build", true) {
		t.Fatalf("the post build's cache did not become the cache of merged code: %+v %+v", resM.Images[0], pushM.Caches)
	}
	layersM := brM.layers(t, "myorg/app")
	mergedDigest := headDigest(t, mergedRef, irOpts)

	// 2. Change X, check pipeline, with a poisoned cache.
	brX := newBuildsetReg(t)
	vx := zuul.Vars{Build: "x1", Change: "101", Pipeline: "check", Branch: "master"}
	resX, _ := s.job(t, brX, vx, "change X\n")
	if !slices.Contains(resX.Images[0].CacheFrom, brX.Host+"/imagegate-cache/myorg/app:"+mergedTag) {
		t.Errorf("X did not import the cache of merged code: %v", resX.Images[0].CacheFrom)
	}
	poison := poisonCache(t, brX, "imagegate-cache/myorg/app:x1_cache")
	pushX, err := intermediate.Push(context.Background(), intermediate.PushSpec{Zuul: withProject(vx, s), Registries: s.registries(brX),
		DockerImages: cacheImages, Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	if hasCache(pushX, "merged", false) || !hasCache(pushX, "build", true) {
		t.Fatalf("a check build's push: %+v", pushX.Caches)
	}
	if d := headDigest(t, mergedRef, irOpts); d != mergedDigest {
		t.Fatalf("a check build changed the cache of merged code: %s, was %s", d, mergedDigest)
	}
	var cacheArt []zuul.Artifact
	for _, a := range pushX.Artifacts {
		if a.Metadata["type"] == zuul.BuildkitCacheType {
			cacheArt = append(cacheArt, a)
		}
	}
	if len(cacheArt) != 1 || len(pushX.Artifacts) != 2 {
		t.Fatalf("X's artifacts: %+v", pushX.Artifacts)
	}

	// 3. Change Y, not depending on X.
	brY := newBuildsetReg(t)
	resY, _ := s.job(t, brY, zuul.Vars{Build: "y1", Change: "102", Pipeline: "check", Branch: "master"}, "change Y\n")
	for _, w := range s.lastPull.Warnings {
		if strings.Contains(w, "no cache") {
			t.Errorf("Y's pull found no cache of merged code: %s", w)
		}
	}
	layersY := brY.layers(t, "myorg/app")
	for _, l := range layersY {
		if poison[l] {
			t.Errorf("Y's image holds X's poisoned layer %s", l)
		}
	}
	// Base and the unchanged step are the merged build's layers, as a
	// clean build with nothing but merged code's cache has them.
	if len(layersY) != len(layersM) || !slices.Equal(layersY[:len(layersY)-1], layersM[:len(layersM)-1]) {
		t.Errorf("Y's layers %v: want the merged build's %v for every unchanged step", layersY, layersM)
	}
	if resY.Images[0].CacheHits == 0 || len(resY.Images[0].CacheFrom) != 1 {
		t.Errorf("Y reused nothing of merged code: %+v", resY.Images[0])
	}

	// 4. Change Y2 depends on X. Another branch, which has no cache of
	// merged code, so that X's cache is the only one it may import.
	brY2 := newBuildsetReg(t)
	resY2, _ := s.job(t, brY2, zuul.Vars{Build: "y2", Change: "103", Pipeline: "check", Branch: "feature/x",
		Artifacts: pushX.Artifacts}, "change Y2\n")
	layersY2 := brY2.layers(t, "myorg/app")
	got := 0
	for _, l := range layersY2 {
		if poison[l] {
			got++
		}
	}
	if got == 0 || resY2.Images[0].CacheHits == 0 {
		t.Errorf("Y2, depending on X, did not reuse X's cache: layers %v, result %+v", layersY2, resY2.Images[0])
	}
}

func withProject(v zuul.Vars, s *cacheSite) zuul.Vars {
	v.Project = zuul.Project{CanonicalName: "example.org/org/project", SrcDir: s.work}
	return v
}

func hasCache(r *intermediate.PushResult, kind string, copied bool) bool {
	for _, c := range r.Caches {
		if c.Kind == kind && c.Copied == copied {
			return true
		}
	}
	return false
}

func headDigest(t *testing.T, ref string, opts []remote.Option) string {
	t.Helper()
	r, _ := name.ParseReference(ref)
	d, err := remote.Head(r, opts...)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}

// cacheDoc is a registry cache manifest and its configuration, as maps,
// for the tests to rewrite.
type cacheDoc struct {
	manifest map[string]any
	config   map[string]any
}

func readCache(t *testing.T, b *buildsetReg, path string) cacheDoc {
	t.Helper()
	ref, _ := name.ParseReference(b.Host + "/" + path)
	d, err := remote.Get(ref, b.opts()...)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var doc cacheDoc
	if err := json.Unmarshal(d.Manifest, &doc.manifest); err != nil {
		t.Fatal(err)
	}
	cfgDesc := doc.manifest["config"].(map[string]any)
	h, _ := v1.NewHash(cfgDesc["digest"].(string))
	l, err := remote.Layer(ref.Context().Digest(h.String()), b.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(rc)
	rc.Close()
	if err := json.Unmarshal(raw, &doc.config); err != nil {
		t.Fatalf("cache configuration: %v", err)
	}
	return doc
}

// writeCache uploads the configuration and puts the manifest under path.
func writeCache(t *testing.T, b *buildsetReg, path string, doc cacheDoc) {
	t.Helper()
	ref, _ := name.ParseReference(b.Host + "/" + path)
	raw, _ := json.Marshal(doc.config)
	cfg := static.NewLayer(raw, gtypes.MediaType("application/vnd.buildkit.cacheconfig.v0"))
	if err := remote.WriteLayer(ref.Context(), cfg, b.opts()...); err != nil {
		t.Fatal(err)
	}
	d, _ := cfg.Digest()
	m := doc.manifest["config"].(map[string]any)
	m["digest"], m["size"] = d.String(), len(raw)
	mraw, _ := json.Marshal(doc.manifest)
	if err := remote.Put(ref, rawManifest{mraw, gtypes.OCIManifestSchema1}, b.opts()...); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
}

type rawManifest struct {
	raw []byte
	mt  gtypes.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)         { return r.raw, nil }
func (r rawManifest) MediaType() (gtypes.MediaType, error) { return r.mt, nil }

// poisonCache rewrites the cache at path so that every step key it holds
// maps to a layer of other content (a file /poisoned), and returns the
// digests of the poisoned layers.
func poisonCache(t *testing.T, b *buildsetReg, path string) map[string]bool {
	t.Helper()
	doc := readCache(t, b, path)
	ref, _ := name.ParseReference(b.Host + "/" + path)
	poisoned := map[string]bool{}
	swap := map[string]map[string]any{} // old digest -> new descriptor fields
	for i, x := range doc.manifest["layers"].([]any) {
		desc := x.(map[string]any)
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		content := fmt.Appendf(nil, "poisoned by change X, layer %d\n", i)
		tw.WriteHeader(&tar.Header{Name: "poisoned", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write(content)
		tw.Close()
		data := tb.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteLayer(ref.Context(), l, b.opts()...); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		diff, _ := l.DiffID()
		size, _ := l.Size()
		poisoned[d.String()] = true
		swap[desc["digest"].(string)] = map[string]any{"digest": d.String(), "size": size, "diffID": diff.String()}
		desc["digest"], desc["size"] = d.String(), size
		desc["mediaType"] = string(gtypes.DockerLayer)
		if ann, ok := desc["annotations"].(map[string]any); ok {
			ann["containerd.io/uncompressed"] = diff.String()
		}
	}
	for _, x := range doc.config["layers"].([]any) {
		l := x.(map[string]any)
		n, ok := swap[l["blob"].(string)]
		if !ok {
			t.Fatalf("cache layer %v is not in the manifest", l["blob"])
		}
		l["blob"] = n["digest"]
		if ann, ok := l["annotations"].(map[string]any); ok {
			ann["diffID"], ann["size"], ann["mediaType"] = n["diffID"], n["size"], string(gtypes.DockerLayer)
		}
	}
	writeCache(t, b, path, doc)
	return poisoned
}

// TestBadCache builds with a cache of merged code that is bad in each way
// a registry can hold one: absent (the first build), corrupt JSON, a
// configuration BuildKit's importer refuses, a layer the registry lacks,
// and a buildset registry that no longer answers for the cache's
// repository. Each build succeeds, without the cache, with a warning
// naming the cause; none fails because of the cache.
func TestBadCache(t *testing.T) {
	t.Parallel()
	s := newCacheSite(t)
	b := newBuildsetReg(t)
	node := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))
	if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := zuul.Vars{Build: "good", Pipeline: "post", Branch: "master",
		Project: zuul.Project{CanonicalName: "example.org/org/project", SrcDir: s.work}}
	req := build.Request{Images: cacheImages, Zuul: vars, WorkDir: s.work, Home: s.home,
		Registry: b.br, BuildkitAddr: node.Addr, DockerHost: "none", Cache: true}
	ctx := context.Background()

	// A good cache to corrupt: exported under the build's own name.
	res, err := build.Build(ctx, req)
	if err != nil || res.Images[0].CacheTo == "" {
		t.Fatalf("first build: %v %+v", err, res)
	}
	for _, w := range res.Warnings {
		t.Errorf("first build warned: %s", w)
	}
	good := readCache(t, b, "imagegate-cache/myorg/app:good_cache")
	mergedTag, _ := vars.MergedCacheTag()
	merged := "imagegate-cache/myorg/app:" + mergedTag
	clone := func() cacheDoc {
		var d cacheDoc
		raw, _ := json.Marshal(good.manifest)
		json.Unmarshal(raw, &d.manifest)
		raw, _ = json.Marshal(good.config)
		json.Unmarshal(raw, &d.config)
		return d
	}

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
		want  string
	}{
		{"not JSON", func(t *testing.T) {
			ref, _ := name.ParseReference(b.Host + "/" + merged)
			if err := remote.Put(ref, rawManifest{[]byte(`{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:` + strings.Repeat("0", 64) + `", "size": 2}, "layers": []}`), gtypes.OCIManifestSchema1}, b.opts()...); err == nil {
				return
			}
			// The registry refused a manifest with a missing config; a
			// manifest of another kind under the cache's name is the
			// corrupt cache then.
			if err := remote.Write(ref, testenv.BusyboxImage(t), b.opts()...); err != nil {
				t.Fatal(err)
			}
		}, "is not a BuildKit cache manifest"},
		{"layer that is not a tar", func(t *testing.T) {
			// Every layer replaced by bytes that are no layer, their
			// digests right: it passes the check before the solve, and
			// BuildKit's import fails when it unpacks the layer.
			d := clone()
			ref, _ := name.ParseReference(b.Host + "/" + merged)
			swap := map[string]string{}
			for i, x := range d.manifest["layers"].([]any) {
				desc := x.(map[string]any)
				junk := static.NewLayer(fmt.Appendf(nil, "not a layer %d", i), gtypes.DockerLayer)
				if err := remote.WriteLayer(ref.Context(), junk, b.opts()...); err != nil {
					t.Fatal(err)
				}
				jd, _ := junk.Digest()
				js, _ := junk.Size()
				swap[desc["digest"].(string)] = jd.String()
				desc["digest"], desc["size"] = jd.String(), js
			}
			for _, x := range d.config["layers"].([]any) {
				l := x.(map[string]any)
				l["blob"] = swap[l["blob"].(string)]
			}
			writeCache(t, b, merged, d)
		}, "the build failed with the imported cache"},
		{"layer missing from the registry", func(t *testing.T) {
			// A cache whose manifest was accepted, then one of its layers
			// deleted from the repository.
			writeCache(t, b, merged, clone())
			ref, _ := name.ParseReference(b.Host + "/" + merged)
			layer := good.manifest["layers"].([]any)[0].(map[string]any)["digest"].(string)
			tr, err := transport.NewWithContext(ctx, ref.Context().Registry, &authn.Basic{Username: b.Username, Password: b.Password},
				&http.Transport{TLSClientConfig: b.TLSConfig()}, []string{ref.Context().Scope(transport.PushScope)})
			if err != nil {
				t.Fatal(err)
			}
			hreq, _ := http.NewRequest(http.MethodDelete, "https://"+b.Host+"/v2/imagegate-cache/myorg/app/blobs/"+layer, nil)
			resp, err := (&http.Client{Transport: tr}).Do(hreq)
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("deleting layer %s: %v %v", layer, err, resp)
			}
			resp.Body.Close()
		}, "layer sha256:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			if err := os.WriteFile(filepath.Join(s.work, "changed.txt"), []byte(tc.name), 0o644); err != nil {
				t.Fatal(err)
			}
			fresh := testenv.StartBuildkitd(t, buildkitdConfig(b.Host, b.CAFile))
			r := req
			r.BuildkitAddr = fresh.Addr
			r.Zuul.Build = strings.ReplaceAll(tc.name, " ", "-")
			res, err := build.Build(ctx, r)
			if err != nil {
				t.Fatalf("the build failed because of a bad cache: %v", err)
			}
			if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, tc.want) && strings.Contains(w, "without") }) {
				t.Errorf("warnings %q: want one containing %q", res.Warnings, tc.want)
			}
			if res.Images[0].Digest == "" {
				t.Errorf("no image: %+v", res.Images[0])
			}
		})
	}
}
