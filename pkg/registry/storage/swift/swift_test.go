package swift

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/storagetest"
	"github.com/imagegate/imagegate/tests/testenv"
)

// v1Config is a configuration for a new container of sw, with tempauth.
func v1Config(t testing.TB, sw *testenv.Swift) Config {
	return Config{Container: sw.NewContainerName(t), CAFile: sw.CAFile, SegmentSize: MinSegmentSize,
		Auth: Auth{AuthURL: sw.AuthURL, User: sw.User, Key: sw.Key}}
}

func newDriver(t testing.TB, cfg Config, opts ...Option) *Driver {
	t.Helper()
	d, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformance runs the storage conformance suite on a real Swift
// (tempauth): every subtest gets its own container, created by the
// driver, and its Opener a new driver on it. Segments of 1 MiB make the
// suite's larger blobs and chunks static large objects.
func TestConformance(t *testing.T) {
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		cfg := v1Config(t, sw)
		return func(t *testing.T) storage.Driver { return newDriver(t, cfg) }
	})
}
