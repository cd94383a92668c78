package publish_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestPromoteDockerHub promotes on emulated Docker Hub: final tags at the
// staged digests (single image and index), staging tags deleted through the
// web API, stale staging tags swept by last_updated, every other tag kept;
// check mode first, and a second run unchanged.
func TestPromoteDockerHub(t *testing.T) {
	t.Parallel()
	reg, hub := dockerHub(t)
	now := time.Now()
	app := image(t, "12", "app change 12", now)
	multi := index(t, "12", "multi change 12", now)
	other := image(t, "3", "app change 3", now.Add(-time.Hour))
	reg.Push(t, "myorg/app:change_12_latest", app)
	reg.Push(t, "myorg/app:change_12_v1", app)
	reg.Push(t, "myorg/multi:change_12_latest", multi)
	for _, tag := range []string{"change_3_latest", "change_13_latest", "periodic_latest", "periodical_x", "release_1", "v0.9"} {
		reg.Push(t, "myorg/app:"+tag, other)
	}
	for _, tag := range []string{"change_3_latest", "periodic_latest", "periodical_x", "release_1", "v0.9"} {
		hub.SetLastUpdated("myorg/app", tag, now.Add(-49*time.Hour))
	}
	hub.SetLastUpdated("myorg/app", "change_13_latest", now.Add(-23*time.Hour))
	spec := publish.PromoteSpec{
		Images: []zuul.Image{
			{Repository: "myorg/app", Tags: []string{"latest", "v1"}},
			{Repository: "docker.io/myorg/multi", Tags: []string{"latest"}},
		},
		Target:      hubTarget(hub),
		HubURL:      hub.URL,
		Jobs:        8,
		Credentials: publish.Credentials{Username: reg.Username, Password: reg.Password, Repository: "^(docker.io/)?myorg/"},
		Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		Sweep:       true, StaleAge: 24 * time.Hour, Pipelines: []string{"periodic"},
	}
	ctx := context.Background()
	tagsOf := func(repo string) []string {
		var names []string
		for _, tag := range []string{"latest", "v1", "change_12_latest", "change_12_v1", "change_3_latest", "change_13_latest", "periodic_latest", "periodical_x", "release_1", "v0.9"} {
			if reg.Digest(t, repo+":"+tag) != "" {
				names = append(names, tag)
			}
		}
		sort.Strings(names)
		return names
	}

	res, err := publish.Promote(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || reg.Digest(t, "myorg/app:latest") != "" || reg.Digest(t, "myorg/app:change_12_latest") == "" {
		t.Fatalf("check mode wrote something, or reports no change (%v)", res.Changed)
	}
	var wouldDelete []string
	for _, d := range res.Deleted {
		wouldDelete = append(wouldDelete, d.Tag+"/"+d.Reason)
	}
	sort.Strings(wouldDelete)
	if got := strings.Join(wouldDelete, " "); got != "change_12_latest/promoted change_12_latest/promoted change_12_v1/promoted change_3_latest/stale periodic_latest/stale" {
		t.Errorf("check mode would delete: %s", got)
	}

	hub.ResetRequests()
	res, err = publish.Promote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("promote: %d web API and %d registry requests for 3 tags", hub.Requests().Hub, hub.Requests().Registry)
	if !res.Changed {
		t.Error("not changed")
	}
	for ref, want := range map[string]string{"myorg/app:latest": testenv.DigestOf(t, app), "myorg/app:v1": testenv.DigestOf(t, app), "myorg/multi:latest": testenv.DigestOf(t, multi)} {
		if got := reg.Digest(t, ref); got != want {
			t.Errorf("%s = %q, want %s", ref, got, want)
		}
	}
	if got := strings.Join(tagsOf("myorg/app"), " "); got != "change_13_latest latest periodical_x release_1 v0.9 v1" {
		t.Errorf("myorg/app tags after promote: %s", got)
	}
	if reg.Digest(t, "myorg/multi:change_12_latest") != "" {
		t.Error("myorg/multi:change_12_latest not deleted")
	}
	for _, d := range res.Deleted {
		if !d.Deleted {
			t.Errorf("%s not deleted", d.Reference)
		}
		if d.Reference == "docker.io/myorg/app:change_3_latest" && (d.Reason != "stale" || d.AgeSeconds < 49*3600) {
			t.Errorf("stale deletion: %+v", d)
		}
	}
	for _, p := range res.Promoted {
		if !p.Changed || p.AlreadyPromoted || p.PreviousDigest != "" || !strings.HasPrefix(p.Reference, "docker.io/myorg/") {
			t.Errorf("promotion: %+v", p)
		}
	}
	calls := strings.Join(hub.Calls(), "\n")
	for _, want := range []string{"POST /v2/users/login/ 200", "DELETE /v2/repositories/myorg/app/tags/change_12_latest/ 204",
		"DELETE /v2/repositories/myorg/multi/tags/change_12_latest/ 204", "DELETE /v2/repositories/myorg/app/tags/change_3_latest/ 204"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no web API call %q in:\n%s", want, calls)
		}
	}
	if len(res.Warnings) > 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}

	res, err = publish.Promote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("second promote changed: %+v %+v", res.Promoted, res.Deleted)
	}
	for _, p := range res.Promoted {
		if !p.AlreadyPromoted || p.Changed {
			t.Errorf("second run: %+v", p)
		}
	}
}
