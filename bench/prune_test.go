package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry/metrics"
	"github.com/imagegate/imagegate/pkg/registry/prune"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
	"github.com/imagegate/imagegate/pkg/registry/storage/s3"
	"github.com/imagegate/imagegate/pkg/registry/storage/swift"
)

const (
	pruneRepos     = 100
	pruneManifests = 100 // per repository: 10,000 in all
	// pruneSwiftRepos is the number of repositories on Swift: the
	// all-in-one Swift of the tests (one object server, Python) writes
	// some hundred objects a second on this machine, so a registry of
	// 10,000 manifests (80,000 objects) would take most of an hour to
	// write and remove; prune's cost grows linearly with the entries, so
	// the rate compares.
	pruneSwiftRepos = 10
)

// populate writes repos x pruneManifests images into d as the registry
// stores them: per image a config and a layer of its own, a base layer all
// share, links, the manifest and a tag. It returns how long that took.
func populate(b *testing.B, d storage.Driver, repos int) time.Duration {
	b.Helper()
	ctx := context.Background()
	base := bytes.Repeat([]byte("base layer "), 1000)
	baseDg := digest.FromBytes(base)
	if err := d.PutBlob(ctx, baseDg, int64(len(base)), bytes.NewReader(base)); err != nil {
		b.Fatal(err)
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	put := func(repo string, content []byte) desc {
		dg := digest.FromBytes(content)
		if err := d.PutBlob(ctx, dg, int64(len(content)), bytes.NewReader(content)); err != nil {
			b.Fatal(err)
		}
		if err := d.PutEntry(ctx, repo, storage.Blobs, dg.String(), nil); err != nil {
			b.Fatal(err)
		}
		return desc{"application/octet-stream", dg.String(), int64(len(content))}
	}
	jobs := make(chan [2]int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				repo := fmt.Sprintf("bench/repo%03d", j[0])
				cfg := put(repo, fmt.Appendf(nil, `{"image":%d,"repo":%d}`, j[1], j[0]))
				layer := put(repo, bytes.Repeat(fmt.Appendf(nil, "layer %d %d ", j[0], j[1]), 64))
				if err := d.PutEntry(ctx, repo, storage.Blobs, baseDg.String(), nil); err != nil {
					b.Error(err)
					return
				}
				body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
					"config": cfg, "layers": []desc{{"application/octet-stream", baseDg.String(), int64(len(base))}, layer}})
				mdg := digest.FromBytes(body)
				if err := d.PutBlob(ctx, mdg, int64(len(body)), bytes.NewReader(body)); err != nil {
					b.Error(err)
					return
				}
				if err := d.PutEntry(ctx, repo, storage.Manifests, mdg.String(), []byte("application/vnd.oci.image.manifest.v1+json")); err != nil {
					b.Error(err)
					return
				}
				if err := d.PutEntry(ctx, repo, storage.Tags, fmt.Sprintf("v%d", j[1]), []byte(mdg.String())); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for r := range repos {
		for m := range pruneManifests {
			jobs <- [2]int{r, m}
		}
	}
	close(jobs)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return time.Since(start)
}

