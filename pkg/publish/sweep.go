package publish

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// sweep is phase 4: staging tags older than the limit go.
func (p *promoter) sweep(ctx context.Context) {
	now := p.o.now()
	own := map[string]bool{} // tags this run promotes or deletes, per repository
	for _, ip := range p.images {
		for _, tp := range ip.tags {
			own[ip.repo+":"+tp.tag] = true
			own[ip.repo+":"+tp.staging] = true
		}
	}
	var mu sync.Mutex
	var found []Deletion
	_ = p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		type cand struct {
			tag, digest string
			age         time.Duration
		}
		var cands []cand
		if p.api != nil {
			for _, t := range ip.listing {
				if own[ip.repo+":"+t.Name] || !zuul.IsStagingTag(t.Name, p.pipelines...) {
					continue
				}
				if t.Updated.IsZero() {
					p.warn("%s: %s gives no modification time; the sweep leaves it", p.t.ref(ip.repo, t.Name), p.api.name())
					continue
				}
				cands = append(cands, cand{t.Name, t.Digest, now.Sub(t.Updated)})
			}
		} else {
			tags, err := ip.r.Tags(ctx)
			if err != nil {
				p.warn("sweeping stale staging tags of %s: %v", p.t.name+"/"+ip.repo, err)
				return nil
			}
			for _, t := range tags {
				if own[ip.repo+":"+t] || !zuul.IsStagingTag(t, p.pipelines...) {
					continue
				}
				created, digest, err := p.created(ctx, ip.r, t)
				if err != nil {
					p.warn("%s: the sweep cannot tell its age: %v", p.t.ref(ip.repo, t), err)
					continue
				}
				cands = append(cands, cand{t, digest, now.Sub(created)})
			}
		}
		for _, c := range cands {
			if c.age <= p.spec.StaleAge {
				continue
			}
			d := Deletion{Repository: ip.img.Repository, Tag: c.tag, Reference: p.t.ref(ip.repo, c.tag),
				Digest: c.digest, Reason: "stale", AgeSeconds: int64(c.age / time.Second)}
			if !p.o.check {
				d.Deleted = p.deleteTag(ctx, ip, c.tag, "stale")
			}
			mu.Lock()
			found = append(found, d)
			mu.Unlock()
		}
		return nil
	})
	sort.Slice(found, func(i, j int) bool { return found[i].Reference < found[j].Reference })
	p.res.Deleted = append(p.res.Deleted, found...)
}

// minCreated is the earliest creation time the sweep believes: images
// built reproducibly carry the epoch (or SOURCE_DATE_EPOCH), which says
// nothing of when the tag was pushed.
var minCreated = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// created is a tag's age reference on a registry without tag timestamps:
// the creation time in its image's configuration.
func (p *promoter) created(ctx context.Context, r *transfer.Repository, tag string) (time.Time, string, error) {
	return imageCreated(ctx, r, tag)
}

// imageCreated is the creation time in the configuration of the image tag
// of r (the first platform's, for an index), and the tag's digest.
func imageCreated(ctx context.Context, r *transfer.Repository, tag string) (time.Time, string, error) {
	m, err := r.Get(ctx, tag)
	if err != nil {
		return time.Time{}, "", err
	}
	cfg, err := imageConfig(ctx, r, m)
	if err != nil {
		return time.Time{}, m.Digest, err
	}
	if cfg.Created.Before(minCreated) {
		return time.Time{}, m.Digest, fmt.Errorf("the image's creation time %s is not a real time (a reproducible build?)", cfg.Created.Format(time.RFC3339))
	}
	return cfg.Created, m.Digest, nil
}
