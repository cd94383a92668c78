package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
)

const (
	pruneRepos     = 100
	pruneManifests = 100 // per repository: 10,000 in all
)

// populate writes pruneRepos x pruneManifests images into d as the
// registry stores them: per image a config and a layer of its own, a base
// layer all share, links, the manifest and a tag. It returns how long that
// took.
func populate(b *testing.B, d storage.Driver) time.Duration {
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
	for r := range pruneRepos {
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
// the filesystem driver and on the S3 driver (versitygw on loopback), with
// listings confirmed key by key (the default) and trusted
// (consistent_listing): a pass that keeps
// everything (the cost of examining the registry), then a pass a year
// later that removes everything. It prints the times, the storage calls
// each pass made and the rate in manifests per second.
func BenchmarkPrune(b *testing.B) {
	fsDriver, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	srv := testenv.StartVersitygw(b)
	newS3 := func(consistent bool) storage.Driver {
		d, err := s3.New(context.Background(), s3.Config{Bucket: srv.NewBucket(b), Endpoint: srv.Endpoint, Region: srv.Region,
			PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, CAFile: srv.CAFile,
			ConsistentListing: consistent})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	total := pruneRepos * pruneManifests
	rows := [][]string{{"driver", "populate", "keep-all pass", "driver calls", "manifests/s", "remove-all pass", "driver calls", "manifests/s", "removed"}}
	b.ResetTimer()
	for _, tc := range []struct {
		name string
		d    storage.Driver
	}{
		{"filesystem", fsDriver},
		{"s3 (versitygw), listings confirmed", newS3(false)},
		{"s3 (versitygw), consistent_listing", newS3(true)},
	} {
		b.StopTimer()
		fill := populate(b, tc.d)
		b.StartTimer()
		m := metrics.New()
		d := m.Driver(tc.d)
		keep, err := prune.Run(context.Background(), d, prune.Policy{Expiration: 30 * 24 * time.Hour})
		if err != nil {
			b.Fatalf("%s: %v", tc.name, err)
		}
		if keep.Kept != total || keep.Removed != 0 {
			b.Fatalf("%s: keep-all pass: %s", tc.name, keep)
		}
		keepCalls := storageCalls(m)
		m2 := metrics.New()
		later := func() time.Time { return time.Now().Add(365 * 24 * time.Hour) }
		gone, err := prune.Run(context.Background(), m2.Driver(tc.d), prune.Policy{Expiration: 30 * 24 * time.Hour}, prune.WithClock(later))
		if err != nil {
			b.Fatalf("%s: %v", tc.name, err)
		}
		if gone.Removed != total || gone.Blobs != 3*total+1 {
			b.Fatalf("%s: remove-all pass: %s", tc.name, gone)
		}
		rows = append(rows, []string{tc.name, Seconds(fill),
			Seconds(keep.Duration), fmt.Sprint(keepCalls), fmt.Sprintf("%.0f", float64(total)/keep.Duration.Seconds()),
			Seconds(gone.Duration), fmt.Sprint(storageCalls(m2)), fmt.Sprintf("%.0f", float64(total)/gone.Duration.Seconds()),
			fmt.Sprintf("%d manifests, %d blobs", gone.Removed, gone.Blobs)})
		unit := strings.NewReplacer(" ", "-", "(", "", ")", "", ",", "").Replace(tc.name)
		b.ReportMetric(keep.Duration.Seconds(), unit+"-keep-all-s")
		b.ReportMetric(gone.Duration.Seconds(), unit+"-remove-all-s")
	}
	b.StopTimer()
	Table(fmt.Sprintf("Prune of a registry of %d manifests (%d repositories), 16 storage calls at a time", total, pruneRepos), rows)
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
