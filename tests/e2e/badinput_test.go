package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/runner"
)

// repositories lists the tags of repo in a registry run as a process, or
// nil when there are none.
func processTags(t *testing.T, p *registrytest.Process, repo string) []string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CAPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	r, err := name.NewRepository(p.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, remote.WithAuth(&authn.Basic{Username: p.Username, Password: p.Password}),
		remote.WithTransport(tr), remote.WithContext(context.Background()))
	if err != nil {
		return nil
	}
	return tags
}

// TestBadInput runs broken job configurations through the release tree:
// each fails at the first point that can know, with a message naming what
// to fix, and nothing reaches the registries.
func TestBadInput(t *testing.T) {
	w := newWorld(t)
	testAfterBuild := map[string]any{"myorg-test-app": map[string]any{"dependencies": []any{"opendev-build-docker-image"}}}

	// A job graph naming a missing playbook: the change is refused before
	// any job runs.
	broken := w.project("broken", func(dir string) error {
		if err := lab.WriteApp(dir, "broken", true); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, ".zuul.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("\n- job:\n    name: myorg-deploy\n    run: playbooks/deploy.yaml\n")
		return err
	})
	// An image without context: the build job fails before it starts a
	// registry or buildkitd, naming the entry; its dependents are skipped.
	noContext := w.project("nocontext", func(dir string) error { return lab.WriteApp(dir, "no context", true) })
	queue, err := w.env.Queue(
		lab.Change{Project: "myorg/broken", Number: 701, Src: broken,
			Vars: map[string]any{"docker_images": lab.Images("myorg/broken")},
			Jobs: []any{"opendev-build-docker-image",
				map[string]any{"myorg-deploy": map[string]any{"dependencies": []any{"opendev-build-docker-image"}}}}},
		lab.Change{Project: "myorg/app", Number: 702, Src: noContext,
			Vars: map[string]any{"docker_images": []any{map[string]any{"repository": "myorg/app", "tags": []any{"latest"}}}},
			Jobs: []any{"opendev-build-docker-image", testAfterBuild}},
	)
	if err != nil {
		t.Fatal(err)
	}
	rep := w.run(queue)

	c701 := rep.Item(701, "")
	if c701.Result != runner.ErrorResult || len(c701.Builds) != 0 ||
		!strings.Contains(c701.Message, "job myorg-deploy: playbook playbooks/deploy.yaml does not exist in project myorg/broken") {
		t.Errorf("change 701 (missing playbook): %s %q, %d builds", c701.Result, c701.Message, len(c701.Builds))
	}

	b702 := build(t, rep, 702, "", "opendev-build-docker-image")
	if b702.Result != runner.Failure || !strings.Contains(b702.Message, "docker_images[0] (myorg/app) has no context") {
		t.Errorf("change 702 build: %s %q", b702.Result, b702.Message)
	}
	// The job's first pre-run playbook stopped it (no registry, no
	// buildkitd, no build), without retries; only its post-run ran after.
	var pre []string
	for _, ph := range b702.Phases {
		if ph.Phase != "post" && ph.Job != "(runner)" {
			pre = append(pre, ph.Playbook+" "+ph.Result)
		}
	}
	if strings.Join(pre, ",") != "playbooks/buildset-registry/pre.yaml FAILURE" || b702.Attempts != 1 {
		t.Errorf("change 702 build ran %v (attempts %d): the first pre-run playbook should have stopped it, without retries", pre, b702.Attempts)
	}
	if tst := build(t, rep, 702, "", "myorg-test-app"); tst.Result != runner.Skipped {
		t.Errorf("change 702 test job: %s %s", tst.Result, tst.Message)
	}
	for _, repo := range []string{"myorg/app", "myorg/broken"} {
		if d := digestOf(t, w.ir, repo+":latest"); d != "" {
			t.Errorf("%s reached the intermediate registry", repo)
		}
	}
	if len(b702.Artifacts()) != 0 {
		t.Errorf("the failed build returned artifacts: %v", b702.Artifacts())
	}
}

// TestIntermediateRegistryDown: change A's image reaches the intermediate
// registry; the registry goes down before change B, which depends on A,
// runs. B's build job fails in its first pre-run playbook, where it copies
// A's image, with a message naming the intermediate registry; B's test job
// is skipped, and B publishes nothing.
func TestIntermediateRegistryDown(t *testing.T) {
	w := newWorld(t, withKillableIR())
	base := w.project("base", func(dir string) error { return lab.WriteBase(dir, "base "+nonce(t)) })
	app := w.project("app", func(dir string) error { return lab.WriteApp(dir, "app "+nonce(t), false) })
	queue, err := w.env.Queue(
		lab.Change{Project: "myorg/base", Number: 801, Src: base,
			Vars: map[string]any{"docker_images": lab.Images("myorg/base")},
			Jobs: []any{"opendev-build-docker-image"}},
		lab.Change{Project: "myorg/app", Number: 802, Src: app, DependsOn: []int{801},
			Vars: map[string]any{"docker_images": lab.Images("myorg/app")},
			Jobs: []any{"opendev-build-docker-image",
				map[string]any{"myorg-test-app": map[string]any{"dependencies": []any{"opendev-build-docker-image"}}}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	w.afterItem = func(it *runner.ItemReport) {
		if it.Change == 801 {
			w.irProcess.Kill()
		}
	}
	rep := w.run(queue)
	a := build(t, rep, 801, "", "opendev-build-docker-image")
	if a.Result != runner.Success || len(a.ImageArtifacts()) != 1 {
		t.Fatalf("change A: %s %q, artifacts %v", a.Result, a.Message, a.ImageArtifacts())
	}
	b := build(t, rep, 802, "", "opendev-build-docker-image")
	if b.Result == runner.Success {
		t.Fatalf("change B's build succeeded with the intermediate registry down")
	}
	if !strings.Contains(b.Message, w.env.Intermediate.Address()) ||
		!strings.Contains(b.Message, "playbooks/buildset-registry/pre.yaml") {
		t.Errorf("change B's build failed without naming the intermediate registry (%s) in its first pre-run playbook: %q",
			w.env.Intermediate.Address(), b.Message)
	}
	for _, ph := range b.Phases {
		if ph.Phase == "run" {
			t.Errorf("change B's build ran %s after the pull failed", ph.Playbook)
		}
	}
	if tst := rep.Item(802, "").Build("myorg-test-app"); tst == nil || tst.Result != runner.Skipped {
		t.Errorf("change B's test job: %+v", tst)
	}
	if len(b.Artifacts()) != 0 {
		t.Errorf("change B returned artifacts: %v", b.Artifacts())
	}
	// Nothing of B reached the intermediate registry.
	w.irProcess.Restart()
	if tags := processTags(t, w.irProcess, "myorg/app"); len(tags) != 0 {
		t.Errorf("change B published %v to the intermediate registry", tags)
	}
	if tags := processTags(t, w.irProcess, "myorg/base"); len(tags) != 1 {
		t.Errorf("change A's image: tags %v in the intermediate registry after the restart", tags)
	}
}
