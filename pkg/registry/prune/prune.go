// Package prune removes what a long-lived registry no longer needs, while
// it serves: manifests older than an expiration, then blobs no manifest it
// keeps references, and abandoned uploads. It works on any storage.Driver,
// so every replica of a registry on one bucket may run it; two prunes at
// once only repeat each other's deletes.
//
// What is kept:
//
//   - A manifest is fresh when its manifest entry or one of the tags
//     pointing to it was written within Policy.Expiration (pushing or
//     tagging it again refreshes it). Fresh manifests are kept, and so is
//     everything they lead to in their repository: the manifests an index
//     lists (so a multi-arch tag never loses a platform), the subject of a
//     manifest, and the referrers of a kept manifest (signatures, SBOMs).
//     Without an expiration no manifest is removed.
//   - A blob is kept when a kept manifest references it (config, layers,
//     the manifest's own bytes), when it was written within
//     Policy.GracePeriod (default 1 hour: a push uploads its blobs before
//     its manifest), or when a repository of the catalog linked it within
//     the grace period (a cross-repository mount or a re-upload of an old
//     blob in an ongoing push).
//   - An upload session that received nothing for Policy.UploadMaxAge
//     (default 1 hour) is removed, as are leftovers of failed writes that the driver
//     can find (storage/s3: orphaned segments and multipart uploads).
//
// Removing a manifest removes its tags first, then its referrer record,
// then the manifest entry: a crash in between leaves no tag pointing to a
// missing manifest. Blobs are removed last, so a manifest never outlives
// its blobs.
//
// The one race prune cannot close without locking the registry: a client
// that found an old, unreferenced blob present (HEAD) just before prune
// removed it, in a repository that has no manifest yet, sees its manifest
// PUT refused with MANIFEST_BLOB_UNKNOWN and pushes the blob again.
package prune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// DefaultGracePeriod is how long a blob is kept after it was written or
// linked, referenced or not, unless Policy.GracePeriod says otherwise.
const DefaultGracePeriod = time.Hour

// DefaultUploadMaxAge is the age after which an upload session is
// abandoned, unless Policy.UploadMaxAge says otherwise.
const DefaultUploadMaxAge = time.Hour

// maxManifestSize bounds what prune reads of a manifest.
const maxManifestSize = 16 << 20

// Policy says what to remove.
type Policy struct {
	// Expiration is the age after which a manifest that nothing fresh
	// leads to is removed; 0 keeps every manifest.
	Expiration time.Duration
	// GracePeriod protects young blobs (0 means DefaultGracePeriod; a
	// negative value means none, for tests).
	GracePeriod time.Duration
	// UploadMaxAge is the age after which an upload session is removed
	// (0 means DefaultUploadMaxAge).
	UploadMaxAge time.Duration
	// DryRun computes and reports without removing anything.
	DryRun bool
}

// Report counts what a run removed (or, in a dry run, would remove).
type Report struct {
	Repositories int   // repositories examined
	Manifests    int   // manifests examined
	Kept         int   // manifests kept
	Removed      int   // manifests removed
	Tags         int   // tags removed
	Blobs        int   // blobs removed
	BlobBytes    int64 // bytes of the blobs removed
	Links        int   // repository links to removed blobs removed
	Uploads      int   // upload sessions removed
	Orphans      int   // leftovers of failed writes removed
	Duration     time.Duration
}

// String summarises the report on one line.
func (r Report) String() string {
	return fmt.Sprintf("%d repositories, %d manifests: kept %d, removed %d (%d tags); removed %d blobs (%d bytes), %d links, %d uploads, %d leftovers in %s",
		r.Repositories, r.Manifests, r.Kept, r.Removed, r.Tags, r.Blobs, r.BlobBytes, r.Links, r.Uploads, r.Orphans, r.Duration.Round(time.Millisecond))
}

// OrphanRemover is implemented by drivers that can find leftovers of
// failed writes (storage/s3).
type OrphanRemover interface {
	RemoveOrphans(ctx context.Context, before time.Time) (int, error)
}

// Option configures a run.
type Option func(*pruner)

// WithLogger sets the logger for progress and for what is removed.
// Default: discard.
func WithLogger(l *slog.Logger) Option { return func(p *pruner) { p.log = l } }

// WithClock sets the time source (tests). Default: time.Now.
func WithClock(now func() time.Time) Option { return func(p *pruner) { p.now = now } }

// WithParallelism sets how many storage calls run at once (default 16).
func WithParallelism(n int) Option { return func(p *pruner) { p.parallel = max(n, 1) } }

type pruner struct {
	d        storage.Driver
	pol      Policy
	log      *slog.Logger
	now      func() time.Time
	parallel int
	rep      Report
	mu       sync.Mutex
}

