package prune_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/prune"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

const (
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociIndex    = "application/vnd.oci.image.index.v1+json"
)

// fixture writes registry content through a driver the way the registry
// does, and ages it on a filesystem driver (whose layout is documented).
type fixture struct {
	t    *testing.T
	d    storage.Driver
	root string
}

func newFixture(t *testing.T) *fixture {
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, d: d, root: root}
}

type desc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

func (f *fixture) blob(repo string, content []byte) desc {
	f.t.Helper()
	dg := digest.FromBytes(content)
	if err := f.d.PutBlob(f.t.Context(), dg, int64(len(content)), bytes.NewReader(content)); err != nil {
		f.t.Fatal(err)
	}
	if err := f.d.PutEntry(f.t.Context(), repo, storage.Blobs, dg.String(), nil); err != nil {
		f.t.Fatal(err)
	}
	return desc{"application/octet-stream", dg.String(), int64(len(content))}
}

// manifest stores a manifest document and tags it.
func (f *fixture) manifest(repo, mt string, doc map[string]any, tags ...string) desc {
	f.t.Helper()
	doc["schemaVersion"] = 2
	doc["mediaType"] = mt
	body, _ := json.Marshal(doc)
	dg := digest.FromBytes(body)
	ctx := f.t.Context()
	if err := f.d.PutBlob(ctx, dg, int64(len(body)), bytes.NewReader(body)); err != nil {
		f.t.Fatal(err)
	}
	if err := f.d.PutEntry(ctx, repo, storage.Manifests, dg.String(), []byte(mt)); err != nil {
		f.t.Fatal(err)
	}
	if s, ok := doc["subject"].(desc); ok {
		if err := f.d.PutEntry(ctx, repo, storage.Referrers(digest.Digest(s.Digest)), dg.String(), []byte("{}")); err != nil {
			f.t.Fatal(err)
		}
	}
	for _, tag := range tags {
		if err := f.d.PutEntry(ctx, repo, storage.Tags, tag, []byte(dg.String())); err != nil {
			f.t.Fatal(err)
		}
	}
	return desc{mt, dg.String(), int64(len(body))}
}

// image stores a config, layers and an image manifest; it returns the
// manifest and its blobs.
func (f *fixture) image(repo string, layers [][]byte, tags ...string) (desc, []desc) {
	f.t.Helper()
	cfg := f.blob(repo, []byte(fmt.Sprintf(`{"config":%q}`, f.t.Name()+repo+fmt.Sprint(tags, len(layers)))))
	blobs := []desc{cfg}
	var ls []desc
	for _, l := range layers {
		d := f.blob(repo, l)
		ls = append(ls, d)
		blobs = append(blobs, d)
	}
	m := f.manifest(repo, ociManifest, map[string]any{"config": cfg, "layers": ls}, tags...)
	return m, blobs
}

// age sets the time of a blob, or of an entry of repo, to age ago.
func (f *fixture) ageBlob(d desc, age time.Duration) {
	f.t.Helper()
	dg := digest.Digest(d.Digest)
	f.touch(filepath.Join(f.root, "blobs", dg.Algorithm().String(), dg.Encoded()[:2], dg.Encoded()), age)
}

func (f *fixture) ageEntry(repo string, table storage.Table, key string, age time.Duration) {
	f.t.Helper()
	f.touch(filepath.Join(f.root, "repositories", repo, "_"+string(table), key), age)
}

// ageAll makes everything stored so far age old.
func (f *fixture) ageAll(age time.Duration) {
	f.t.Helper()
	for _, dir := range []string{"blobs", "repositories"} {
		filepath.Walk(filepath.Join(f.root, dir), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				f.touch(p, age)
			}
			return nil
		})
	}
}

func (f *fixture) touch(path string, age time.Duration) {
	f.t.Helper()
	tm := time.Now().Add(-age)
	if err := os.Chtimes(path, tm, tm); err != nil {
		f.t.Fatalf("ageing %s (the filesystem layout changed?): %v", path, err)
	}
}

func (f *fixture) hasBlob(d desc) bool {
	_, err := f.d.StatBlob(f.t.Context(), digest.Digest(d.Digest))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) hasManifest(repo string, d desc) bool {
	_, err := f.d.GetEntry(f.t.Context(), repo, storage.Manifests, d.Digest)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) hasTag(repo, tag string) bool {
	_, err := f.d.GetEntry(f.t.Context(), repo, storage.Tags, tag)
	return err == nil
}

