package s3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// maxEntrySize bounds what GetEntry reads: entries are digests, media
// types and referrer descriptors.
const maxEntrySize = 4 << 20

// tablePrefix returns the key prefix of a table of repo (ending in "/"),
// after validating both.
func (d *Driver) tablePrefix(repo string, table storage.Table) (string, error) {
	if err := storage.ValidateRepository(repo); err != nil {
		return "", err
	}
	if err := storage.ValidateTable(table); err != nil {
		return "", err
	}
	return d.key("repositories/" + repo + "/_" + string(table) + "/"), nil
}

func (d *Driver) entryKey(repo string, table storage.Table, key string) (string, error) {
	prefix, err := d.tablePrefix(repo, table)
	if err != nil {
		return "", err
	}
	if err := storage.ValidateKey(key); err != nil {
		return "", err
	}
	return prefix + key, nil
}

// markerKey is the catalog marker of a repository. The "/_" suffix keeps
// the markers of "a" and "a/b" from colliding on stores that map keys onto
// a file tree.
func (d *Driver) markerKey(repo string) string { return d.key("catalog/" + repo + "/_") }

// PutEntry implements storage.Driver. A manifest entry also writes the
// repository's catalog marker, before and after the entry: see
// removeMarker for why this order keeps the catalog right.
func (d *Driver) PutEntry(ctx context.Context, repo string, table storage.Table, key string, value []byte) error {
	k, err := d.entryKey(repo, table, key)
	if err != nil {
		return err
	}
	if table == storage.Manifests {
		if err := d.putObject(ctx, d.markerKey(repo), nil); err != nil {
			return wrap(err, "writing catalog entry of %s", repo)
		}
	}
	if err := d.putObject(ctx, k, value); err != nil {
		return wrap(err, "writing %s %s of %s", table, key, repo)
	}
	if table == storage.Manifests {
		if err := d.putObject(ctx, d.markerKey(repo), nil); err != nil {
			return wrap(err, "writing catalog entry of %s", repo)
		}
	}
	return nil
}

func (d *Driver) putObject(ctx context.Context, key string, body []byte) error {
	_, err := d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: &key,
		Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))})
	return err
}

// GetEntry implements storage.Driver.
func (d *Driver) GetEntry(ctx context.Context, repo string, table storage.Table, key string) ([]byte, error) {
	k, err := d.entryKey(repo, table, key)
	if err != nil {
		return nil, err
	}
	out, err := d.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &k})
	if err != nil {
		return nil, wrap(err, "%s %s of %s", table, key, repo)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxEntrySize))
	if err != nil {
		return nil, wrap(err, "reading %s %s of %s", table, key, repo)
	}
	return b, nil
}

// DeleteEntry implements storage.Driver. Deleting a repository's last
// manifest removes its catalog marker.
func (d *Driver) DeleteEntry(ctx context.Context, repo string, table storage.Table, key string) error {
	k, err := d.entryKey(repo, table, key)
	if err != nil {
		return err
	}
	if _, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &k}); err != nil {
		return wrap(err, "%s %s of %s", table, key, repo)
	}
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &k}); err != nil {
		return wrap(err, "deleting %s %s of %s", table, key, repo)
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
	mk := d.markerKey(repo)
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &mk}); err != nil {
		return err
	}
	has, err := d.hasManifest(ctx, repo)
	if err == nil && has {
		err = d.putObject(ctx, mk, nil)
	}
	return err
}

// hasManifest reports whether repo holds a manifest: the first listed key
// that a HEAD confirms (usually the first one listed).
func (d *Driver) hasManifest(ctx context.Context, repo string) (bool, error) {
	prefix, err := d.tablePrefix(repo, storage.Manifests)
	if err != nil {
		return false, err
	}
	in := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix, MaxKeys: aws.Int32(100)}
	for {
		page, err := d.client.ListObjectsV2(ctx, in)
		if err != nil {
			return false, err
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if storage.ValidateKey(k) != nil {
				continue
			}
			if d.trustList {
				return true, nil
			}
			_, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: o.Key})
			if err == nil {
				return true, nil
			}
			if !isNotFound(err) {
				return false, err
			}
		}
		if !aws.ToBool(page.IsTruncated) || page.NextContinuationToken == nil {
			return false, nil
		}
		in.ContinuationToken = page.NextContinuationToken
	}
}

// ListEntries implements storage.Driver: a listing of the table's keys,
// each confirmed with a HEAD request (which also gives its time), so a
// store whose listing lags behind deletes cannot resurrect an entry.
func (d *Driver) ListEntries(ctx context.Context, repo string, table storage.Table, after string, n int) ([]storage.Entry, error) {
	prefix, err := d.tablePrefix(repo, table)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ctx.Err()
	}
	var out []storage.Entry
	in := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix}
	if after != "" {
		in.StartAfter = aws.String(prefix + after)
	}
	for {
		if n > 0 {
			// A few more than needed, in case some are stale.
			in.MaxKeys = aws.Int32(int32(min(1000, n-len(out)+8)))
		}
		page, err := d.client.ListObjectsV2(ctx, in)
		if err != nil {
			return nil, wrap(err, "listing %s of %s", table, repo)
		}
		var keys []string
		var listed []storage.Entry
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if k > after && storage.ValidateKey(k) == nil {
				keys = append(keys, k)
				listed = append(listed, storage.Entry{Key: k, ModTime: aws.ToTime(o.LastModified)})
			}
		}
		confirmed := listed
		if !d.trustList {
			if confirmed, err = d.confirm(ctx, prefix, keys); err != nil {
				return nil, wrap(err, "listing %s of %s", table, repo)
			}
		}
		for _, e := range confirmed {
			if n >= 0 && len(out) >= n {
				break
			}
			out = append(out, e)
		}
		if (n >= 0 && len(out) >= n) || !aws.ToBool(page.IsTruncated) || page.NextContinuationToken == nil {
			break
		}
		in.ContinuationToken = page.NextContinuationToken
	}
	slices.SortFunc(out, func(a, b storage.Entry) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// confirm returns the keys under prefix that exist, in the order given,
// with their modification times.
func (d *Driver) confirm(ctx context.Context, prefix string, keys []string) ([]storage.Entry, error) {
	found := make([]*storage.Entry, len(keys))
	err := storage.ForEach(ctx, d.parallel, keys, func(ctx context.Context, i int, k string) error {
		full := prefix + k
		out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &full})
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		found[i] = &storage.Entry{Key: k, ModTime: aws.ToTime(out.LastModified)}
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
	prefix := d.key("catalog/")
	var names []string
	p := s3.NewListObjectsV2Paginator(d.client, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap(err, "listing repositories")
		}
		for _, o := range page.Contents {
			name, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/_")
			if ok && name > after && storage.ValidateRepository(name) == nil {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var out []string
	// Confirm in batches, in order, until n are found.
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
