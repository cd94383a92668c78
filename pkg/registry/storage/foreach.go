package storage

import (
	"context"
	"sync"
)

// ForEach runs fn on every item, with at most n calls at once, and returns
// the first error. The first error cancels the context the other calls
// get, and no further call starts; without an error, the result is the
// parent context's error. Drivers (one request per key of an object store)
// and maintenance (prune) use it to touch many entries of a store.
func ForEach[T any](parent context.Context, n int, items []T, fn func(ctx context.Context, i int, item T) error) error {
	if len(items) == 0 {
		return parent.Err()
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i, it); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = parent.Err()
	}
	return first
}
