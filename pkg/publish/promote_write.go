package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/imagegate/imagegate/pkg/oci"
)

// put is phase 2: every final tag gets the staged manifest's bytes.
func (p *promoter) put(ctx context.Context) error {
	err := p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		for _, tp := range ip.tags {
			if tp.manifest == nil || tp.previous == tp.digest {
				continue
			}
			if err := ip.r.Put(ctx, tp.tag, tp.manifest); err != nil {
				return fmt.Errorf("%s[%d] (%s), tag %s: %w", p.param, ip.index, ip.img.Repository, tp.tag, err)
			}
			p.o.log.Info("promoted", "reference", p.t.ref(ip.repo, tp.tag), "digest", tp.digest)
		}
		return nil
	})
	if err != nil {
		// Staging tags are all still there: running promote again
		// finishes the job.
		return fmt.Errorf("promoting (no staging tag was deleted; run the promote again to finish): %w", err)
	}
	return nil
}

// deleteStaging is phase 3. Failures are warnings: the images are
// promoted, and the sweep removes what is left within a day.
func (p *promoter) deleteStaging(ctx context.Context) {
	type key struct{ repo, tag string }
	done := map[key]bool{}
	var mu sync.Mutex
	_ = p.each(ctx, func(ctx context.Context, ip *imagePlan) error {
		for _, tp := range ip.tags {
			if tp.stagingGone {
				continue
			}
			if p.deleteTag(ctx, ip, tp.staging, "promoted") {
				mu.Lock()
				done[key{ip.img.Repository, tp.staging}] = true
				mu.Unlock()
			}
		}
		return nil
	})
	for i := range p.res.Deleted {
		d := &p.res.Deleted[i]
		d.Deleted = done[key{d.Repository, d.Tag}]
	}
}

// deleteTag deletes one tag through Docker Hub's web API or the registry's
// DELETE, and says whether it is gone. A tag already gone counts as
// deleted. A registry that cannot delete a single tag gets a warning:
// deleting the manifest by digest instead would take every other tag of it
// along, the promoted one included.
func (p *promoter) deleteTag(ctx context.Context, ip *imagePlan, tag, why string) bool {
	ref := p.t.ref(ip.repo, tag)
	var err error
	if p.api != nil {
		err = p.api.deleteTag(ctx, ip.repo, tag)
		if errors.Is(err, oci.ErrNotFound) {
			err = nil
		}
	} else {
		err = ip.r.Delete(ctx, tag)
		if errors.Is(err, oci.ErrNotFound) {
			err = nil
		}
	}
	switch {
	case err == nil:
		p.o.log.Info("deleted tag", "reference", ref, "reason", why)
		return true
	case errors.Is(err, oci.ErrUnsupported):
		p.warn("%s was left in place: the registry %s cannot delete a single tag (%v); delete it by hand "+
			"(deleting its manifest by digest would also delete every other tag of that manifest)", ref, p.t.host, err)
	default:
		p.warn("%s (%s) could not be deleted: %v", ref, why, err)
	}
	return false
}
