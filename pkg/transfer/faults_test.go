package transfer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// testPolicy retries often and quickly: the proxies below fail one
// request in three.
var testPolicy = transfer.RetryPolicy{Attempts: 10, MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond, MaxRetryAfter: time.Second}

// TestCopyThroughFaults puts fault-injecting proxies in front of both
// registries (resets, 500/502/503 before and after the registry acted,
// 429 with Retry-After, bodies cut short, slow answers) and checks that
// every copy completes with the right digests, for several seeds.
func TestCopyThroughFaults(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	base := []v1.Layer{transfertest.Layer(200, 400_000), transfertest.Layer(201, 3_000_000)}
	var refs []string
	for i := range 3 {
		img := transfertest.Image(t, i%2 == 0, append(append([]v1.Layer{}, base...), transfertest.Layer(uint64(210+i), 2_000_000))...)
		ref := fmt.Sprintf("/org/app%d:latest", i)
		transfertest.Push(t, src, src.Host+ref, img)
		refs = append(refs, ref)
	}
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, base[0], transfertest.Layer(220, 500_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, base[0], transfertest.Layer(221, 500_000)))
	transfertest.Push(t, src, src.Host+"/org/multi:v1", idx)
	refs = append(refs, "/org/multi:v1")

	faults := faultproxy.Config{Reset: 0.07, Error: 0.08, Throttle: 0.06, RetryAfter: time.Second, Truncate: 0.07, Slow: 0.05, Delay: 30 * time.Millisecond}
	var total faultproxy.Stats
	for seed := uint64(1); seed <= 3; seed++ {
		cfg := faults
		cfg.Seed = seed
		sp, srcP := transfertest.Proxy(t, src, "", cfg)
		dp, dstP := transfertest.Proxy(t, dst, "", cfg)
		c := newClient(t, append(endpoints(srcP, dstP), transfer.WithRetry(testPolicy), transfer.WithJobs(4), transfer.WithTimeout(2*time.Minute))...)
		var jobs []transfer.Job
		for _, r := range refs {
			repo, tag, _ := strings.Cut(r, ":")
			jobs = append(jobs, transfer.Job{Src: srcP.Host + r, Dst: fmt.Sprintf("%s%s-%d:%s", dstP.Host, repo, seed, tag)})
		}
		rs, err := c.CopyAll(context.Background(), jobs)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for i, r := range rs {
			d := checkSame(t, src, src.Host+refs[i], dst, strings.Replace(jobs[i].Dst, dstP.Host, dst.Host, 1))
			if r.Digest != d {
				t.Errorf("seed %d: %s: result digest %s, registry has %s", seed, r.Dst, r.Digest, d)
			}
		}
		for _, st := range []faultproxy.Stats{sp.Stats(), dp.Stats()} {
			total.Requests += st.Requests
			total.Resets += st.Resets
			total.Errors += st.Errors
			total.Throttles += st.Throttles
			total.Truncations += st.Truncations
			total.Slows += st.Slows
		}
	}
	t.Logf("faults over %d requests: %d resets, %d errors, %d throttles, %d truncations, %d slow",
		total.Requests, total.Resets, total.Errors, total.Throttles, total.Truncations, total.Slows)
	if total.Resets == 0 || total.Errors == 0 || total.Throttles == 0 || total.Truncations == 0 || total.Slows == 0 {
		t.Errorf("some fault was never injected: %+v", total)
	}
}

// TestPermanentFailure: a registry that answers 503 to everything makes
// the copy fail with an error naming the reference, the step and the
// status, within the operation's deadline.
func TestPermanentFailure(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	transfertest.Push(t, src, src.Host+"/org/app:latest", transfertest.Image(t, false, transfertest.Layer(300, 1000)))
	for _, tc := range []struct {
		name   string
		policy transfer.RetryPolicy
		want   string
	}{
		// Few attempts: the retries run out before the deadline.
		{"attempts run out", transfer.RetryPolicy{Attempts: 3, MinWait: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond, MaxRetryAfter: time.Second}, "503"},
		// Endless attempts: the deadline ends it.
		{"deadline", transfer.RetryPolicy{Attempts: 1000, MinWait: 10 * time.Millisecond, MaxWait: 200 * time.Millisecond, MaxRetryAfter: time.Second}, "deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, down := transfertest.Proxy(t, dst, "", faultproxy.Config{FailAll: 503})
			c := newClient(t, append(endpoints(src, down), transfer.WithRetry(tc.policy), transfer.WithTimeout(3*time.Second))...)
			start := time.Now()
			_, err := c.Copy(context.Background(), src.Host+"/org/app:latest", down.Host+"/org/app:latest")
			elapsed := time.Since(start)
			t.Log(err)
			var te *transfer.Error
			if !errors.As(err, &te) || te.Ref != down.Host+"/org/app:latest" || te.Step != transfer.StepConnect || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want a connect error naming the target and %q", err, tc.want)
			}
			// Not a performance check: a wedged copy would hang here.
			if elapsed > 3*time.Second+5*time.Second {
				t.Errorf("the copy gave up after %s, long after its 3s deadline", elapsed)
			}
		})
	}
}