// BenchmarkPrune measures prune on a registry of 10,000 manifests (100
// repositories of 100 tagged images; 30,001 blobs with the manifests), on
// the filesystem driver and on the S3 driver (versitygw on loopback), and
// of 1,000 manifests (10 repositories) on the Swift driver (the all-in-one
// Swift of the tests, tempauth), with listings confirmed key by key (the
// default) and trusted (consistent_listing): a pass that keeps
// everything (the cost of examining the registry), then a pass a year
// later that removes everything. It prints the times, the storage calls
// each pass made and the rate in manifests per second. Each driver is a
// sub-benchmark (filesystem, s3-confirmed, s3-consistent,
// swift-confirmed, swift-consistent): `BENCH=Prune/swift make bench`
// runs Swift's alone; a store starts only when one of its sub-benchmarks
// runs.
func BenchmarkPrune(b *testing.B) {
	// The stores live as long as BenchmarkPrune (b), for every
	// sub-benchmark of theirs (sb).
	var srv *testenv.S3Server
	newS3 := func(sb *testing.B, consistent bool) storage.Driver {
		if srv == nil {
			srv = testenv.StartVersitygw(b)
		}
		d, err := s3.New(context.Background(), s3.Config{Bucket: srv.NewBucket(sb), Endpoint: srv.Endpoint, Region: srv.Region,
			PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, CAFile: srv.CAFile,
			ConsistentListing: consistent})
		if err != nil {
			sb.Fatal(err)
		}
		return d
	}
	var sw *testenv.Swift
	newSwift := func(sb *testing.B, consistent bool) storage.Driver {
		if sw == nil {
			sw = testenv.StartSwift(b, testenv.SwiftOptions{})
		}
		d, err := swift.New(context.Background(), swift.Config{Container: sw.NewContainerName(sb), CAFile: sw.CAFile,
			Auth: swift.Auth{AuthURL: sw.AuthURL, User: sw.User, Key: sw.Key}, ConsistentListing: consistent})
		if err != nil {
			sb.Fatal(err)
		}
		return d
	}
	rows := [][]string{{"driver", "manifests", "populate", "keep-all pass", "driver calls", "manifests/s", "remove-all pass", "driver calls", "manifests/s", "removed"}}
	for _, tc := range []struct {
		sub, name string
		open      func(b *testing.B) storage.Driver
		repos     int
	}{
		{"filesystem", "filesystem", func(b *testing.B) storage.Driver {
			d, err := filesystem.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return d
		}, pruneRepos},
		{"s3-confirmed", "s3 (versitygw), listings confirmed", func(b *testing.B) storage.Driver { return newS3(b, false) }, pruneRepos},
		{"s3-consistent", "s3 (versitygw), consistent_listing", func(b *testing.B) storage.Driver { return newS3(b, true) }, pruneRepos},
		{"swift-confirmed", "swift (all-in-one), listings confirmed", func(b *testing.B) storage.Driver { return newSwift(b, false) }, pruneSwiftRepos},
		{"swift-consistent", "swift (all-in-one), consistent_listing", func(b *testing.B) storage.Driver { return newSwift(b, true) }, pruneSwiftRepos},
	} {
		b.Run(tc.sub, func(b *testing.B) {
			b.StopTimer()
			total := tc.repos * pruneManifests
			store := tc.open(b)
			fill := populate(b, store, tc.repos)
			b.StartTimer()
			m := metrics.New()
			keep, err := prune.Run(context.Background(), m.Driver(store), prune.Policy{Expiration: 30 * 24 * time.Hour})
			if err != nil {
				b.Fatalf("%s: %v", tc.name, err)
			}
			if keep.Kept != total || keep.Removed != 0 {
				b.Fatalf("%s: keep-all pass: %s", tc.name, keep)
			}
			keepCalls := storageCalls(m)
			m2 := metrics.New()
			later := func() time.Time { return time.Now().Add(365 * 24 * time.Hour) }
			gone, err := prune.Run(context.Background(), m2.Driver(store), prune.Policy{Expiration: 30 * 24 * time.Hour}, prune.WithClock(later))
			if err != nil {
				b.Fatalf("%s: %v", tc.name, err)
			}
			if gone.Removed != total || gone.Blobs != 3*total+1 {
				b.Fatalf("%s: remove-all pass: %s", tc.name, gone)
			}
			b.StopTimer()
			rows = append(rows, []string{tc.name, fmt.Sprint(total), Seconds(fill),
				Seconds(keep.Duration), fmt.Sprint(keepCalls), fmt.Sprintf("%.0f", float64(total)/keep.Duration.Seconds()),
				Seconds(gone.Duration), fmt.Sprint(storageCalls(m2)), fmt.Sprintf("%.0f", float64(total)/gone.Duration.Seconds()),
				fmt.Sprintf("%d manifests, %d blobs", gone.Removed, gone.Blobs)})
			b.ReportMetric(keep.Duration.Seconds(), "keep-all-s")
			b.ReportMetric(gone.Duration.Seconds(), "remove-all-s")
		})
	}
	Table(fmt.Sprintf("Prune of a registry of %d manifests in repositories of %d (on Swift %d), 16 storage calls at a time",
		pruneRepos*pruneManifests, pruneManifests, pruneSwiftRepos*pruneManifests), rows)
}

// storageCalls sums the storage operations metrics counted.
func storageCalls(m *metrics.Metrics) int {
	n := 0
	for _, line := range bytes.Split([]byte(m.Text()), []byte("\n")) {
		if bytes.HasPrefix(line, []byte("imagegate_registry_storage_operations_total{")) {
			var v int
			if i := bytes.LastIndexByte(line, ' '); i > 0 {
				fmt.Sscan(string(line[i+1:]), &v)
			}
			n += v
		}
	}
	return n
}
