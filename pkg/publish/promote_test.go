package publish_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

func creds(r registry) publish.Credentials {
	return publish.Credentials{Username: r.Username, Password: r.Password}
}

func TestPromoteValidation(t *testing.T) {
	t.Parallel()
	good := publish.PromoteSpec{
		Images:      []zuul.Image{{Context: ".", Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: "registry.invalid:5000"},
		Credentials: publish.Credentials{Username: "u", Password: "secret-pw-1"},
		Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		Jobs:        8,
	}
	tests := []struct {
		name   string
		modify func(s *publish.PromoteSpec)
		want   []string
	}{
		{"no images", func(s *publish.PromoteSpec) { s.Images = nil }, []string{"docker_images is empty"}},
		{"no password", func(s *publish.PromoteSpec) { s.Credentials.Password = "" }, []string{"docker_credentials.username and docker_credentials.password are required"}},
		{"repository not permitted", func(s *publish.PromoteSpec) {
			s.Credentials.Repository = "^myorg/lib"
			s.Images = append(s.Images, zuul.Image{Repository: "myorg/lib", Tags: []string{"latest"}})
		}, []string{"nothing was promoted", "docker_images[0] (myorg/app): repository myorg/app not permitted by docker_credentials.repository \"^myorg/lib\""}},
		{"malformed regex", func(s *publish.PromoteSpec) { s.Credentials.Repository = "^myorg/(" }, []string{"docker_credentials.repository \"^myorg/(\" is not a valid regular expression"}},
		{"duplicate tag", func(s *publish.PromoteSpec) { s.Images[0].Tags = []string{"latest", "v1", "latest"} }, []string{"docker_images[0] (myorg/app): tag \"latest\" is listed twice"}},
		{"same tag in two entries", func(s *publish.PromoteSpec) {
			s.Images = append(s.Images, zuul.Image{Repository: "myorg/app", Tags: []string{"latest"}})
		}, []string{"docker_images[1] (myorg/app): tag \"latest\" is also promoted by docker_images[0]"}},
		{"staging-looking tag", func(s *publish.PromoteSpec) { s.Images[0].Tags = []string{"change_3_latest"} }, []string{"has the form of a staging tag"}},
		{"no change nor pipeline", func(s *publish.PromoteSpec) { s.Zuul = zuul.Vars{} }, []string{"zuul.change and zuul.pipeline are both empty"}},
		{"registry with scheme", func(s *publish.PromoteSpec) { s.Target.Registry = "https://quay.io" }, []string{"docker_registry \"https://quay.io\": give the registry as host[:port]"}},
		{"plain http endpoint", func(s *publish.PromoteSpec) { s.Target.URL = "http://127.0.0.1:5000" }, []string{"docker_registry_url \"http://127.0.0.1:5000\": must be https://"}},
		{"hub url for another registry", func(s *publish.PromoteSpec) { s.HubURL = "https://127.0.0.1:1" }, []string{"docker_hub_url is set but docker_registry"}},
		{"docker hub three levels", func(s *publish.PromoteSpec) {
			s.Target = publish.Target{Registry: "docker.io"}
			s.Images[0].Repository = "a/b/c"
		}, []string{"Docker Hub repositories are <namespace>/<name>"}},
		{"sweep age", func(s *publish.PromoteSpec) { s.Sweep = true }, []string{"stale tag age must be positive"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := good
			s.Images = append([]zuul.Image(nil), good.Images...)
			s.Images[0].Tags = append([]string(nil), good.Images[0].Tags...)
			tc.modify(&s)
			_, err := publish.Promote(context.Background(), s)
			checkError(t, err, "secret-pw-1", tc.want...)
		})
	}
}

// TestPromoteDistribution28 promotes on Debian's docker-registry, which
// cannot delete a single tag: the images are promoted, the staging tags
// stay with a warning, and nothing is deleted by digest.
func TestPromoteDistribution28(t *testing.T) {
	t.Parallel()
	reg := transfertest.Distribution(t)
	now := time.Now()
	app := image(t, "12", "app change 12", now)
	multi := index(t, "12", "multi change 12", now)
	old := image(t, "3", "app change 3", now.Add(-72*time.Hour))
	reg.Push(t, "myorg/app:change_12_latest", app)
	reg.Push(t, "myorg/app:change_12_v1", app)
	reg.Push(t, "myorg/app:change_3_latest", old)
	reg.Push(t, "myorg/app:v0.9", old)
	reg.Push(t, "myorg/multi:change_12_latest", multi)
	spec := publish.PromoteSpec{
		Images: []zuul.Image{
			{Repository: "myorg/app", Tags: []string{"latest", "v1"}},
			{Repository: "myorg/multi", Tags: []string{"latest"}},
		},
		Target:      publish.Target{Registry: reg.Host, Cert: string(reg.CA)},
		Credentials: creds(reg),
		Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		Sweep:       true, StaleAge: 24 * time.Hour,
		Jobs: 8,
	}
	ctx := context.Background()

	// Check mode reads and decides; it writes nothing.
	res, err := publish.Promote(ctx, spec, publish.WithCheckMode(true), publish.WithDiff(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Promoted) != 3 || reg.Digest(t, "myorg/app:latest") != "" {
		t.Fatalf("check mode: changed %v, %d promotions, latest %q", res.Changed, len(res.Promoted), reg.Digest(t, "myorg/app:latest"))
	}
	if len(res.Diff) != 1 || !strings.Contains(res.Diff[0].After, reg.Host+"/myorg/app:latest -> "+testenv.DigestOf(t, app)) || !strings.Contains(res.Diff[0].Before, reg.Host+"/myorg/app:latest -> (absent)") {
		t.Errorf("diff: %+v", res.Diff)
	}

	res, err = publish.Promote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed {
		t.Error("first promote not changed")
	}
	for ref, want := range map[string]string{
		"myorg/app:latest": testenv.DigestOf(t, app), "myorg/app:v1": testenv.DigestOf(t, app), "myorg/multi:latest": testenv.DigestOf(t, multi),
		"myorg/app:change_12_latest": testenv.DigestOf(t, app), "myorg/app:v0.9": testenv.DigestOf(t, old), "myorg/app:change_3_latest": testenv.DigestOf(t, old),
	} {
		if got := reg.Digest(t, ref); got != want {
			t.Errorf("%s = %q, want %s", ref, got, want)
		}
	}
	var staleSeen bool
	for _, d := range res.Deleted {
		if d.Deleted {
			t.Errorf("%s reported deleted on a registry that cannot delete tags", d.Reference)
		}
		if d.Tag == "change_3_latest" && d.Reason == "stale" && d.AgeSeconds > 71*3600 {
			staleSeen = true
		}
	}
	if !staleSeen {
		t.Errorf("stale change_3_latest not found by the sweep: %+v", res.Deleted)
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "cannot delete a single tag") || !strings.Contains(w, "myorg/app:change_12_latest") {
		t.Errorf("warnings: %s", w)
	}

	// Again: nothing to move; the staging tags are still refused.
	res, err = publish.Promote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("second promote changed: %+v", res.Promoted)
	}
}

// TestPromoteMissingStagingTag: one image without its staging tag fails the
// whole promote before anything is written.
func TestPromoteMissingStagingTag(t *testing.T) {
	t.Parallel()
	reg := transfertest.Distribution(t)
	app := image(t, "12", "app", time.Now())
	reg.Push(t, "myorg/app:change_12_latest", app)
	reg.Push(t, "myorg/lib:latest", image(t, "9", "lib release", time.Now()))
	spec := publish.PromoteSpec{
		Images: []zuul.Image{
			{Repository: "myorg/app", Tags: []string{"latest"}},
			{Repository: "myorg/lib", Tags: []string{"latest"}},
			{Repository: "myorg/tool", Tags: []string{"v2"}},
		},
		Target:      publish.Target{Registry: reg.Host, Cert: string(reg.CA)},
		Credentials: creds(reg),
		Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		Jobs:        8,
	}
	_, err := publish.Promote(context.Background(), spec)
	checkError(t, err, spec.Credentials.Password,
		"nothing was promoted",
		"docker_images[1] (myorg/lib), tag latest: staging tag "+reg.Host+"/myorg/lib:change_12_latest does not exist",
		"carries org.zuul-ci.change=9, not change 12",
		"docker_images[2] (myorg/tool), tag v2: staging tag "+reg.Host+"/myorg/tool:change_12_v2 does not exist")
	if d := reg.Digest(t, "myorg/app:latest"); d != "" {
		t.Errorf("myorg/app:latest was written (%s) although the promote failed", d)
	}

	bad := spec
	bad.Images = spec.Images[:1]
	bad.Credentials.Password = "wrong"
	_, err = publish.Promote(context.Background(), bad)
	t.Logf("wrong password: %v", err)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong password: %v", err)
	}
}
