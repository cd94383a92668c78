package swift

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// maxEntrySize bounds what GetEntry reads: entries are digests, media
// types and referrer descriptors.
const maxEntrySize = 4 << 20

// tablePrefix returns the key prefix of a table of repo (ending in "/"),
// after validating both.
func tablePrefix(repo string, table storage.Table) (string, error) {
	if err := storage.ValidateRepository(repo); err != nil {
		return "", err
	}
	if err := storage.ValidateTable(table); err != nil {
		return "", err
	}
	return "repositories/" + repo + "/_" + string(table) + "/", nil
}

func entryKey(repo string, table storage.Table, key string) (string, error) {
	prefix, err := tablePrefix(repo, table)
	if err != nil {
		return "", err
	}
	if err := storage.ValidateKey(key); err != nil {
		return "", err
	}
	return prefix + key, nil
}

// markerKey is the catalog marker of a repository.
func markerKey(repo string) string { return "catalog/" + repo + "/_" }

// PutEntry implements storage.Driver. A manifest entry also writes the
// repository's catalog marker, before and after the entry: see
// removeMarker for why this order keeps the catalog right.
func (d *Driver) PutEntry(ctx context.Context, repo string, table storage.Table, key string, value []byte) error {
	k, err := entryKey(repo, table, key)
	if err != nil {
		return err
	}
	if table == storage.Manifests {
		if err := d.putBytes(ctx, markerKey(repo), nil, nil); err != nil {
			return fmt.Errorf("writing the catalog entry of %s: %w", repo, err)
		}
	}
	if err := d.putBytes(ctx, k, value, nil); err != nil {
		return fmt.Errorf("writing %s %s of %s: %w", table, key, repo, err)
	}
	if table == storage.Manifests {
		if err := d.putBytes(ctx, markerKey(repo), nil, nil); err != nil {
			return fmt.Errorf("writing the catalog entry of %s: %w", repo, err)
		}
	}
	return nil
}

// GetEntry implements storage.Driver.
func (d *Driver) GetEntry(ctx context.Context, repo string, table storage.Table, key string) ([]byte, error) {
	k, err := entryKey(repo, table, key)
	if err != nil {
		return nil, err
	}
	b, _, err := d.getBytes(ctx, k, maxEntrySize)
	if err != nil {
		return nil, fmt.Errorf("%s %s of %s: %w", table, key, repo, err)
	}
	return b, nil
}

// DeleteEntry implements storage.Driver. Deleting a repository's last
// manifest removes its catalog marker.
func (d *Driver) DeleteEntry(ctx context.Context, repo string, table storage.Table, key string) error {
	k, err := entryKey(repo, table, key)
	if err != nil {
		return err
	}
	if err := d.deleteObject(ctx, k); err != nil {
		return fmt.Errorf("deleting %s %s of %s: %w", table, key, repo, err)
	}
	if table == storage.Manifests {
		if err := d.removeMarker(ctx, repo); err != nil {
			d.log.Warn("removing a catalog entry failed", "repository", repo, "error", err)
		}
	}
	return nil
}

