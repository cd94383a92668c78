package storage_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

func TestForEach(t *testing.T) {
	t.Parallel()
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}

	t.Run("every item, at most n at once", func(t *testing.T) {
		var running, peak, sum atomic.Int64
		err := storage.ForEach(context.Background(), 3, items, func(ctx context.Context, i, item int) error {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			if i != item {
				t.Errorf("item %d at index %d", item, i)
			}
			sum.Add(int64(item))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Load() != 99*100/2 {
			t.Errorf("sum %d: not every item ran once", sum.Load())
		}
		if peak.Load() > 3 {
			t.Errorf("%d ran at once, limit 3", peak.Load())
		}
	})

	t.Run("the first error stops the rest", func(t *testing.T) {
		boom := errors.New("boom")
		var calls atomic.Int64
		err := storage.ForEach(context.Background(), 1, items, func(ctx context.Context, i, _ int) error {
			calls.Add(1)
			if i == 10 {
				return boom
			}
			return ctx.Err()
		})
		if !errors.Is(err, boom) {
			t.Errorf("error %v, want boom", err)
		}
		if calls.Load() > 12 {
			t.Errorf("%d calls after the error at the 11th", calls.Load())
		}
	})

	t.Run("a cancelled parent", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := storage.ForEach(ctx, 4, items, func(context.Context, int, int) error { return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		if err := storage.ForEach(ctx, 4, []int{}, func(context.Context, int, int) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("no items: error %v, want context.Canceled", err)
		}
	})
}
