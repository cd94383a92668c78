package build

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
		if err := copyTree(s.src, filepath.Join(root, s.name)); err != nil {
			cleanup()
			return func() error { return nil }, fmt.Errorf("copying sibling %s: %w", s.name, err)
		}
	}
	return cleanup, nil
}

// copyTree copies a directory tree with modes and symlinks.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil // sockets, devices: not part of a project checkout
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
