package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/runner"
)

// remoteOpts reads from a test registry with its write user.
func remoteOpts(r *registrytest.Registry) []remote.Option {
	return []remote.Option{
		remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}),
		remote.WithTransport(r.Transport()),
		remote.WithContext(context.Background()),
	}
}

// digestOf returns the digest of repo:tag in a test registry, or "".
func digestOf(t *testing.T, r *registrytest.Registry, ref string) string {
	t.Helper()
	n, err := name.ParseReference(r.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(n, remoteOpts(r)...)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

// artifactTag checks one artifact returned by push-to-intermediate-registry
// (upstream's shape) and returns the intermediate registry's tag it names.
func artifactTag(t *testing.T, a map[string]any, ir *registrytest.Registry, build *runner.BuildReport, repo, tag string) string {
	t.Helper()
	wantURL := "docker://127.0.0.1:" + strconv.Itoa(ir.Port) + "/" + repo + ":" + build.UUID + "_" + tag
	meta, _ := a["metadata"].(map[string]any)
	if a["name"] != repo+":"+tag || a["url"] != wantURL || meta["type"] != "container_image" ||
		meta["repository"] != repo || meta["tag"] != tag {
		t.Errorf("artifact %v, want name %s:%s url %s metadata {container_image %s %s}", a, repo, tag, wantURL, repo, tag)
	}
	return repo + ":" + build.UUID + "_" + tag
}

// TestProducersOnly runs opendev-build-docker-image alone: the job starts
// its own buildset registry, builds the image into it, pushes it to the
// intermediate registry with an artifact in upstream's shape, and stops the
// registry. The image carries an SPDX SBOM listing the Debian package its
// dpkg database holds: ensure-buildkit installed the scanner from the
// release tree on the node, and the build ran it.
func TestProducersOnly(t *testing.T) {
	w := newWorld(t)
	para, version := hostPackage(t, "busybox-static")
	app := w.project("app", func(dir string) error {
		if err := lab.WriteApp(dir, "producers only", true); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(para), 0o644); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, "Dockerfile"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("COPY status /var/lib/dpkg/status\n")
		return err
	})
	queue, err := w.env.Queue(lab.Change{
		Project: "myorg/app", Number: 301, Src: app,
		Vars: map[string]any{"docker_images": lab.Images("myorg/app", "latest", "v1")},
		Jobs: []any{"opendev-build-docker-image"},
	}, lab.Change{
		// zuul-jobs' generic job, without the intermediate registry.
		Project: "myorg/app", Number: 302, Src: app,
		Vars: map[string]any{"docker_images": lab.Images("myorg/app")},
		Jobs: []any{map[string]any{"upload-docker-image": lab.UploadCredentials()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := w.run(queue)
	b := build(t, rep, 301, "", "opendev-build-docker-image")
	if b.Result != runner.Success {
		t.Fatalf("opendev-build-docker-image: %s: %s", b.Result, b.Message)
	}
	if b.Paused <= 0 {
		t.Errorf("the job started its own registry, so it pauses (and, without dependents, resumes at once): %+v", b)
	}
	arts := b.ImageArtifacts()
	if len(arts) != 2 {
		t.Fatalf("artifacts = %v, want one per tag", b.Artifacts())
	}
	for i, tag := range []string{"latest", "v1"} {
		irTag := artifactTag(t, arts[i], w.ir, b, "myorg/app", tag)
		if digestOf(t, w.ir, irTag) == "" {
			t.Errorf("%s is not in the intermediate registry", irTag)
			continue
		}
		if pkgs := spdxPackages(t, w.ir, irTag); !slices.Contains(pkgs, "busybox-static "+version) {
			t.Errorf("%s: the SBOM lists %q, want busybox-static %s", irTag, pkgs, version)
		}
	}
	if !regexp.MustCompile(`Install the SBOM scanner image\][^\n]*\n[^\n]*(changed|ok): \[`).MatchString(w.out.String()) {
		t.Error("ensure-buildkit did not install the SBOM scanner image from the release tree")
	}
	// The registry the job started is gone.
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(w.env.BuildsetRegistryPort)), time.Second)
	if err == nil {
		c.Close()
		t.Errorf("the buildset registry still listens on port %d after the job", w.env.BuildsetRegistryPort)
	}
	if !strings.Contains(w.out.String(), "Stop the buildset registry") {
		t.Error("the registry was not stopped by the job's post-run playbook")
	}

	up := build(t, rep, 302, "", "upload-docker-image")
	if up.Result != runner.Success {
		t.Fatalf("upload-docker-image: %s: %s", up.Result, up.Message)
	}
	if len(up.Artifacts()) != 0 {
		t.Errorf("the generic job has no intermediate registry, yet returned artifacts %v", up.Artifacts())
	}
	if d := digestOf(t, w.target, "myorg/app:change_302_latest"); d == "" {
		t.Error("upload-docker-image did not stage myorg/app:change_302_latest")
	}
	var posts []string
	for _, ph := range up.Phases {
		if ph.Phase == "post" {
			posts = append(posts, ph.Playbook)
		}
	}
	if strings.Join(posts, ",") != "playbooks/docker-image/upload.yaml,playbooks/docker-image/post.yaml" {
		t.Errorf("upload-docker-image post-run playbooks: %v", posts)
	}
}
