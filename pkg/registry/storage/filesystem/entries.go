package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// The repository tables (storage.Table): one file per entry.

// entryPath returns the path of key in table of repo, after validating all
// three.
func (d *Driver) entryDir(repo string, table storage.Table) (string, error) {
	if err := storage.ValidateRepository(repo); err != nil {
		return "", err
	}
	if err := storage.ValidateTable(table); err != nil {
		return "", err
	}
	return filepath.Join(d.root, "repositories", filepath.FromSlash(repo), "_"+filepath.FromSlash(string(table))), nil
}

func (d *Driver) entryPath(repo string, table storage.Table, key string) (string, error) {
	dir, err := d.entryDir(repo, table)
	if err != nil {
		return "", err
	}
	if err := storage.ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(dir, key), nil
}

// PutEntry implements storage.Driver.
func (d *Driver) PutEntry(ctx context.Context, repo string, table storage.Table, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.entryPath(repo, table, key)
	if err != nil {
		return err
	}
	write := d.writeFile
	if len(value) == 0 {
		write = d.createEmpty
	}
	if err := write(p, value); err != nil {
		return noSpace(fmt.Errorf("writing %s %s of %s: %w", table, key, repo, err))
	}
	return nil
}

// GetEntry implements storage.Driver.
func (d *Driver) GetEntry(ctx context.Context, repo string, table storage.Table, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.entryPath(repo, table, key)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, notFound(err, "%s %s of %s", table, key, repo)
	}
	return b, nil
}

// DeleteEntry implements storage.Driver.
func (d *Driver) DeleteEntry(ctx context.Context, repo string, table storage.Table, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.entryPath(repo, table, key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(err, "%s %s of %s", table, key, repo)
	}
	syncDir(filepath.Dir(p))
	d.removeEmptyDirs(filepath.Dir(p), filepath.Join(d.root, "repositories"))
	return nil
}

// ListEntries implements storage.Driver. A directory listing reflects
// deletes immediately, so nothing needs confirming.
func (d *Driver) ListEntries(ctx context.Context, repo string, table storage.Table, after string, n int) ([]storage.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir, err := d.entryDir(repo, table)
	if err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s of %s: %w", table, repo, err)
	}
	var out []storage.Entry
	for _, de := range des {
		if n >= 0 && len(out) >= n {
			break
		}
		name := de.Name()
		if name <= after || storage.ValidateKey(name) != nil || de.IsDir() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, storage.Entry{Key: name, ModTime: info.ModTime()})
	}
	return out, nil
}

// Repositories implements storage.Driver.
func (d *Driver) Repositories(ctx context.Context, after string, n int) ([]string, error) {
	var names []string
	var walk func(dir, prefix string) error
	walk = func(dir, prefix string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		des, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("listing repositories: %w", err)
		}
		for _, de := range des {
			if !de.IsDir() || strings.HasPrefix(de.Name(), "_") {
				continue
			}
			name := prefix + de.Name()
			sub := filepath.Join(dir, de.Name())
			if hasEntries(filepath.Join(sub, "_manifests")) {
				names = append(names, name)
			}
			if err := walk(sub, name+"/"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(filepath.Join(d.root, "repositories"), ""); err != nil {
		return nil, err
	}
	slices.Sort(names)
	start, _ := slices.BinarySearch(names, after)
	for start < len(names) && names[start] <= after {
		start++
	}
	names = names[start:]
	if n >= 0 && len(names) > n {
		names = names[:n]
	}
	return names, nil
}

func hasEntries(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}
