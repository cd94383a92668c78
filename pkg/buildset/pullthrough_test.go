package buildset_test

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imagegate/imagegate/internal/pullthroughtest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// TestFiveBuildsetsShareOneFill: five buildset registries, started as the
// buildset_registry module starts them, use the intermediate registry as
// their pull-through upstream; it caches a rate-limited upstream (Debian's
// docker-registry behind internal/ratelimit, whose quota is exactly one
// fill). Five jobs pulling the same base images make one upstream fetch
// per manifest and blob, and none sees a 429.
func TestFiveBuildsetsShareOneFill(t *testing.T) {
	site := pullthroughtest.NewSite(t, pullthroughtest.Options{Layers: 2, LayerSize: 256 << 10})
	quota := 0
	for _, im := range site.Images {
		quota += 1 + len(im.Blobs) // the tag's manifest, the config and layers
	}
	site.Limit.SetQuota(quota)
	root := testenv.ShortTempDir(t)
	for job := range 5 {
		br := site.StartBuildset(t, filepath.Join(root, "br"+strconv.Itoa(job)), "")
		for _, im := range site.Images {
			if _, err := pullthroughtest.Pull(br.Address(), []byte(br.Cert), im.Ref); err != nil {
				t.Fatalf("job %d: %v\nupstream requests:\n%s", job+1, err, site.Limit.Summary())
			}
		}
	}
	if n := site.Limit.Refused(); n != 0 {
		t.Errorf("the upstream answered %d requests with 429\n%s", n, site.Limit.Summary())
	}
	for _, im := range site.Images {
		for _, b := range im.Blobs {
			if n := site.Limit.Count("GET", "/blobs/"+b.String()); n != 1 {
				t.Errorf("%s: blob %s fetched %d times from the upstream, want 1\n%s", im.Ref, b, n, site.Limit.Summary())
			}
		}
		tag := im.Ref[len(im.Ref)-1:]
		if n := site.Limit.Count("GET", "/manifests/"+tag); n != 1 {
			t.Errorf("%s: manifest fetched %d times from the upstream, want 1\n%s", im.Ref, n, site.Limit.Summary())
		}
	}
}
