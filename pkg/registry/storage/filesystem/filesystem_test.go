package filesystem_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/storagetest"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Opener {
		root := t.TempDir()
		return func(t *testing.T) storage.Driver {
			d, err := filesystem.New(root)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	})
}

func TestNewRefusesUnusableRoot(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(t.TempDir(), "ro")
	if err := os.MkdirAll(filepath.Join(readOnly, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"blobs", "repositories", "uploads"} {
		os.MkdirAll(filepath.Join(readOnly, dir), 0o700)
	}
	// Root ignores permission bits; a read-only bind is not available in
	// every sandbox, so make tmp a file instead.
	os.RemoveAll(filepath.Join(readOnly, "tmp"))
	os.WriteFile(filepath.Join(readOnly, "tmp"), nil, 0o600)
	for _, root := range []string{"", file, filepath.Join(file, "below"), readOnly} {
		if _, err := filesystem.New(root); err == nil {
			t.Errorf("New(%q) succeeded", root)
		} else if root != "" && !strings.Contains(err.Error(), root) {
			t.Errorf("New(%q): %v does not name the directory", root, err)
		}
	}
}

// TestInterruptedAppendIsCutOff simulates a crash in the middle of a chunk:
// bytes beyond the recorded size in the data file are not part of the
// upload, neither for the next chunk nor for the commit.
func TestInterruptedAppendIsCutOff(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	up, err := d.NewUpload(ctx, "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	state := func(int64) ([]byte, error) { return []byte("s"), nil }
	if _, err := d.AppendUpload(ctx, up.ID, 0, 6, strings.NewReader("hello "), state); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "uploads", up.ID, "data")
	f, err := os.OpenFile(data, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("the layout comment says uploads/<id>/data: %v", err)
	}
	f.Write([]byte("GARBAGE FROM A CRASH"))
	f.Close()
	if _, err := d.AppendUpload(ctx, up.ID, 6, 5, strings.NewReader("world"), state); err != nil {
		t.Fatal(err)
	}
	f, _ = os.OpenFile(data, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("MORE"))
	f.Close()
	dg := digest.FromString("hello world")
	if err := d.CommitUpload(ctx, up.ID, 11, dg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "blobs", "sha256", dg.Encoded()[:2], dg.Encoded()))
	if err != nil || !bytes.Equal(b, []byte("hello world")) {
		t.Fatalf("blob = %q, %v", b, err)
	}
}

// TestTempLeftoversRemoved checks that New removes old files crashed
// writers left in tmp/, and nothing else.
func TestTempLeftoversRemoved(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if _, err := filesystem.New(root); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "tmp", "blob-123")
	young := filepath.Join(root, "tmp", "blob-456")
	os.WriteFile(old, []byte("partial"), 0o600)
	os.WriteFile(young, []byte("being written"), 0o600)
	past := mustTime(t)
	os.Chtimes(old, past, past)
	if _, err := filesystem.New(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old temp file survived: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young temp file removed: %v", err)
	}
}

func mustTime(t *testing.T) (tm time.Time) {
	t.Helper()
	return time.Now().Add(-2 * time.Hour)
}

// TestEmptyEntries: empty entries (blob links) are created in place; one
// written over a value replaces it, and writing one twice is harmless.
func TestEmptyEntries(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := digest.FromString("layer").String()
	for i, value := range [][]byte{nil, nil, []byte("a value"), nil} {
		if err := d.PutEntry(ctx, "team/app", storage.Blobs, key, value); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := d.GetEntry(ctx, "team/app", storage.Blobs, key)
		if err != nil || !bytes.Equal(got, value) {
			t.Fatalf("write %d of %q: read %q, %v", i, value, got, err)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ holds %d files after the writes", len(left))
	}
}