// removeMarker removes repo's catalog marker when the repository holds no
// manifest: it deletes the marker, then lists the manifests again and puts
// the marker back if one exists. Since PutEntry writes the marker after
// its manifest entry, either this listing sees a concurrent manifest, or
// that PutEntry writes the marker after this delete: a repository with a
// manifest never ends without its marker. A marker left over by a race the
// other way only costs Repositories a check.
func (d *Driver) removeMarker(ctx context.Context, repo string) error {
	if has, err := d.hasManifest(ctx, repo); err != nil || has {
		return err
	}
	if err := d.deleteObject(ctx, markerKey(repo)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	has, err := d.hasManifest(ctx, repo)
	if err == nil && has {
		err = d.putBytes(ctx, markerKey(repo), nil, nil)
	}
	return err
}

// hasManifest reports whether repo holds a manifest: the first listed key
// that a HEAD confirms (usually the first one listed).
func (d *Driver) hasManifest(ctx context.Context, repo string) (bool, error) {
	prefix, err := tablePrefix(repo, storage.Manifests)
	if err != nil {
		return false, err
	}
	marker := ""
	for {
		page, err := d.list(ctx, listing{prefix: prefix, marker: marker, limit: 100})
		if err != nil {
			return false, err
		}
		for _, e := range page {
			if storage.ValidateKey(strings.TrimPrefix(e.Name, prefix)) != nil {
				continue
			}
			if d.trustList {
				return true, nil
			}
			_, err := d.head(ctx, e.Name, true)
			if err == nil {
				return true, nil
			}
			if !errors.Is(err, storage.ErrNotFound) {
				return false, err
			}
		}
		if len(page) < 100 {
			return false, nil
		}
		marker = page[len(page)-1].Name
	}
}

// ListEntries implements storage.Driver: a listing of the table's keys,
// each confirmed with a HEAD request (which also gives its time), so a
// listing that lags behind deletes cannot resurrect an entry.
func (d *Driver) ListEntries(ctx context.Context, repo string, table storage.Table, after string, n int) ([]storage.Entry, error) {
	prefix, err := tablePrefix(repo, table)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ctx.Err()
	}
	var out []storage.Entry
	marker := ""
	if after != "" {
		marker = prefix + after
	}
	for {
		limit := maxListing
		if n > 0 {
			// A few more than needed, in case some are stale.
			limit = min(maxListing, n-len(out)+8)
		}
		page, err := d.list(ctx, listing{prefix: prefix, marker: marker, limit: limit})
		if err != nil {
			return nil, fmt.Errorf("listing %s of %s: %w", table, repo, err)
		}
		var listed []storage.Entry
		for _, e := range page {
			k := strings.TrimPrefix(e.Name, prefix)
			if k > after && storage.ValidateKey(k) == nil {
				listed = append(listed, storage.Entry{Key: k, ModTime: e.modTime()})
			}
		}
		confirmed := listed
		if !d.trustList {
			if confirmed, err = d.confirm(ctx, prefix, listed); err != nil {
				return nil, fmt.Errorf("listing %s of %s: %w", table, repo, err)
			}
		}
		for _, e := range confirmed {
			if n >= 0 && len(out) >= n {
				break
			}
			out = append(out, e)
		}
		if (n >= 0 && len(out) >= n) || len(page) < limit {
			break
		}
		marker = page[len(page)-1].Name
	}
	slices.SortFunc(out, func(a, b storage.Entry) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// confirm returns the listed entries under prefix that exist, in the
// order given, with the times their HEAD reports.
func (d *Driver) confirm(ctx context.Context, prefix string, listed []storage.Entry) ([]storage.Entry, error) {
	found := make([]*storage.Entry, len(listed))
	err := storage.ForEach(ctx, d.parallel, listed, func(ctx context.Context, i int, e storage.Entry) error {
		h, err := d.head(ctx, prefix+e.Key, true)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found[i] = &storage.Entry{Key: e.Key, ModTime: timestamp(h)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []storage.Entry
	for _, e := range found {
		if e != nil {
			out = append(out, *e)
		}
	}
	return out, nil
}

// Repositories implements storage.Driver from the catalog markers, each
// confirmed by a listing of the repository's manifests.
func (d *Driver) Repositories(ctx context.Context, after string, n int) ([]string, error) {
	var names []string
	err := d.listAll(ctx, "catalog/", "", "", func(e entry) error {
		name, ok := strings.CutSuffix(strings.TrimPrefix(e.Name, "catalog/"), "/_")
		if ok && name > after && storage.ValidateRepository(name) == nil {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing repositories: %w", err)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var out []string
	batch := max(d.parallel, 1)
	for start := 0; start < len(names) && (n < 0 || len(out) < n); start += batch {
		chunk := names[start:min(start+batch, len(names))]
		ok := make([]bool, len(chunk))
		err := storage.ForEach(ctx, d.parallel, chunk, func(ctx context.Context, i int, name string) error {
			has, err := d.hasManifest(ctx, name)
			ok[i] = has
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("listing repositories: %w", err)
		}
		for i, name := range chunk {
			if ok[i] && (n < 0 || len(out) < n) {
				out = append(out, name)
			}
		}
	}
	return out, nil
}
