package runner

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// tarTree writes the tree under dir to a tar file, paths relative to dir.
func tarTree(dir, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, in)
			in.Close()
			return err
		}
		return nil
	})
	if err != nil {
		tw.Close()
		f.Close()
		return err
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// prepareRepo makes dst a git repository holding the change's source: a
// clone of src at checkout when src is a git repository, or a copy of src
// committed into a fresh repository when it is a plain directory. It
// returns the commit.
func prepareRepo(src, dst, checkout, message string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(src, ".git")); err == nil {
		if _, err := git("", "clone", "-q", "--no-hardlinks", src, dst); err != nil {
			return "", err
		}
		if checkout != "" {
			if _, err := git(dst, "checkout", "-q", checkout); err != nil {
				return "", err
			}
		}
	} else {
		if err := zuul.CopySource(src, dst); err != nil {
			return "", fmt.Errorf("copying %s: %w", src, err)
		}
		if _, err := git(dst, "init", "-q"); err != nil {
			return "", err
		}
		if _, err := git(dst, "add", "-A"); err != nil {
			return "", err
		}
		if message == "" {
			message = "Prepared by the imagegate runner"
		}
		if _, err := git(dst, "-c", "user.name=imagegate runner", "-c", "user.email=runner@imagegate.invalid",
			"commit", "-q", "--allow-empty", "-m", message); err != nil {
			return "", err
		}
	}
	out, err := git(dst, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