// TestPolicy builds a registry holding expired and fresh images, a
// multi-arch index, referrers and garbage, and checks exactly what one
// prune removes.
func TestPolicy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const day = 24 * time.Hour
	shared := []byte("a base layer both images use")

	oldImg, oldBlobs := f.image("team/app", [][]byte{shared, []byte("old layer")}, "old")
	freshImg, freshBlobs := f.image("team/app", [][]byte{shared, []byte("fresh layer")}, "fresh")

	// A multi-arch index pushed freshly over two old platform manifests.
	amd, amdBlobs := f.image("team/multi", [][]byte{[]byte("amd64 layer")})
	arm, armBlobs := f.image("team/multi", [][]byte{[]byte("arm64 layer")})
	idx := f.manifest("team/multi", ociIndex, map[string]any{"manifests": []desc{amd, arm}}, "latest")

	// An old index over old platforms: all of it expires.
	gone1, gone1Blobs := f.image("team/gone", [][]byte{[]byte("gone amd64")})
	gone2, gone2Blobs := f.image("team/gone", [][]byte{[]byte("gone arm64")})
	goneIdx := f.manifest("team/gone", ociIndex, map[string]any{"manifests": []desc{gone1, gone2}}, "v1")

	// An old signature on a fresh image, and a fresh SBOM on an old image.
	signed, signedBlobs := f.image("team/sig", [][]byte{[]byte("signed layer")}, "signed")
	sigCfg := f.blob("team/sig", []byte(`{"sig":1}`))
	sig := f.manifest("team/sig", ociManifest, map[string]any{"config": sigCfg, "layers": []desc{}, "subject": signed})
	subj, subjBlobs := f.image("team/sig", [][]byte{[]byte("old subject layer")})
	sbomCfg := f.blob("team/sig", []byte(`{"sbom":1}`))
	sbom := f.manifest("team/sig", ociManifest, map[string]any{"config": sbomCfg, "layers": []desc{}, "subject": subj}, "sbom")

	// An old manifest whose tag was moved onto it recently.
	retagged, retaggedBlobs := f.image("team/retag", [][]byte{[]byte("retagged layer")}, "stable")

	// Unreferenced blobs: one old, one young (an upload in progress).
	garbage := f.blob("team/app", []byte("garbage"))
	young := f.blob("team/app", []byte("young upload"))

	f.ageAll(3 * day)
	for _, b := range append(freshBlobs, young) {
		f.ageBlob(b, time.Minute)
	}
	f.ageEntry("team/app", storage.Manifests, freshImg.Digest, time.Hour)
	f.ageEntry("team/app", storage.Tags, "fresh", time.Hour)
	f.ageEntry("team/app", storage.Blobs, young.Digest, time.Minute)
	f.ageEntry("team/multi", storage.Manifests, idx.Digest, time.Hour)
	f.ageEntry("team/sig", storage.Manifests, signed.Digest, time.Hour)
	f.ageEntry("team/sig", storage.Manifests, sbom.Digest, time.Hour)
	f.ageEntry("team/retag", storage.Tags, "stable", time.Hour)

	pol := prune.Policy{Expiration: day}
	dry, err := prune.Run(t.Context(), f.d, prune.Policy{Expiration: day, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !f.hasManifest("team/app", oldImg) || !f.hasBlob(garbage) {
		t.Fatal("a dry run removed something")
	}
	rep, err := prune.Run(t.Context(), f.d, pol)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run: %s", dry)
	t.Logf("prune:   %s", rep)
	if dry.Removed != rep.Removed || dry.Blobs != rep.Blobs {
		t.Errorf("the dry run announced %d manifests and %d blobs, the run removed %d and %d", dry.Removed, dry.Blobs, rep.Removed, rep.Blobs)
	}

	type check struct {
		what string
		ok   bool
	}
	var checks []check
	keptImage := func(what, repo string, m desc, blobs []desc) {
		checks = append(checks, check{what + " manifest kept", f.hasManifest(repo, m)})
		for i, b := range blobs {
			checks = append(checks, check{fmt.Sprintf("%s blob %d kept", what, i), f.hasBlob(b)})
		}
	}
	removedImage := func(what, repo string, m desc, blobs []desc) {
		checks = append(checks, check{what + " manifest removed", !f.hasManifest(repo, m)})
		checks = append(checks, check{what + " manifest bytes removed", !f.hasBlob(m)})
		for i, b := range blobs {
			if b.Digest == digest.FromBytes(shared).String() {
				continue
			}
			checks = append(checks, check{fmt.Sprintf("%s blob %d removed", what, i), !f.hasBlob(b)})
		}
	}
	removedImage("expired image", "team/app", oldImg, oldBlobs)
	checks = append(checks, check{"expired tag removed", !f.hasTag("team/app", "old")})
	keptImage("fresh image", "team/app", freshImg, freshBlobs)
	checks = append(checks, check{"fresh tag kept", f.hasTag("team/app", "fresh")})
	checks = append(checks, check{"fresh index kept", f.hasManifest("team/multi", idx) && f.hasTag("team/multi", "latest")})
	keptImage("old amd64 platform of a fresh index", "team/multi", amd, amdBlobs)
	keptImage("old arm64 platform of a fresh index", "team/multi", arm, armBlobs)
	removedImage("expired index", "team/gone", goneIdx, nil)
	removedImage("platform of an expired index", "team/gone", gone1, gone1Blobs)
	removedImage("platform of an expired index", "team/gone", gone2, gone2Blobs)
	keptImage("signed fresh image", "team/sig", signed, signedBlobs)
	keptImage("old signature of a fresh image", "team/sig", sig, []desc{sigCfg})
	keptImage("old subject of a fresh SBOM", "team/sig", subj, subjBlobs)
	keptImage("fresh SBOM", "team/sig", sbom, []desc{sbomCfg})
	keptImage("freshly retagged old image", "team/retag", retagged, retaggedBlobs)
	checks = append(checks, check{"shared base layer kept", f.hasBlob(desc{Digest: digest.FromBytes(shared).String()})})
	checks = append(checks, check{"old unreferenced blob removed", !f.hasBlob(garbage)})
	checks = append(checks, check{"young unreferenced blob kept", f.hasBlob(young)})
	if _, err := f.d.GetEntry(t.Context(), "team/app", storage.Blobs, garbage.Digest); !errors.Is(err, storage.ErrNotFound) {
		checks = append(checks, check{"link to a removed blob removed", false})
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("not so: %s", c.what)
		}
	}
	names, err := f.d.Repositories(t.Context(), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "team/gone" {
			t.Errorf("the repository whose manifests all expired is still in the catalog: %v", names)
		}
	}

	// A second run finds nothing more to do.
	again, err := prune.Run(t.Context(), f.d, pol)
	if err != nil {
		t.Fatal(err)
	}
	if again.Removed != 0 || again.Blobs != 0 || again.Tags != 0 {
		t.Errorf("a second prune removed more: %s", again)
	}
}

