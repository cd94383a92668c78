package depcheck

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// maxLines is the size past which a Go file is split by resource or
// says, in its first comment, why it is one piece (docs/architecture.md).
const maxLines = 600

// onePiece is the phrase a longer file's first comment carries, with the
// reason after it.
const onePiece = "One piece:"

// TestFileSizes keeps every Go file of the tree under maxLines lines, or
// explained as one piece in its first comment.
func TestFileSizes(t *testing.T) {
	root := repoRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "dist", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n := bytes.Count(b, []byte("\n"))
		if n <= maxLines {
			return nil
		}
		head := b
		if i := bytes.Index(b, []byte("\npackage ")); i >= 0 {
			head = b[:i]
		}
		if !bytes.Contains(head, []byte(onePiece)) {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s has %d lines: split it by resource, or say in its first comment %q and why", rel, n, onePiece)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
