package bench

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/pullthroughtest"
	"github.com/imagegate/imagegate/internal/ratelimit"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// BenchmarkPullThrough: five jobs of five buildsets pull the same two base
// images (3 layers of 8 MiB each) from an emulated internet registry
// (Debian's docker-registry behind internal/ratelimit, 40 ms per answer,
// 25 MB/s per response, as a remote registry over a WAN link): today every
// job pulls from the upstream; with pull-through, each job's buildset
// registry (the buildset_registry module binary) reads the intermediate
// registry's shared cache, which fetches from the upstream once. The
// table gives the upstream requests and the time of jobs two to five.
func BenchmarkPullThrough(b *testing.B) {
	bin := ansibletest.BuildModule(b, "github.com/imagegate/imagegate/modules/buildset_registry", "GOOS=linux", "GOARCH=amd64")
	wan := ratelimit.Config{Latency: 40 * time.Millisecond, Bandwidth: 25_000_000}
	site := pullthroughtest.NewSite(b, pullthroughtest.Options{Layers: 3, LayerSize: 8 << 20, Limit: wan})
	var imageBytes int64
	for _, im := range site.Images {
		imageBytes += im.Size
	}
	pullAll := func(host string, ca []byte, upstream bool) {
		for _, im := range site.Images {
			ref := im.Ref
			if upstream {
				ref = im.Upstream
			}
			if _, err := pullthroughtest.Pull(host, ca, ref); err != nil {
				b.Fatal(err)
			}
		}
	}
	type run struct {
		first, rest time.Duration
		restReqs    int
		totalReqs   int
		refused     int64
	}
	measure := func(setup func(i int), job func(i int)) run {
		var r run
		site.Limit.Reset()
		for i := range 5 {
			setup(i)
			start := time.Now()
			before := site.Limit.Counted()
			job(i)
			d := time.Since(start)
			if i == 0 {
				r.first = d
			} else {
				r.rest += d
				r.restReqs += site.Limit.Counted() - before
			}
		}
		r.totalReqs, r.refused = site.Limit.Counted(), site.Limit.Refused()
		return r
	}
	b.ResetTimer()
	today := measure(func(int) {}, func(int) { pullAll(site.Limit.Host(), site.LimitCA, true) })
	// Every buildset starts its buildset registry anyway (for speculative
	// images): its start is not part of a job's pulls.
	root := testenv.ShortTempDir(b)
	var br *zuul.BuildsetRegistry
	through := measure(func(i int) {
		br = site.StartBuildset(b, filepath.Join(root, "br"+strconv.Itoa(i)), bin)
	}, func(int) { pullAll(br.Address(), []byte(br.Cert), false) })
	b.StopTimer()
	blobs := 0
	for _, im := range site.Images {
		blobs += 1 + len(im.Blobs)
	}
	Table(fmt.Sprintf("pull-through: 5 buildsets pull 2 base images (%s of layers, %d manifests and blobs) from a WAN upstream (40 ms, 25 MB/s)", MiB(imageBytes), blobs), [][]string{
		{"", "upstream pulls (all jobs)", "upstream pulls (jobs 2-5)", "429s", "job 1", "jobs 2-5 (sum)", "jobs 2-5 per job", "speed-up jobs 2-5"},
		{"today: every job pulls from the upstream", strconv.Itoa(today.totalReqs), strconv.Itoa(today.restReqs), strconv.FormatInt(today.refused, 10),
			Seconds(today.first), Seconds(today.rest), Seconds(today.rest / 4), "1.00x"},
		{"pull-through: buildset registry -> intermediate registry cache", strconv.Itoa(through.totalReqs), strconv.Itoa(through.restReqs), strconv.FormatInt(through.refused, 10),
			Seconds(through.first), Seconds(through.rest), Seconds(through.rest / 4), Ratio(today.rest.Seconds(), through.rest.Seconds())},
	})
	if through.totalReqs != blobs || through.refused != 0 {
		b.Errorf("pull-through made %d upstream pulls (%d refused), want one per manifest and blob (%d)\n%s", through.totalReqs, through.refused, blobs, site.Limit.Summary())
	}
}
