package zuul

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// CopySource copies a project's source tree, as Zuul prepares it under
// work/src/<canonical name> (the runner) or as a job finds it under
// zuul.projects[].src_dir (siblings copied into a build context), to dst.
// File modes and symbolic links are kept (links are copied, not followed);
// sockets, devices and pipes, which are not part of a checkout, are
// skipped. A regular file already at dst is overwritten (the runner
// prepares an item's tree again when a work directory is reused); nothing
// at dst is removed, and a symbolic link already at dst fails the copy.
func CopySource(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
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
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