// TestCorruptSourceCommitsNothing: a source that sends a layer with one
// byte changed (right length, wrong content) never gets that content
// committed in the target, whichever registry it is (imagegate's and
// distribution both check the digest the upload names). The copy is
// retried as a digest mismatch of the source and fails naming the blob
// when the corruption persists, or completes with the right content when
// it passes.
func TestCorruptSourceCommitsNothing(t *testing.T) {
	t.Parallel()
	src := transfertest.Distribution(t)
	layer := transfertest.Layer(400, 300_000)
	ld, _ := layer.Digest()
	transfertest.Push(t, src, src.Host+"/org/app:latest", transfertest.Image(t, false, layer, transfertest.Layer(401, 1000)))
	ours := registrytest.New(t)
	targets := map[string]transfertest.Registry{
		"imagegate":    {Host: ours.Host, Username: ours.Username, Password: ours.Password, CA: ours.CAPEM},
		"distribution": transfertest.Distribution(t),
	}
	policy := transfer.RetryPolicy{Attempts: 3, MinWait: 5 * time.Millisecond, MaxWait: 20 * time.Millisecond, MaxRetryAfter: time.Second}
	for name, dst := range targets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Every GET of the layer is corrupted: all attempts fail.
			var gets atomic.Int64
			isLayer := func(r *http.Request) bool {
				return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String())
			}
			sp, srcP := transfertest.Proxy(t, src, "", faultproxy.Config{Corrupt: 1, Match: func(r *http.Request) bool {
				if !isLayer(r) {
					return false
				}
				gets.Add(1)
				return true
			}})
			c := newClient(t, append(endpoints(srcP, dst), transfer.WithRetry(policy))...)
			_, err := c.Copy(context.Background(), srcP.Host+"/org/app:latest", dst.Host+"/org/app:latest")
			var te *transfer.Error
			if !errors.As(err, &te) || !errors.Is(err, transfer.ErrDigestMismatch) || te.Step != transfer.StepBlob || te.Digest != ld.String() {
				t.Fatalf("copy of a corrupt layer: %v; want a digest mismatch of blob %s", err, ld)
			}
			if gets.Load() != int64(policy.Attempts) || sp.Stats().Corruptions != int64(policy.Attempts) {
				t.Errorf("layer read %d times, %d corrupted; want %d attempts", gets.Load(), sp.Stats().Corruptions, policy.Attempts)
			}
			if _, err := transfertest.ManifestErr(dst, dst.Host+"/org/app:latest"); err == nil {
				t.Error("the tag was written although a layer failed")
			}
			if code := blobStatus(t, dst, "org/app", ld.String()); code != http.StatusNotFound {
				t.Errorf("HEAD of the corrupt layer in the target: %d, want 404", code)
			}
			if name == "imagegate" {
				if _, err := ours.Driver.StatBlob(context.Background(), digest.Digest(ld.String())); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("imagegate's storage holds blob %s: %v", ld, err)
				}
			}

			// Corruption on the first read only: the retry copies the
			// right content.
			gets.Store(0)
			if err := sp.SetConfig(faultproxy.Config{Corrupt: 1, Match: func(r *http.Request) bool {
				return isLayer(r) && gets.Add(1) == 1
			}}); err != nil {
				t.Fatal(err)
			}
			r, err := c.Copy(context.Background(), srcP.Host+"/org/app:latest", dst.Host+"/org/again:latest")
			if err != nil {
				t.Fatal(err)
			}
			checkSame(t, src, src.Host+"/org/app:latest", dst, dst.Host+"/org/again:latest")
			if gets.Load() != 2 || r.BlobsCopied != 3 {
				t.Errorf("layer read %d times (want 2: one corrupt, one good); result %+v", gets.Load(), r)
			}
		})
	}
}

// blobStatus is the status of a HEAD of a blob in repo.
func blobStatus(t *testing.T, r transfertest.Registry, repo, dgst string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "https://"+r.Host+"/v2/"+repo+"/blobs/"+dgst, nil)
	req.SetBasicAuth(r.Username, r.Password)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.Roots()}}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