// manifest is what prune knows of a stored manifest.
type manifest struct {
	dg       digest.Digest
	fresh    bool
	modTime  time.Time
	readable bool
	children []digest.Digest // manifests of an index
	blobs    []digest.Digest // config and layers
	subject  digest.Digest
	tags     []string
}

// repo is what prune knows of a repository.
type repo struct {
	name      string
	manifests map[digest.Digest]*manifest
	links     []storage.Entry // the Blobs table
}

// Run prunes the registry stored in d.
func Run(ctx context.Context, d storage.Driver, pol Policy, opts ...Option) (Report, error) {
	p := &pruner{d: d, pol: pol, now: time.Now, parallel: 16}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.pol.GracePeriod == 0 {
		p.pol.GracePeriod = DefaultGracePeriod
	}
	if p.pol.UploadMaxAge <= 0 {
		p.pol.UploadMaxAge = DefaultUploadMaxAge
	}
	if p.pol.Expiration < 0 {
		return Report{}, fmt.Errorf("prune: expiration %s is negative", p.pol.Expiration)
	}
	start := p.now()
	err := p.run(ctx, start)
	p.rep.Duration = p.now().Sub(start)
	return p.rep, err
}

func (p *pruner) run(ctx context.Context, now time.Time) error {
	if err := p.pruneUploads(ctx, now); err != nil {
		return err
	}
	names, err := p.d.Repositories(ctx, "", -1)
	if err != nil {
		return fmt.Errorf("prune: listing repositories: %w", err)
	}
	p.rep.Repositories = len(names)
	repos := make([]*repo, len(names))
	err = storage.ForEach(ctx, 4, names, func(ctx context.Context, i int, name string) error {
		r, err := p.loadRepo(ctx, name, now)
		repos[i] = r
		return err
	})
	if err != nil {
		return err
	}
	referenced := map[digest.Digest]bool{}
	for _, r := range repos {
		kept := p.mark(r)
		if len(kept) < len(r.manifests) && !p.pol.DryRun {
			// A push during the reads may have refreshed a candidate (or
			// an index leading to one): read the times again, just before
			// removing.
			if err := p.refresh(ctx, r, now); err != nil {
				return err
			}
			kept = p.mark(r)
		}
		var expired []*manifest
		for _, m := range r.manifests {
			p.rep.Manifests++
			if kept[m.dg] {
				p.rep.Kept++
				referenced[m.dg] = true
				for _, b := range m.blobs {
					referenced[b] = true
				}
				continue
			}
			expired = append(expired, m)
		}
		err := storage.ForEach(ctx, p.parallel, expired, func(ctx context.Context, _ int, m *manifest) error {
			return p.removeManifest(ctx, r, m, now)
		})
		if err != nil {
			return err
		}
	}
	return p.pruneBlobs(ctx, repos, referenced, now)
}

