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
	// own, when set, is the owner and mode the file gets even if it
	// exists (credential files), and the owner and dirMode of the
	// directories created for it.
	own     owner
	dirMode fs.FileMode
	// secret marks content that must never leave the package (diffs).
	secret bool
	// link, when set, makes the change a symbolic link to link.
	link    string
	written bool
	// newDirs are the directories the write created, deepest first.
	newDirs []string
}

// owner is the owner a file is given; set false keeps the existing owner
// (or the process's, for a new file).
type owner struct {
	set      bool
	uid, gid int
}

// fileOpts are how edit writes a file.
type fileOpts struct {
	mode    fs.FileMode // for a new file (every file, with own.set)
	own     owner
	dirMode fs.FileMode // 0: 0755
	secret  bool
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
	return p.editWith(client, path, fileOpts{mode: mode}, fn)
}

// editWith is edit with an owner, directory mode and secrecy. A file given
// an owner changes when its content, owner or mode differ.
func (p *plan) editWith(client, path string, o fileOpts, fn func(before []byte, exists bool) ([]byte, error)) (bool, error) {
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
	if exists && bytes.Equal(before, after) && (!o.own.set || ownedAs(resolved, o.own, o.mode)) {
		return false, nil
	}
	if err := p.claim(resolved, path, client); err != nil {
		return false, err
	}
	p.changes = append(p.changes, &change{path: resolved, client: client, before: before,
		existed: exists, after: after, mode: o.mode, own: o.own, dirMode: o.dirMode, secret: o.secret})
	return true, nil
}

// claim refuses a second change of one file.
func (p *plan) claim(resolved, path, client string) error {
	for _, c := range p.changes {
		if c.path == resolved {
			return fmt.Errorf("%s is configured twice (by %s and %s): give the clients different paths", path, c.client, client)
		}
	}
	return nil
}

// symlink plans a symbolic link at path (which must not exist) to target.
func (p *plan) symlink(client, path, target string, o fileOpts) error {
	if err := p.claim(path, path, client); err != nil {
		return err
	}
	p.changes = append(p.changes, &change{path: path, client: client, link: target,
		after: []byte("-> " + target + "\n"), own: o.own, dirMode: o.dirMode})
	return nil
}

// ownedAs reports whether path has owner o and mode.
func ownedAs(path string, o owner, mode fs.FileMode) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == o.uid && int(st.Gid) == o.gid && fi.Mode().Perm() == mode
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
		err := mkdirs(c.newDirs, c.dirMode, c.own)
		if err == nil && c.link != "" {
			err = symlinkAtomic(c.link, c.path, c.own)
		} else if err == nil {
			err = write(c.path, c.after, c.mode, c.own)
		}
		if err != nil {
			for _, d := range c.newDirs {
				_ = os.Remove(d) // only if empty
			}
			p.rollback(log)
			return fmt.Errorf("writing %s: %w (files written before it were restored)", c.path, err)
		}
		c.written = true
		log.Info("wrote", "path", c.path, "client", c.client)
	}
	return nil
}

// mkdirs creates dirs (deepest first, as missingDirs lists them) with mode
// (0755 when 0) and owner o.
func mkdirs(dirs []string, mode fs.FileMode, o owner) error {
	if mode == 0 {
		mode = 0o755
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Mkdir(dirs[i], mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		// Mkdir applies the umask; the mode is what it is asked to be.
		if err := os.Chmod(dirs[i], mode); err != nil {
			return err
		}
		if o.set {
			if err := os.Lchown(dirs[i], o.uid, o.gid); err != nil {
				return err
			}
		}
	}
	return nil
}

// symlinkAtomic makes path a symbolic link to target, owned by o.
func symlinkAtomic(target, path string, o owner) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".imagegate-link")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if o.set {
		if err := os.Lchown(tmp, o.uid, o.gid); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
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
			err = writeAtomic(c.path, c.before, c.mode, owner{})
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
// With own set, the file gets own's owner and mode whether it exists or
// not (on the temporary file, so the content is never readable with other
// permissions).
//
// A file that is a mount point (/etc/hosts in a container is bind-mounted)
// cannot be renamed over (EBUSY); it is rewritten in place instead, as
// Ansible's own modules do.
func writeAtomic(path string, data []byte, mode fs.FileMode, own owner) error {
	dir := filepath.Dir(path)
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		if !own.set {
			mode = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if own.set {
		uid, gid = own.uid, own.gid
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
