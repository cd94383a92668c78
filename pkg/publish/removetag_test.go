package publish_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestRemoveTagQuaySweep sweeps a quay repository of 105 tags (two pages of
// quay's listing): check mode removes nothing; the real run removes every
// tag matching the default expression (change_ and the pipeline's) whose
// last_modified is past the age, on both pages, and nothing else; a second
// run changes nothing.
func TestRemoveTagQuaySweep(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	now := time.Now()
	img := image(t, "", "sweep", now)
	var old, fresh []string
	for i := 1; i <= 102; i++ {
		tag := fmt.Sprintf("change_%d_latest", i)
		qreg.Push(t, "myorg/app:"+tag, img)
		if i%2 == 0 {
			old = append(old, tag)
		} else {
			fresh = append(fresh, tag)
		}
	}
	for _, tag := range []string{"gate_latest", "v1", "gatekeeper_x"} {
		qreg.Push(t, "myorg/app:"+tag, img)
	}
	old = append(old, "gate_latest")
	for _, tag := range append([]string{"v1", "gatekeeper_x"}, old...) {
		q.SetLastModified("myorg/app", tag, now.Add(-25*time.Hour))
	}
	spec := publish.RemoveTagSpec{Repository: "quay.io/myorg/app",
		Credentials: publish.ContainerCredentials{"quay.io": quayCreds(qreg, q, "rw-token-5e1f")},
		Zuul:        zuul.Vars{Pipeline: "gate"}}
	ctx := context.Background()

	res, err := publish.RemoveTag(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Removed) != len(old) || res.Type != publish.RegistryQuay || res.Regex != "^change_.*$|^gate_.*$" {
		t.Fatalf("check mode: changed %v, %d removed (want %d), type %s, regex %s", res.Changed, len(res.Removed), len(old), res.Type, res.Regex)
	}
	if qreg.Digest(t, "myorg/app:"+old[0]) == "" {
		t.Fatal("check mode removed a tag")
	}

	res, err = publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Removed) != len(old) {
		t.Errorf("removed %d tags, want %d: %+v", len(res.Removed), len(old), res.Removed)
	}
	for _, d := range res.Removed {
		if !d.Deleted || d.AgeSeconds < 25*3600-60 {
			t.Errorf("removed %+v: want deleted, 25 hours old", d)
		}
	}
	for _, tag := range old {
		if qreg.Digest(t, "myorg/app:"+tag) != "" {
			t.Errorf("%s is still there", tag)
		}
	}
	for _, tag := range append([]string{"v1", "gatekeeper_x"}, fresh...) {
		if qreg.Digest(t, "myorg/app:"+tag) == "" {
			t.Errorf("%s was removed", tag)
		}
	}
	res, err = publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || len(res.Removed) != 0 {
		t.Errorf("second run: %+v", res)
	}
}