// pruneUploads removes abandoned sessions and, when the driver can, the
// leftovers of failed writes.
func (p *pruner) pruneUploads(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-p.pol.UploadMaxAge)
	var old []string
	err := p.d.WalkUploads(ctx, func(u storage.Upload) error {
		last := u.Started
		if u.Updated.After(last) {
			last = u.Updated
		}
		if last.Before(cutoff) {
			old = append(old, u.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prune: listing uploads: %w", err)
	}
	for _, id := range old {
		if p.pol.DryRun {
			p.rep.Uploads++
			continue
		}
		if err := p.d.AbortUpload(ctx, id); err != nil && !errors.Is(err, storage.ErrUploadUnknown) {
			return fmt.Errorf("prune: removing upload %s: %w", id, err)
		}
		p.rep.Uploads++
		p.log.Info("removed an abandoned upload", "upload", id)
	}
	if or, ok := p.d.(OrphanRemover); ok && !p.pol.DryRun {
		n, err := or.RemoveOrphans(ctx, cutoff)
		p.rep.Orphans += n
		if err != nil {
			return fmt.Errorf("prune: removing leftovers of failed writes: %w", err)
		}
	}
	return nil
}

// listAll lists a whole table.
func listAll(ctx context.Context, d storage.Driver, name string, t storage.Table) ([]storage.Entry, error) {
	var all []storage.Entry
	after := ""
	for {
		es, err := d.ListEntries(ctx, name, t, after, 1000)
		if err != nil {
			return nil, fmt.Errorf("prune: listing %s of %s: %w", t, name, err)
		}
		all = append(all, es...)
		if len(es) < 1000 {
			return all, nil
		}
		after = es[len(es)-1].Key
	}
}

// loadRepo reads a repository's manifests, tags and links.
func (p *pruner) loadRepo(ctx context.Context, name string, now time.Time) (*repo, error) {
	r := &repo{name: name, manifests: map[digest.Digest]*manifest{}}
	if err := p.loadTimes(ctx, r, now); err != nil {
		return nil, err
	}
	ms := make([]*manifest, 0, len(r.manifests))
	for _, m := range r.manifests {
		ms = append(ms, m)
	}
	err := storage.ForEach(ctx, p.parallel, ms, func(ctx context.Context, _ int, m *manifest) error {
		return p.readManifest(ctx, m)
	})
	if err != nil {
		return nil, err
	}
	r.links, err = listAll(ctx, p.d, name, storage.Blobs)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// refresh reads the times of a repository's manifests and tags again; a
// manifest pushed since is added without references (it is fresh, so it
// is kept, and its blobs are young).
func (p *pruner) refresh(ctx context.Context, r *repo, now time.Time) error {
	return p.loadTimes(ctx, r, now)
}

// loadTimes lists the manifests and tags of r and sets each manifest's
// time (its entry's, or its newest tag's) and freshness.
func (p *pruner) loadTimes(ctx context.Context, r *repo, now time.Time) error {
	name := r.name
	mes, err := listAll(ctx, p.d, name, storage.Manifests)
	if err != nil {
		return err
	}
	for _, e := range mes {
		dg, err := digest.Parse(e.Key)
		if err != nil {
			continue
		}
		if m := r.manifests[dg]; m != nil {
			m.modTime, m.tags = e.ModTime, nil
		} else {
			r.manifests[dg] = &manifest{dg: dg, modTime: e.ModTime}
		}
	}
	tes, err := listAll(ctx, p.d, name, storage.Tags)
	if err != nil {
		return err
	}
	type tagged struct {
		tag string
		dg  digest.Digest
	}
	tags := make([]tagged, len(tes))
	err = storage.ForEach(ctx, p.parallel, tes, func(ctx context.Context, i int, e storage.Entry) error {
		v, err := p.d.GetEntry(ctx, name, storage.Tags, e.Key)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("prune: reading tag %s of %s: %w", e.Key, name, err)
		}
		dg, err := digest.Parse(strings.TrimSpace(string(v)))
		if err == nil {
			tags[i] = tagged{e.Key, dg}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, t := range tags {
		if m := r.manifests[t.dg]; m != nil {
			m.tags = append(m.tags, t.tag)
			if tes[i].ModTime.After(m.modTime) {
				m.modTime = tes[i].ModTime
			}
		}
	}
	for _, m := range r.manifests {
		m.fresh = p.pol.Expiration == 0 || now.Sub(m.modTime) < p.pol.Expiration
	}
	return nil
}

// doc is the part of a manifest or index prune follows.
type doc struct {
	Config    *desc  `json:"config"`
	Layers    []desc `json:"layers"`
	Manifests []desc `json:"manifests"`
	Subject   *desc  `json:"subject"`
	Blobs     []desc `json:"blobs"` // artifact manifests (OCI 1.1 drafts)
}

type desc struct {
	Digest string `json:"digest"`
}

// readManifest reads a manifest's references. A manifest whose bytes are
// missing or unreadable references nothing (it is kept or removed by its
// age alone).
func (p *pruner) readManifest(ctx context.Context, m *manifest) error {
	rc, err := p.d.OpenBlob(ctx, m.dg, 0, -1)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("prune: reading manifest %s: %w", m.dg, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestSize))
	if err != nil {
		return fmt.Errorf("prune: reading manifest %s: %w", m.dg, err)
	}
	var dd doc
	if json.Unmarshal(b, &dd) != nil {
		p.log.Warn("a manifest is not JSON: it references nothing", "digest", m.dg)
		return nil
	}
	m.readable = true
	add := func(list *[]digest.Digest, s string) {
		if dg, err := digest.Parse(s); err == nil {
			*list = append(*list, dg)
		}
	}
	if dd.Config != nil {
		add(&m.blobs, dd.Config.Digest)
	}
	for _, l := range dd.Layers {
		add(&m.blobs, l.Digest)
	}
	for _, l := range dd.Blobs {
		add(&m.blobs, l.Digest)
	}
	for _, c := range dd.Manifests {
		add(&m.children, c.Digest)
	}
	if dd.Subject != nil {
		if s, err := digest.Parse(dd.Subject.Digest); err == nil {
			m.subject = s
		}
	}
	return nil
}

// mark returns the manifests of r to keep: the fresh ones and everything
// they lead to (index children, subjects, referrers).
func (p *pruner) mark(r *repo) map[digest.Digest]bool {
	referrers := map[digest.Digest][]digest.Digest{}
	for _, m := range r.manifests {
		if m.subject != "" {
			referrers[m.subject] = append(referrers[m.subject], m.dg)
		}
	}
	kept := map[digest.Digest]bool{}
	var queue []digest.Digest
	for _, m := range r.manifests {
		if m.fresh {
			kept[m.dg] = true
			queue = append(queue, m.dg)
		}
	}
	for len(queue) > 0 {
		dg := queue[0]
		queue = queue[1:]
		var next []digest.Digest
		if m := r.manifests[dg]; m != nil {
			next = append(next, m.children...)
			if m.subject != "" {
				next = append(next, m.subject)
			}
		}
		next = append(next, referrers[dg]...)
		for _, n := range next {
			if !kept[n] && r.manifests[n] != nil {
				kept[n] = true
				queue = append(queue, n)
			}
		}
	}
	return kept
}

// count updates the report under the lock.
func (p *pruner) count(f func(*Report)) {
	p.mu.Lock()
	f(&p.rep)
	p.mu.Unlock()
}

// removeManifest removes an expired manifest: its tags (unless moved
// meanwhile), its referrer record, then its entry.
func (p *pruner) removeManifest(ctx context.Context, r *repo, m *manifest, now time.Time) error {
	if p.pol.DryRun {
		p.count(func(r *Report) { r.Removed++; r.Tags += len(m.tags) })
		return nil
	}
	for _, tag := range m.tags {
		v, err := p.d.GetEntry(ctx, r.name, storage.Tags, tag)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return fmt.Errorf("prune: reading tag %s of %s: %w", tag, r.name, err)
		}
		if strings.TrimSpace(string(v)) != m.dg.String() {
			continue // moved meanwhile
		}
		if err := p.d.DeleteEntry(ctx, r.name, storage.Tags, tag); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("prune: removing tag %s of %s: %w", tag, r.name, err)
		}
		p.count(func(r *Report) { r.Tags++ })
	}
	if m.subject != "" {
		if err := p.d.DeleteEntry(ctx, r.name, storage.Referrers(m.subject), m.dg.String()); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("prune: removing referrer %s of %s: %w", m.dg, r.name, err)
		}
	}
	if err := p.d.DeleteEntry(ctx, r.name, storage.Manifests, m.dg.String()); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("prune: removing manifest %s of %s: %w", m.dg, r.name, err)
	}
	p.count(func(r *Report) { r.Removed++ })
	p.log.Info("removed an expired manifest", "repository", r.name, "digest", m.dg, "tags", m.tags, "age", now.Sub(m.modTime).Round(time.Second))
	return nil
}

