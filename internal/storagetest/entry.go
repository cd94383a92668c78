package storagetest

import (
	"bytes"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/opencontainers/go-digest"
)

// The entry contract (the tables of tags, manifests and links): reads,
// listings, name checks, isolation between tables, repositories.

func testEntries(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if _, err := d.GetEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetEntry of a missing entry: %v, want ErrNotFound", err)
	}
	if err := d.DeleteEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteEntry of a missing entry: %v, want ErrNotFound", err)
	}
	for _, v := range [][]byte{[]byte("sha256:one"), []byte("sha256:two"), nil} {
		if err := d.PutEntry(c, "team/app", storage.Tags, "latest", v); err != nil {
			t.Fatalf("PutEntry: %v", err)
		}
		got, err := d.GetEntry(c, "team/app", storage.Tags, "latest")
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("GetEntry = %q, %v; want %q", got, err, v)
		}
	}
	if err := d.DeleteEntry(c, "team/app", storage.Tags, "latest"); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if _, err := d.GetEntry(c, "team/app", storage.Tags, "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetEntry after delete: %v, want ErrNotFound", err)
	}
}

func keys(es []storage.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func testEntryListing(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if es, err := d.ListEntries(c, "empty/repo", storage.Tags, "", -1); err != nil || len(es) != 0 {
		t.Fatalf("ListEntries of an empty table = %v, %v", es, err)
	}
	all := []string{"v1", "V2", "latest", "a-1", "a.1", "a_1", "_under", "1.0", "sha256-abc", "Z"}
	for _, k := range all {
		if err := d.PutEntry(c, "team/app", storage.Tags, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	sorted := slices.Clone(all)
	sort.Strings(sorted)
	for _, tc := range []struct {
		after string
		n     int
		want  []string
	}{
		{"", -1, sorted},
		{"", 3, sorted[:3]},
		{"", 0, nil},
		{sorted[2], 4, sorted[3:7]},
		{sorted[len(sorted)-1], -1, nil},
		{"b", -1, []string{"latest", "sha256-abc", "v1"}},
		{"", 100, sorted},
	} {
		es, err := d.ListEntries(c, "team/app", storage.Tags, tc.after, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(es); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("ListEntries(after %q, n %d) = %v, want %v", tc.after, tc.n, got, tc.want)
		}
		for _, e := range es {
			if time.Since(e.ModTime) > time.Hour {
				t.Errorf("entry %s has ModTime %s", e.Key, e.ModTime)
			}
		}
	}
	// Deleted keys never show up again.
	for _, k := range []string{"latest", "Z", "_under"} {
		if err := d.DeleteEntry(c, "team/app", storage.Tags, k); err != nil {
			t.Fatal(err)
		}
	}
	es, err := d.ListEntries(c, "team/app", storage.Tags, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(es) {
		if k == "latest" || k == "Z" || k == "_under" {
			t.Fatalf("ListEntries after delete still lists %q: %v", k, keys(es))
		}
	}
	if len(es) != len(all)-3 {
		t.Fatalf("ListEntries after delete = %v, want %d keys", keys(es), len(all)-3)
	}
}

func testEntryNamesValidated(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	for _, repo := range []string{"", "../escape", "a/../b", "Upper", "a//b", "/abs", "a/", "_hidden", "a/_b", "a b", strings.Repeat("a", 256)} {
		if err := d.PutEntry(c, repo, storage.Tags, "latest", nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry in repository %q: %v, want ErrInvalid", repo, err)
		}
		if _, err := d.NewUpload(c, repo, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("NewUpload for repository %q: %v, want ErrInvalid", repo, err)
		}
	}
	for _, key := range []string{"", ".hidden", "..", "a/b", "a\\b", "a\x00b", "tab\t", strings.Repeat("k", 256)} {
		if err := d.PutEntry(c, "team/app", storage.Tags, key, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry with key %q: %v, want ErrInvalid", key, err)
		}
	}
	for _, table := range []storage.Table{"", "tags/../x", "other", "referrers/sha256", "referrers/../x/y"} {
		if err := d.PutEntry(c, "team/app", table, "k", nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutEntry in table %q: %v, want ErrInvalid", table, err)
		}
	}
	bad := digest.Digest("sha256:../../etc/passwd")
	if err := d.PutBlob(c, bad, 1, strings.NewReader("x")); err == nil {
		t.Errorf("PutBlob with digest %q succeeded", bad)
	}
}

func testEntryTablesIsolated(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	s1, s2 := digest.FromString("subject 1"), digest.FromString("subject 2")
	puts := []struct {
		repo  string
		table storage.Table
		key   string
	}{
		{"a", storage.Tags, "k"},
		{"a/b", storage.Tags, "k2"},
		{"a", storage.Manifests, "m"},
		{"a", storage.Blobs, "b"},
		{"a", storage.Referrers(s1), "r1"},
		{"a", storage.Referrers(s2), "r2"},
	}
	for _, p := range puts {
		if err := d.PutEntry(c, p.repo, p.table, p.key, []byte(p.repo+string(p.table))); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range puts {
		es, err := d.ListEntries(c, p.repo, p.table, "", -1)
		if err != nil || !slices.Equal(keys(es), []string{p.key}) {
			t.Errorf("ListEntries(%s, %s) = %v, %v; want [%s]", p.repo, p.table, keys(es), err, p.key)
		}
	}
}

func testRepositories(t *testing.T, open Opener) {
	d := open(t)
	c := ctx(t)
	if names, err := d.Repositories(c, "", -1); err != nil || len(names) != 0 {
		t.Fatalf("Repositories of an empty store = %v, %v", names, err)
	}
	withManifests := []string{"b", "a/b/c", "a", "a-c", "quay.io/org/img", "a/b"}
	for _, r := range withManifests {
		if err := d.PutEntry(c, r, storage.Manifests, "sha256:x", []byte("mt")); err != nil {
			t.Fatal(err)
		}
	}
	// Tags or blobs alone do not make a repository.
	if err := d.PutEntry(c, "only/tags", storage.Tags, "t", nil); err != nil {
		t.Fatal(err)
	}
	if err := d.PutEntry(c, "only/blobs", storage.Blobs, "sha256:y", nil); err != nil {
		t.Fatal(err)
	}
	sorted := slices.Clone(withManifests)
	sort.Strings(sorted)
	names, err := d.Repositories(c, "", -1)
	if err != nil || !slices.Equal(names, sorted) {
		t.Fatalf("Repositories = %v, %v; want %v", names, err, sorted)
	}
	names, err = d.Repositories(c, sorted[1], 2)
	if err != nil || !slices.Equal(names, sorted[2:4]) {
		t.Fatalf("Repositories(after %q, 2) = %v, %v; want %v", sorted[1], names, err, sorted[2:4])
	}
	if err := d.DeleteEntry(c, "a/b", storage.Manifests, "sha256:x"); err != nil {
		t.Fatal(err)
	}
	names, err = d.Repositories(c, "", -1)
	if err != nil || slices.Contains(names, "a/b") || !slices.Contains(names, "a/b/c") {
		t.Fatalf("Repositories after deleting a/b's last manifest = %v, %v", names, err)
	}
}