// TestRemoveTagQuayScope: one tag through quay's API with a token that may
// write, then again (changed false); a token without the delete scope
// fails naming it, with the tag in place.
func TestRemoveTagQuayScope(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	qreg.Push(t, "myorg/app:change_7_latest", image(t, "7", "scope", time.Now()))
	spec := publish.RemoveTagSpec{Repository: "quay.io/myorg/app", Tag: "change_7_latest",
		Credentials: publish.ContainerCredentials{"quay.io": quayCreds(qreg, q, "ro-token-77aa")}}
	ctx := context.Background()
	_, err := publish.RemoveTag(ctx, spec)
	checkError(t, err, "ro-token-77aa", "nothing was removed", `container_registry_credentials["quay.io"].api_token may not delete tags of myorg/app`, "repo:write")
	if qreg.Digest(t, "myorg/app:change_7_latest") == "" {
		t.Fatal("the tag was removed with a read-only token")
	}
	spec.Credentials["quay.io"] = quayCreds(qreg, q, "rw-token-5e1f")
	res, err := publish.RemoveTag(ctx, spec, publish.WithDiff(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Removed) != 1 || !res.Removed[0].Deleted || res.Removed[0].Digest == "" ||
		len(res.Diff) != 1 || !strings.Contains(res.Diff[0].After, "quay.io/myorg/app:change_7_latest -> (removed)") {
		t.Errorf("result: %+v", res)
	}
	if qreg.Digest(t, "myorg/app:change_7_latest") != "" {
		t.Error("the tag is still there")
	}
	res, err = publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || !strings.Contains(res.Msg, "does not exist") {
		t.Errorf("second run: %+v", res)
	}
}

// TestRemoveTagDockerHub removes one tag and sweeps through Docker Hub's
// web API (emulated), with the type inferred from docker.io and ages from
// last_updated; a wrong password fails before anything is removed.
func TestRemoveTagDockerHub(t *testing.T) {
	t.Parallel()
	reg, hub := dockerHub(t)
	now := time.Now()
	img := image(t, "", "hub", now)
	for _, tag := range []string{"change_1_latest", "change_2_latest", "change_3_latest", "latest"} {
		reg.Push(t, "myorg/app:"+tag, img)
	}
	hub.SetLastUpdated("myorg/app", "change_2_latest", now.Add(-48*time.Hour))
	hub.SetLastUpdated("myorg/app", "latest", now.Add(-48*time.Hour))
	creds := func(password string) publish.ContainerCredentials {
		return publish.ContainerCredentials{"docker.io": {Username: reg.Username, Password: password,
			RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + reg.Host, Cert: string(reg.CA)}}}
	}
	ctx := context.Background()
	// The API URL as upstream's variable spells it, with /v2.
	spec := publish.RemoveTagSpec{Repository: "docker.io/myorg/app", Tag: "change_1_latest", APIURL: hub.URL + "/v2", Credentials: creds("wrong")}
	_, err := publish.RemoveTag(ctx, spec)
	checkError(t, err, "wrong", `container_registry_credentials["docker.io"] (`+reg.Username+`): logging in to Docker Hub's web API`)
	if reg.Digest(t, "myorg/app:change_1_latest") == "" {
		t.Fatal("removed with a wrong password")
	}
	spec.Credentials = creds(reg.Password)
	res, err := publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Type != publish.RegistryDocker || reg.Digest(t, "myorg/app:change_1_latest") != "" {
		t.Errorf("single tag: %+v", res)
	}
	spec.Tag = ""
	res, err = publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Tag != "change_2_latest" || !res.Removed[0].Deleted {
		t.Errorf("sweep: %+v", res.Removed)
	}
	for tag, present := range map[string]bool{"change_2_latest": false, "change_3_latest": true, "latest": true} {
		if got := reg.Digest(t, "myorg/app:"+tag) != ""; got != present {
			t.Errorf("%s present = %v, want %v", tag, got, present)
		}
	}
	res, err = publish.RemoveTag(ctx, spec)
	if err != nil || res.Changed {
		t.Errorf("second sweep: %+v, %v", res, err)
	}
}

