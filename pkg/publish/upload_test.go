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

// TestUpload stages an image and a multi-platform index from the buildset
// registry on Debian's docker-registry: digests unchanged, check mode
// writes nothing, a second run changes nothing.
func TestUpload(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Distribution(t)
	app := image(t, "42", "app", time.Now())
	multi := index(t, "42", "multi", time.Now())
	for _, tag := range []string{"latest", "1.0"} {
		brReg.Push(t, "myorg/app:"+tag, app)
	}
	brReg.Push(t, "quay.io/myorg/multi:latest", multi)
	spec := publish.UploadSpec{
		Images: []zuul.Image{
			{Repository: "myorg/app", Tags: []string{"latest", "1.0"}},
			{Repository: "quay.io/myorg/multi", Tags: []string{"latest"}},
		},
		Target:           publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials:      publish.Credentials{Username: target.Username, Password: target.Password, Repository: "^(quay.io/)?myorg/"},
		Zuul:             zuul.Vars{Change: "42", Pipeline: "gate"},
		Promote:          true,
		BuildsetRegistry: br,
		Jobs:             8,
	}
	ctx := context.Background()
	res, err := publish.Upload(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Uploads) != 3 || target.Digest(t, "myorg/app:change_42_latest") != "" {
		t.Fatalf("check mode: changed %v, %d uploads, target %q", res.Changed, len(res.Uploads), target.Digest(t, "myorg/app:change_42_latest"))
	}
	res, err = publish.Upload(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"myorg/app:change_42_latest": testenv.DigestOf(t, app), "myorg/app:change_42_1.0": testenv.DigestOf(t, app),
		"quay.io/myorg/multi:change_42_latest": testenv.DigestOf(t, multi),
	}
	for ref, d := range want {
		if got := target.Digest(t, ref); got != d {
			t.Errorf("%s = %q, want %s", ref, got, d)
		}
	}
	for _, tag := range []string{"myorg/app:latest", "myorg/app:1.0", "quay.io/myorg/multi:latest"} {
		if target.Digest(t, tag) != "" {
			t.Errorf("%s was uploaded although promotion is on", tag)
		}
	}
	for _, u := range res.Uploads {
		if !u.Changed || u.Digest != want[strings.TrimPrefix(u.Reference, target.Host+"/")] {
			t.Errorf("upload %+v", u)
		}
	}
	res, err = publish.Upload(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("second upload changed: %+v", res.Uploads)
	}

	// A release: promotion off, the final tags directly.
	spec.Promote = false
	res, err = publish.Upload(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || target.Digest(t, "quay.io/myorg/multi:latest") != testenv.DigestOf(t, multi) {
		t.Errorf("release upload: changed %v", res.Changed)
	}
}

// TestUploadPeriodic: with no change, the staging tag is <pipeline>_<tag>,
// copied from the tag the build pushed (upstream pushed a local tag that
// did not exist).
func TestUploadPeriodic(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Ours(t)
	app := image(t, "", "nightly", time.Now())
	brReg.Push(t, "myorg/app:latest", app)
	_, err := publish.Upload(context.Background(), publish.UploadSpec{
		Images:      []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: creds(target), Zuul: zuul.Vars{Pipeline: "periodic"}, Promote: true, BuildsetRegistry: br,
		Jobs: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := target.Digest(t, "myorg/app:periodic_latest"); got != testenv.DigestOf(t, app) {
		t.Errorf("periodic_latest = %q", got)
	}
}

// TestUploadNothingOnBadInput: a repository out of bounds, an image
// missing in the buildset registry or wrong credentials fail the whole
// upload before anything reaches the target.
func TestUploadNothingOnBadInput(t *testing.T) {
	t.Parallel()
	brReg, br := buildsetRegistry(t)
	target := transfertest.Ours(t)
	brReg.Push(t, "myorg/app:latest", image(t, "42", "app", time.Now()))
	brReg.Push(t, "myorg/lib:latest", image(t, "42", "lib", time.Now()))
	good := publish.UploadSpec{
		Images: []zuul.Image{
			{Repository: "myorg/app", Tags: []string{"latest"}},
			{Repository: "myorg/lib", Tags: []string{"latest"}},
		},
		Target:      publish.Target{Registry: target.Host, Cert: string(target.CA)},
		Credentials: creds(target), Zuul: zuul.Vars{Change: "42", Pipeline: "gate"}, Promote: true, BuildsetRegistry: br,
		Jobs: 8,
	}
	tests := []struct {
		name   string
		modify func(s *publish.UploadSpec)
		want   []string
	}{
		{"repository out of bounds", func(s *publish.UploadSpec) {
			s.Credentials.Repository = "^myorg/app$"
		}, []string{"docker_images[1] (myorg/lib): repository myorg/lib not permitted by docker_credentials.repository \"^myorg/app$\""}},
		{"image missing in the buildset registry", func(s *publish.UploadSpec) {
			s.Images[1].Tags = []string{"latest", "2.0"}
		}, []string{"docker_images[1] (myorg/lib), tag 2.0: " + br.Address() + "/myorg/lib:2.0 is not in the buildset registry"}},
		{"wrong password", func(s *publish.UploadSpec) { s.Credentials.Password = "wrong-password-5" }, []string{"401"}},
		{"no buildset registry", func(s *publish.UploadSpec) { s.BuildsetRegistry = nil }, []string{"buildset_registry is not set"}},
		{"the same target twice", func(s *publish.UploadSpec) {
			s.Images[1] = zuul.Image{Repository: "docker.io/myorg/app", Tags: []string{"latest"}}
			s.Target = publish.Target{Registry: "docker.io", URL: "https://" + target.Host, Cert: string(target.CA)}
		}, []string{"docker_images[1] (docker.io/myorg/app), tag latest: uploads to docker.io/myorg/app:change_42_latest, as docker_images[0] (myorg/app), tag latest does"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Images = append([]zuul.Image(nil), good.Images...)
			tc.modify(&s)
			_, err := publish.Upload(context.Background(), s)
			checkError(t, err, "wrong-password-5", tc.want...)
			for _, ref := range []string{"myorg/app:change_42_latest", "myorg/lib:change_42_latest"} {
				if target.Digest(t, ref) != "" {
					t.Errorf("%s was uploaded", ref)
				}
			}
		})
	}
}
