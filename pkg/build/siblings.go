package build

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// copySiblings copies each sibling into <contextDir>/.zuul-siblings/<name>,
// keeping the full project path as upstream's `cp --parents -r` does. The
// returned cleanup removes the directory; callers defer it so a failed build
// leaves nothing behind.
func copySiblings(contextDir string, sibs []sibling) (cleanup func() error, err error) {
	root := filepath.Join(contextDir, SiblingsDir)
	cleanup = func() error { return os.RemoveAll(root) }
	if err := os.Mkdir(root, 0o755); err != nil {
		return func() error { return nil }, fmt.Errorf("creating %s: %w", root, err)
	}
	for _, s := range sibs {
		if err := zuul.CopySource(s.src, filepath.Join(root, s.name)); err != nil {
			cleanup()
			return func() error { return nil }, fmt.Errorf("copying sibling %s: %w", s.name, err)
		}
	}
	return cleanup, nil
}