// TestRemoveTagGeneric removes one tag through the distribution API of
// imagegate's registry: the other tag of the same manifest stays; a sweep
// ages tags by their image's creation time; second runs change nothing.
func TestRemoveTagGeneric(t *testing.T) {
	t.Parallel()
	ours := transfertest.Ours(t)
	now := time.Now()
	img := image(t, "5", "generic", now)
	ours.Push(t, "myorg/app:change_5_latest", img)
	ours.Push(t, "myorg/app:latest", img)
	ours.Push(t, "myorg/app:change_4_latest", image(t, "4", "old", now.Add(-30*time.Hour)))
	ours.Push(t, "myorg/app:change_6_latest", image(t, "6", "new", now.Add(-time.Hour)))
	creds := publish.ContainerCredentials{ours.Host: {Username: ours.Username, Password: ours.Password, Repository: "^" + ours.Host + "/myorg/",
		RegistryEndpoint: publish.RegistryEndpoint{Cert: string(ours.CA)}}}
	spec := publish.RemoveTagSpec{Repository: ours.Host + "/myorg/app", Tag: "change_5_latest", Credentials: creds}
	ctx := context.Background()
	res, err := publish.RemoveTag(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Type != publish.RegistryGeneric || len(res.Removed) != 1 || res.Removed[0].Digest != ours.Digest(t, "myorg/app:latest") {
		t.Errorf("result: %+v", res)
	}
	if ours.Digest(t, "myorg/app:change_5_latest") != "" || ours.Digest(t, "myorg/app:latest") == "" {
		t.Error("want change_5_latest removed and latest kept")
	}
	if res, err = publish.RemoveTag(ctx, spec); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
	spec.Tag = ""
	if res, err = publish.RemoveTag(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Tag != "change_4_latest" || ours.Digest(t, "myorg/app:change_6_latest") == "" {
		t.Errorf("sweep: %+v", res.Removed)
	}
	if res, err = publish.RemoveTag(ctx, spec); err != nil || res.Changed {
		t.Errorf("second sweep: %+v, %v", res, err)
	}
}

// TestRemoveTagNoSingleTagDelete: Debian's docker-registry (distribution
// 2.8) cannot delete one tag: a warning, and no manifest delete (the other
// tag of the manifest stays).
func TestRemoveTagNoSingleTagDelete(t *testing.T) {
	t.Parallel()
	dist := transfertest.Distribution(t)
	img := image(t, "5", "dist", time.Now())
	dist.Push(t, "myorg/app:change_5_latest", img)
	dist.Push(t, "myorg/app:latest", img)
	spec := publish.RemoveTagSpec{Repository: dist.Host + "/myorg/app", Tag: "change_5_latest",
		Credentials: publish.ContainerCredentials{dist.Host: {Username: dist.Username, Password: dist.Password,
			RegistryEndpoint: publish.RegistryEndpoint{Cert: string(dist.CA)}}}}
	res, err := publish.RemoveTag(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "cannot delete a single tag") ||
		len(res.Removed) != 1 || res.Removed[0].Deleted {
		t.Errorf("result: %+v", res)
	}
	if dist.Digest(t, "myorg/app:change_5_latest") == "" || dist.Digest(t, "myorg/app:latest") == "" {
		t.Error("a tag is gone: the manifest was deleted")
	}
}

// TestRemoveTagBadInput: every bad input fails before anything is sent,
// naming the parameter and what to fix.
func TestRemoveTagBadInput(t *testing.T) {
	t.Parallel()
	base := func() publish.RemoveTagSpec {
		return publish.RemoveTagSpec{Repository: "quay.io/myorg/app", Tag: "change_1_latest",
			Credentials: publish.ContainerCredentials{
				"quay.io":                    {APIToken: "tok-secret-1", Repository: "^quay.io/myorg/"},
				"registry.invalid":           {Username: "u", Password: "pw-secret-2"},
				"docker.io":                  {Username: "u"},
				"registry.invalid:5000":      {Username: "u", Password: "pw-secret-2", Type: publish.RegistryGeneric},
				"hub-as-generic.docker.io":   {Username: "u", Password: "pw-secret-2", Type: publish.RegistryGeneric},
				"quay-without-token.quay.io": {Username: "u", Password: "pw-secret-2"},
			}}
	}
	tests := []struct {
		name   string
		modify func(s *publish.RemoveTagSpec)
		want   string
	}{
		{"repository without a slash", func(s *publish.RemoveTagSpec) { s.Repository = "app" },
			`remove_registry_tag_repository "app" must be the full repository, registry included`},
		{"no credentials entry", func(s *publish.RemoveTagSpec) { s.Repository = "ghcr.io/myorg/app" },
			`remove_registry_tag_repository ghcr.io/myorg/app: container_registry_credentials has no entry for registry "ghcr.io"`},
		{"regex that does not compile", func(s *publish.RemoveTagSpec) { s.Tag, s.Regex = "", "^change_(" },
			`remove_registry_tag_regex "^change_(" is not a valid regular expression`},
		{"python-only regex", func(s *publish.RemoveTagSpec) { s.Tag, s.Regex = "", `^(change)_\1` },
			`remove_registry_tag_regex "^(change)_\\1": backreference \1 is not supported`},
		{"outside the entry's repository", func(s *publish.RemoveTagSpec) { s.Repository = "quay.io/other/app" },
			`remove_registry_tag_repository: quay.io/other/app not permitted by container_registry_credentials["quay.io"].repository ^quay.io/myorg/`},
		{"invalid tag", func(s *publish.RemoveTagSpec) { s.Tag = "a:b" }, `remove_registry_tag_tag "a:b" is not a valid tag`},
		{"negative age", func(s *publish.RemoveTagSpec) { s.Tag, s.Age = "", -time.Second }, "remove_registry_tag_age must not be negative"},
		{"quay without token", func(s *publish.RemoveTagSpec) { s.Repository = "quay-without-token.quay.io/myorg/app" },
			`container_registry_credentials["quay-without-token.quay.io"].api_token is not set`},
		{"docker without password", func(s *publish.RemoveTagSpec) { s.Repository = "docker.io/myorg/app" },
			`container_registry_credentials["docker.io"] needs username and password`},
		{"api url on generic", func(s *publish.RemoveTagSpec) {
			s.Repository, s.APIURL = "registry.invalid:5000/myorg/app", "https://api.invalid"
		}, "remove_registry_tag_api_url is set, but registry.invalid:5000 is of type generic"},
		{"plain http api url", func(s *publish.RemoveTagSpec) { s.APIURL = "http://quay.invalid/api/v1" },
			`remove_registry_tag_api_url "http://quay.invalid": must be https://`},
		{"generic on Docker Hub", func(s *publish.RemoveTagSpec) {
			s.Credentials["docker.io"] = publish.RegistryCredentials{Username: "u", Password: "pw-secret-2", Type: publish.RegistryGeneric}
			s.Repository = "docker.io/myorg/app"
		}, `container_registry_credentials["docker.io"].type is generic, but Docker Hub removes tags only through its web API`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec := base()
			tc.modify(&spec)
			_, err := publish.RemoveTag(context.Background(), spec)
			checkError(t, err, "pw-secret-2", tc.want)
			if err != nil && strings.Contains(err.Error(), "tok-secret-1") {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}
