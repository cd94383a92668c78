package e2e

import (
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/pkg/runner"
)

// TestProducersAndConsumers: opendev-buildset-registry, a build job and two
// test jobs on one node. The registry job starts the registry and pauses;
// the build job builds into it; myorg-test-app (use-buildset-registry role)
// and myorg-test-app-direct (imagegate's modules called from its own
// playbook) pull myorg/app through dockerd's mirror, the buildset registry,
// and run it. The registry job resumes and stops the registry once they are
// done.
func TestProducersAndConsumers(t *testing.T) {
	w := newWorld(t)
	marker := "myorg/app of change 501: " + nonce(t)
	app := w.project("app", func(dir string) error { return lab.WriteApp(dir, marker, true) })
	dep := func(d string) map[string]any { return map[string]any{"dependencies": []any{d}} }
	queue, err := w.env.Queue(lab.Change{
		Project: "myorg/app", Number: 501, Src: app,
		Vars: map[string]any{"docker_images": lab.Images("myorg/app")},
		Jobs: []any{
			"opendev-buildset-registry",
			map[string]any{"opendev-build-docker-image": dep("opendev-buildset-registry")},
			map[string]any{"myorg-test-app": dep("opendev-build-docker-image")},
			map[string]any{"myorg-test-app-direct": dep("opendev-build-docker-image")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := w.run(queue)
	if rep.Failed() {
		t.Fatalf("the queue failed:\n%s", rep.Summary())
	}
	reg := build(t, rep, 501, "", "opendev-buildset-registry")
	bld := build(t, rep, 501, "", "opendev-build-docker-image")
	if reg.Paused <= 0 {
		t.Errorf("opendev-buildset-registry did not pause: %+v", reg)
	}
	if bld.Paused != 0 {
		t.Errorf("the build job used the registry job's registry, so it must not pause (paused %v)", bld.Paused)
	}
	// The registry job's post-run (the stop) ran after every consumer.
	regEnd := reg.Start.Add(reg.Duration)
	arts := bld.ImageArtifacts()
	if len(arts) != 1 {
		t.Fatalf("build artifacts = %v", arts)
	}
	appDigest := digestOf(t, w.ir, artifactTag(t, arts[0], w.ir, bld, "myorg/app", "latest"))
	for _, job := range []string{"myorg-test-app", "myorg-test-app-direct"} {
		b := build(t, rep, 501, "", job)
		if b.Result != runner.Success {
			t.Errorf("%s: %s %s", job, b.Result, b.Message)
			continue
		}
		if end := b.Start.Add(b.Duration); end.After(regEnd) {
			t.Errorf("%s ended after the registry job (%v > %v)", job, end, regEnd)
		}
		output, digests := labTest(t, b)
		if !strings.Contains(output, marker) || !strings.Contains(output, "standalone base") {
			t.Errorf("%s: myorg/app printed %q, want %q", job, output, marker)
		}
		found := false
		for _, d := range digests {
			found = found || strings.HasSuffix(d, "@"+appDigest)
		}
		if !found {
			t.Errorf("%s ran myorg/app %v, want the image just built (%s)", job, digests, appDigest)
		}
	}
}
