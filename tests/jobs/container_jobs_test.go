package jobs

import (
	"strings"
	"testing"
)

// TestContainerJobs: the container-image family's jobs are wired as the
// docker family's, with their own playbooks: the opendev build job starts
// or reuses the buildset registry, pulls the changes ahead it requires,
// builds, and pushes to the intermediate registry after; the upload runs
// before the registry's post-run; the intermediate registry secret never
// reaches the build's playbooks.
func TestContainerJobs(t *testing.T) {
	t.Parallel()
	l := loadLayout(t, repoRoot(t))
	build, err := l.Freeze("opendev-build-container-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(build.Provides, ",") != "container-image" || strings.Join(build.Requires, ",") != "docker-image,container-image" {
		t.Errorf("opendev-build-container-image provides %v requires %v", build.Provides, build.Requires)
	}
	wantPhases := []string{
		"pre-run playbooks/buildset-registry/pre.yaml", "pre-run playbooks/buildset-registry/pull.yaml",
		"pre-run playbooks/container-image/pre.yaml", "run playbooks/container-image/run.yaml",
		"post-run playbooks/buildset-registry/post.yaml",
	}
	if got := build.Phases(); strings.Join(got, "|") != strings.Join(wantPhases, "|") {
		t.Errorf("opendev-build-container-image phases:\n got %v\nwant %v", got, wantPhases)
	}
	for _, pb := range append(append(build.PreRun, build.Run...), build.PostRun...) {
		_, has := pb.Secrets["intermediate_registry"]
		want := !strings.HasPrefix(pb.Name, "playbooks/container-image/")
		if has != want {
			t.Errorf("%s: intermediate_registry secret present=%v, want %v", pb.Name, has, want)
		}
	}
	upload, err := l.Freeze("opendev-upload-container-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := upload.Phases(); got[len(got)-2] != "post-run playbooks/container-image/upload.yaml" {
		t.Errorf("the upload must run before the registry's post-run (push, stop): %v", got)
	}
	generic, err := l.Freeze("upload-container-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	want := "pre-run playbooks/container-image/pre.yaml|run playbooks/container-image/run.yaml|" +
		"post-run playbooks/container-image/upload.yaml|post-run playbooks/container-image/post.yaml"
	if got := strings.Join(generic.Phases(), "|"); got != want {
		t.Errorf("upload-container-image phases:\n got %s\nwant %s", got, want)
	}
	// mirror-container-images as upstream wires it: a pre-run (upstream's
	// installs skopeo; ours checks the image list) and the run on the
	// job's nodes.
	mirror, err := l.Freeze("mirror-container-images", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	want = "pre-run playbooks/container-image/mirror-pre.yaml|run playbooks/container-image/mirror.yaml"
	if got := strings.Join(mirror.Phases(), "|"); got != want {
		t.Errorf("mirror-container-images phases:\n got %s\nwant %s", got, want)
	}
}
