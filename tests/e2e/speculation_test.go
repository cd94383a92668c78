package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/runner"
)

func nonce(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// layers returns the layer digests of ref in a test registry.
func layers(t *testing.T, r *registrytest.Registry, ref string) []v1.Hash {
	t.Helper()
	n, err := name.ParseReference(r.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n, remoteOpts(r)...)
	if err != nil {
		t.Fatalf("reading %s from the intermediate registry: %v", ref, err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// labTest returns what a lab test job returned (data.lab_test).
func labTest(t *testing.T, b *runner.BuildReport) (output string, digests []string) {
	t.Helper()
	lt, _ := b.Data["lab_test"].(map[string]any)
	output, _ = lt["output"].(string)
	for _, d := range lt["repo_digests"].([]any) {
		digests = append(digests, d.(string))
	}
	return output, digests
}

// TestCrossChangeSpeculation: change A changes myorg/base; change B
// depends on A and builds myorg/app FROM myorg/base. B's buildset gets A's
// image from the intermediate registry, builds on it, and B's test job runs
// myorg/app, pulled through the buildset registry, containing A's change.
func TestCrossChangeSpeculation(t *testing.T) {
	w := newWorld(t)
	baseMarker := "myorg/base as changed by change 401: " + nonce(t)
	appMarker := "myorg/app of change 402: " + nonce(t)
	base := w.project("base", func(dir string) error { return lab.WriteBase(dir, baseMarker) })
	app := w.project("app", func(dir string) error { return lab.WriteApp(dir, appMarker, false) })
	queue, err := w.env.Queue(
		lab.Change{Project: "myorg/base", Number: 401, Src: base,
			Vars: map[string]any{"docker_images": lab.Images("myorg/base")},
			Jobs: []any{"opendev-build-docker-image"}},
		lab.Change{Project: "myorg/app", Number: 402, Src: app, DependsOn: []int{401},
			Vars: map[string]any{"docker_images": lab.Images("myorg/app")},
			Jobs: []any{"opendev-build-docker-image",
				map[string]any{"myorg-test-app": map[string]any{"dependencies": []any{"opendev-build-docker-image"}}}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	rep := w.run(queue)
	if rep.Failed() {
		t.Fatalf("the queue failed:\n%s", rep.Summary())
	}
	buildA := build(t, rep, 401, "", "opendev-build-docker-image")
	buildB := build(t, rep, 402, "", "opendev-build-docker-image")
	testB := build(t, rep, 402, "", "myorg-test-app")

	artsA, artsB := buildA.ImageArtifacts(), buildB.ImageArtifacts()
	if len(artsA) != 1 || len(artsB) != 1 {
		t.Fatalf("artifacts: A %v, B %v", artsA, artsB)
	}
	baseTag := artifactTag(t, artsA[0], w.ir, buildA, "myorg/base", "latest")
	appTag := artifactTag(t, artsB[0], w.ir, buildB, "myorg/app", "latest")

	// By content: B's image is built on A's base image, layer for layer.
	baseLayers, appLayers := layers(t, w.ir, baseTag), layers(t, w.ir, appTag)
	if len(appLayers) <= len(baseLayers) {
		t.Fatalf("myorg/app has %d layers, myorg/base %d", len(appLayers), len(baseLayers))
	}
	for i := range baseLayers {
		if appLayers[i] != baseLayers[i] {
			t.Errorf("myorg/app layer %d is %s, change 401's myorg/base has %s: B was not built on A's image", i, appLayers[i], baseLayers[i])
		}
	}
	// By running it: B's test job pulled myorg/app through the buildset
	// registry and ran it; it printed A's base content and B's own.
	output, digests := labTest(t, testB)
	if !strings.Contains(output, baseMarker) || !strings.Contains(output, appMarker) {
		t.Errorf("myorg/app printed %q, want A's %q and B's %q", output, baseMarker, appMarker)
	}
	appDigest := digestOf(t, w.ir, appTag)
	found := false
	for _, d := range digests {
		found = found || strings.HasSuffix(d, "@"+appDigest)
	}
	if !found {
		t.Errorf("the test job ran myorg/app %v, want the image B built (%s)", digests, appDigest)
	}
	w.checkNoSecrets(w.target.Password, w.ir.Password)
	if testB.Result != runner.Success || buildB.Paused <= 0 {
		t.Errorf("test job %s; B's build job paused %v (it started the registry the test job used)", testB.Result, buildB.Paused)
	}
}
