package clientconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// plan collects the file edits of one Apply, so nothing is written until
// every file has been read and parsed.
type plan struct {
	changes []*change
	// trustChanged is set when the system trust store's CA file changes.
	trustChanged bool
	// dockerMirrors is daemon.json's registry-mirrors after the edit, and
	// dockerChanged whether the file changes.
	dockerMirrors []string
	dockerChanged bool
}

type change struct {
	path    string // resolved through symlinks
	client  string
	before  []byte
	existed bool
	after   []byte
	mode    fs.FileMode // for a new file
	written bool
	// newDirs are the directories the write created, deepest first.
	newDirs []string
}

// readFile returns a file's content and whether it exists. The path is
// resolved through symlinks, so an edit replaces the target, not the link.
func readFile(path string) (resolved string, data []byte, exists bool, err error) {
	resolved = path
	if r, err := filepath.EvalSymlinks(path); err == nil {
		resolved = r
	}
	data, err = os.ReadFile(resolved)
	if errors.Is(err, fs.ErrNotExist) {
		return resolved, nil, false, nil
	}
	if err != nil {
		return resolved, nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	return resolved, data, true, nil
}

// edit reads path, passes its content (nil when absent) to fn, and records
// a change when fn's result differs. fn returns its input unchanged when
// there is nothing to do.
func (p *plan) edit(client, path string, mode fs.FileMode, fn func(before []byte, exists bool) ([]byte, error)) (bool, error) {
	resolved, before, exists, err := readFile(path)
	if err != nil {
		return false, err
	}
	if exists {
		if fi, err := os.Stat(resolved); err == nil && !fi.Mode().IsRegular() {
			return false, fmt.Errorf("%s is not a regular file", path)
		}
	}
	after, err := fn(before, exists)
	if err != nil {
		return false, err
	}
	if exists && bytes.Equal(before, after) {
		return false, nil
	}
	for _, c := range p.changes {
		if c.path == resolved {
			return false, fmt.Errorf("%s is configured twice (by %s and %s): give the clients different paths", path, c.client, client)
		}
	}
	p.changes = append(p.changes, &change{path: resolved, client: client, before: before,
		existed: exists, after: after, mode: mode})
	return true, nil
}

// put plans a file whose whole content is data.
func (p *plan) put(client, path string, mode fs.FileMode, data []byte) (bool, error) {
	return p.edit(client, path, mode, func([]byte, bool) ([]byte, error) { return data, nil })
}

// commit writes every change. If one fails, the files already written get
// their previous content back (or are removed, if they were new), so a
// failed run leaves the node as it found it.
func (p *plan) commit(log *slog.Logger) error {
	for _, c := range p.changes {
		c.newDirs = missingDirs(filepath.Dir(c.path))
		if err := write(c.path, c.after, c.mode); err != nil {
			p.rollback(log)
			return fmt.Errorf("writing %s: %w (files written before it were restored)", c.path, err)
		}
		c.written = true
		log.Info("wrote", "path", c.path, "client", c.client)
	}
	return nil
}

func (p *plan) rollback(log *slog.Logger) {
	for i := len(p.changes) - 1; i >= 0; i-- {
		c := p.changes[i]
		if !c.written {
			continue
		}
		var err error
		if c.existed {
			err = writeAtomic(c.path, c.before, c.mode)
		} else {
			err = os.Remove(c.path)
			for _, d := range c.newDirs {
				_ = os.Remove(d) // only if empty
			}
		}
		if err != nil {
			log.Error("restoring a file after a failed run", "path", c.path, "error", err)
		}
	}
}

// missingDirs returns dir and its ancestors that do not exist, deepest
// first.
func missingDirs(dir string) []string {
	var out []string
	for {
		if _, err := os.Lstat(dir); err == nil {
			return out
		}
		out = append(out, dir)
		parent := filepath.Dir(dir)
		if parent == dir {
			return out
		}
		dir = parent
	}
}

// write is writeAtomic; tests replace it to make a write fail.
var write = writeAtomic

// writeAtomic replaces path with data: a temporary file in the same
// directory, fsynced, renamed over the target, and the directory fsynced.
// An existing file keeps its mode and owner; a new one gets mode and the
// process's owner, and missing parent directories are created (0755).
//
// A file that is a mount point (/etc/hosts in a container is bind-mounted)
// cannot be renamed over (EBUSY); it is rewritten in place instead, as
// Ansible's own modules do.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".imagegate-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 && uid != os.Geteuid() || gid >= 0 && gid != os.Getegid() {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("keeping the owner %d:%d: %w", uid, gid, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return writeInPlace(path, data)
		}
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
