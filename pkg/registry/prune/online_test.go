package prune_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/registry/prune"
)

// TestPushWhilePruning pushes images and multi-arch indexes through the
// registry while prune runs over and over with the default grace period,
// on a registry that also holds expired images and old garbage. Every
// pushed image must pull completely afterwards, and the expired content
// must be gone.
func TestPushWhilePruning(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	f := &fixture{t: t, d: reg.Driver, root: reg.Root}
	expired, expiredBlobs := f.image("old/app", [][]byte{[]byte("expired layer")}, "v0")
	garbage := f.blob("old/app", []byte("old garbage"))
	f.ageAll(48 * time.Hour)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var runs atomic.Int32
	pruneErr := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if _, err := prune.Run(ctx, reg.Driver, prune.Policy{Expiration: 24 * time.Hour}); err != nil && ctx.Err() == nil {
				pruneErr <- err
				return
			}
			runs.Add(1)
		}
		pruneErr <- nil
	}()

	auth := remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})
	tr := remote.WithTransport(reg.Transport())
	type pushed struct {
		ref   name.Reference
		index bool
	}
	var mu sync.Mutex
	var all []pushed
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				ref, _ := name.ParseReference(fmt.Sprintf("%s/team/w%d:i%d", reg.Host, w, i))
				var err error
				index := i == 3
				if index {
					var idx v1.ImageIndex
					if idx, err = random.Index(4096, 2, 3); err == nil {
						err = remote.WriteIndex(ref, idx, auth, tr)
					}
				} else {
					var img v1.Image
					if img, err = random.Image(64<<10, 3); err == nil {
						err = remote.Write(ref, img, auth, tr)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("pushing %s: %w", ref, err)
					return
				}
				mu.Lock()
				all = append(all, pushed{ref, index})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Let the pruner finish one more complete run after the last push.
	target := runs.Load() + 1
	deadline := time.Now().Add(time.Minute)
	for runs.Load() <= target && time.Now().Before(deadline) {
		select {
		case err := <-pruneErr:
			t.Fatalf("prune: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-pruneErr; err != nil {
		t.Fatalf("prune: %v", err)
	}
	t.Logf("prune ran %d times during %d pushes", runs.Load(), len(all))
	if runs.Load() < 2 {
		t.Fatalf("prune ran %d times: the test did not overlap pushes with prunes", runs.Load())
	}

	for _, p := range all {
		var imgs []v1.Image
		if p.index {
			idx, err := remote.Index(p.ref, tr)
			if err != nil {
				t.Fatalf("pulling index %s: %v", p.ref, err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range im.Manifests {
				img, err := idx.Image(m.Digest)
				if err != nil {
					t.Fatalf("pulling %s@%s: %v", p.ref, m.Digest, err)
				}
				imgs = append(imgs, img)
			}
		} else {
			img, err := remote.Image(p.ref, tr)
			if err != nil {
				t.Fatalf("pulling %s: %v", p.ref, err)
			}
			imgs = append(imgs, img)
		}
		for _, img := range imgs {
			if _, err := img.RawConfigFile(); err != nil {
				t.Fatalf("config of %s lost: %v", p.ref, err)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				rc, err := l.Compressed()
				if err == nil {
					_, err = io.Copy(io.Discard, rc) // verifies the digest at EOF
					rc.Close()
				}
				if err != nil {
					dg, _ := l.Digest()
					t.Fatalf("layer %s of %s lost: %v", dg, p.ref, err)
				}
			}
		}
	}
	if f.hasManifest("old/app", expired) || f.hasBlob(garbage) {
		t.Error("expired content survived the prunes")
	}
	for _, b := range expiredBlobs {
		if f.hasBlob(b) {
			t.Errorf("blob %s of an expired image survived", b.Digest)
		}
	}
}