// pruneBlobs removes the blobs no kept manifest references that are older
// than the grace period and not freshly linked, and the links to them.
func (p *pruner) pruneBlobs(ctx context.Context, repos []*repo, referenced map[digest.Digest]bool, now time.Time) error {
	cutoff := now.Add(-p.pol.GracePeriod)
	if p.pol.GracePeriod < 0 {
		cutoff = now.Add(time.Hour) // everything is old enough
	}
	protected := map[digest.Digest]bool{}
	for _, r := range repos {
		for _, l := range r.links {
			if !l.ModTime.Before(cutoff) {
				if dg, err := digest.Parse(l.Key); err == nil {
					protected[dg] = true
				}
			}
		}
	}
	var doomed []storage.BlobInfo
	err := p.d.WalkBlobs(ctx, func(b storage.BlobInfo) error {
		if !referenced[b.Digest] && !protected[b.Digest] && b.ModTime.Before(cutoff) {
			doomed = append(doomed, b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prune: listing blobs: %w", err)
	}
	removed := map[digest.Digest]bool{}
	if p.pol.DryRun {
		for _, b := range doomed {
			p.rep.Blobs++
			p.rep.BlobBytes += b.Size
			removed[b.Digest] = true
		}
	} else {
		err = storage.ForEach(ctx, p.parallel, doomed, func(ctx context.Context, _ int, b storage.BlobInfo) error {
			err := p.d.DeleteBlob(ctx, b.Digest)
			if errors.Is(err, storage.ErrNotFound) {
				return nil
			} else if err != nil {
				return fmt.Errorf("prune: removing blob %s: %w", b.Digest, err)
			}
			p.mu.Lock()
			p.rep.Blobs++
			p.rep.BlobBytes += b.Size
			removed[b.Digest] = true
			p.mu.Unlock()
			return nil
		})
		if err != nil {
			return err
		}
	}
	type link struct{ repo, key string }
	var links []link
	for _, r := range repos {
		for _, l := range r.links {
			if dg, err := digest.Parse(l.Key); err == nil && removed[dg] {
				links = append(links, link{r.name, l.Key})
			}
		}
	}
	if p.pol.DryRun {
		p.rep.Links += len(links)
		return nil
	}
	return storage.ForEach(ctx, p.parallel, links, func(ctx context.Context, _ int, l link) error {
		err := p.d.DeleteEntry(ctx, l.repo, storage.Blobs, l.key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("prune: removing link %s of %s: %w", l.key, l.repo, err)
		}
		p.mu.Lock()
		p.rep.Links++
		p.mu.Unlock()
		return nil
	})
}