// TestNoExpirationKeepsManifests checks that without an expiration only
// garbage and abandoned uploads go.
func TestNoExpirationKeepsManifests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	img, blobs := f.image("team/app", [][]byte{[]byte("layer")}, "v1")
	garbage := f.blob("team/app", []byte("garbage"))
	f.ageAll(1000 * time.Hour)
	up, err := f.d.NewUpload(t.Context(), "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two hours later (the session's start is recorded, not a file time).
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	rep, err := prune.Run(t.Context(), f.d, prune.Policy{}, prune.WithClock(later))
	if err != nil {
		t.Fatal(err)
	}
	if !f.hasManifest("team/app", img) || !f.hasTag("team/app", "v1") {
		t.Fatal("a manifest was removed without an expiration")
	}
	for _, b := range blobs {
		if !f.hasBlob(b) {
			t.Fatalf("blob %s of a kept image removed", b.Digest)
		}
	}
	if f.hasBlob(garbage) {
		t.Error("an old unreferenced blob survived")
	}
	if _, err := f.d.GetUpload(t.Context(), up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("an upload started two hours before survived: %v", err)
	}
	if rep.Uploads != 1 || rep.Blobs != 1 || rep.Removed != 0 {
		t.Errorf("report %s, want 1 upload, 1 blob, 0 manifests", rep)
	}
	// A young session survives.
	young, err := f.d.NewUpload(t.Context(), "team/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prune.Run(t.Context(), f.d, prune.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.d.GetUpload(t.Context(), young.ID); err != nil {
		t.Errorf("a young upload was removed: %v", err)
	}
}
