package zuul_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestCopySource: contents, modes and symbolic links are kept; a second
// copy over the first overwrites its files.
func TestCopySource(t *testing.T) {
	src := t.TempDir()
	for rel, mode := range map[string]os.FileMode{"README": 0o644, "bin/run.sh": 0o755, "secret/key": 0o600} {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../README", filepath.Join(src, "bin", "readme")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := zuul.CopySource(src, dst); err != nil {
		t.Fatal(err)
	}
	for rel, mode := range map[string]os.FileMode{"README": 0o644, "bin/run.sh": 0o755, "secret/key": 0o600} {
		fi, err := os.Stat(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode().Perm(), mode)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, rel)); string(b) != rel+"\n" {
			t.Errorf("%s: content %q", rel, b)
		}
	}
	if link, err := os.Readlink(filepath.Join(dst, "bin", "readme")); err != nil || link != "../README" {
		t.Errorf("bin/readme: link %q, %v; want ../README", link, err)
	}

	// Copying again over the copy overwrites its files.
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "README"), []byte("a longer stale content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dst, "bin", "readme")); err != nil {
		t.Fatal(err)
	}
	if err := zuul.CopySource(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "README")); string(b) != "changed\n" {
		t.Errorf("README after a second copy: %q", b)
	}
}
