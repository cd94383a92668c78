package e2e

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/runner"
)

// seed pushes a small image created at the given time to ref in a test
// registry: the stale sweep takes a tag's age from its image's creation
// time on registries without tag timestamps.
func seed(t *testing.T, r *registrytest.Registry, ref string, created time.Time, content string) string {
	t.Helper()
	img, err := mutate.CreatedAt(testenv.BusyboxImage(t, testenv.FileLayer("seed.txt", []byte(content))), v1.Time{Time: created})
	if err != nil {
		t.Fatal(err)
	}
	n, err := name.ParseReference(r.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(n, img, remoteOpts(r)...); err != nil {
		t.Fatalf("seeding %s: %v", ref, err)
	}
	d, _ := img.Digest()
	return d.String()
}

// TestGateAndPromote: opendev-upload-docker-image in the gate stages
// change_<N>_<tag> in the target registry; after the merge,
// opendev-promote-docker-image (no nodes) moves the final tags to the same
// digests, removes the change tags, and sweeps a change tag older than 24
// hours while keeping a fresh one and every non-staging tag.
func TestGateAndPromote(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	stale := seed(t, w.target, "myorg/app:change_99_latest", now.Add(-48*time.Hour), "stale")
	fresh := seed(t, w.target, "myorg/app:change_150_latest", now.Add(-time.Hour), "fresh")
	stable := seed(t, w.target, "myorg/app:stable", now.Add(-72*time.Hour), "stable")

	marker := "myorg/app of change 601: " + nonce(t)
	app := w.project("app", func(dir string) error { return lab.WriteApp(dir, marker, true) })
	images := lab.Images("myorg/app", "latest", "v1")
	change := func(pipeline, job string) lab.Change {
		return lab.Change{Project: "myorg/app", Number: 601, Src: app, Pipeline: pipeline,
			Vars: map[string]any{"docker_images": images},
			Jobs: []any{map[string]any{job: lab.UploadCredentials()}}}
	}

	gate, err := w.env.Queue(change("gate", "opendev-upload-docker-image"))
	if err != nil {
		t.Fatal(err)
	}
	rep := w.run(gate)
	up := build(t, rep, 601, "gate", "opendev-upload-docker-image")
	if up.Result != runner.Success {
		t.Fatalf("upload: %s: %s", up.Result, up.Message)
	}
	staged := map[string]string{}
	for _, tag := range []string{"latest", "v1"} {
		d := digestOf(t, w.target, "myorg/app:change_601_"+tag)
		if d == "" {
			t.Fatalf("myorg/app:change_601_%s was not staged in the target registry", tag)
		}
		if final := digestOf(t, w.target, "myorg/app:"+tag); final != "" {
			t.Errorf("myorg/app:%s exists before the promote (%s)", tag, final)
		}
		staged[tag] = d
	}
	// What was staged is what the gate built (and handed to later changes).
	for i, a := range up.ImageArtifacts() {
		tag := []string{"latest", "v1"}[i]
		if ir := digestOf(t, w.ir, artifactTag(t, a, w.ir, up, "myorg/app", tag)); ir != staged[tag] {
			t.Errorf("staged %s is %s, the gate's image is %s", tag, staged[tag], ir)
		}
	}

	promote, err := w.env.Queue(change("promote", "opendev-promote-docker-image"))
	if err != nil {
		t.Fatal(err)
	}
	rep = w.run(promote)
	pr := build(t, rep, 601, "promote", "opendev-promote-docker-image")
	if pr.Result != runner.Success {
		t.Fatalf("promote: %s: %s", pr.Result, pr.Message)
	}
	for tag, d := range staged {
		if got := digestOf(t, w.target, "myorg/app:"+tag); got != d {
			t.Errorf("myorg/app:%s is %q after the promote, want the staged digest %s", tag, got, d)
		}
		if got := digestOf(t, w.target, "myorg/app:change_601_"+tag); got != "" {
			t.Errorf("the change tag change_601_%s is still there (%s)", tag, got)
		}
	}
	if got := digestOf(t, w.target, "myorg/app:change_99_latest"); got != "" {
		t.Errorf("the stale change tag change_99_latest (48 hours old, %s) was not swept", stale)
	}
	if got := digestOf(t, w.target, "myorg/app:change_150_latest"); got != fresh {
		t.Errorf("the fresh change tag change_150_latest (1 hour old) was swept or changed: %q, want %s", got, fresh)
	}
	if got := digestOf(t, w.target, "myorg/app:stable"); got != stable {
		t.Errorf("the non-staging tag stable was touched: %q, want %s", got, stable)
	}
	if len(pr.Phases) == 0 {
		t.Fatal("the promote job ran no playbook")
	}
	w.checkNoSecrets(w.target.Password, w.ir.Password)
}
