package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// resolve is phase 1: read everything, write nothing.
func (p *promoter) resolve(ctx context.Context) error {
	var names []string
	for _, ip := range p.images {
		names = append(names, ip.repo)
	}
	repos, err := p.client.Repositories(ctx, p.t.host, names, true)
	if errors.Is(err, oci.ErrDenied) {
		return fmt.Errorf("%s (%s) were refused by %s: %w", p.credName, p.spec.Credentials.Username, p.t.host, err)
	}
	if err != nil {
		return fmt.Errorf("reaching the registry %s at %s: %w", p.t.name, p.t.host, err)
	}
	for _, ip := range p.images {
		ip.r = repos[ip.repo]
	}
	return p.each(ctx, p.resolveImage)
}

func (p *promoter) resolveImage(ctx context.Context, ip *imagePlan) error {
	where := fmt.Sprintf("%s[%d] (%s)", p.param, ip.index, ip.img.Repository)
	if granted, known := ip.r.PushGranted(); known && !granted {
		return fmt.Errorf("%s: %s (%s) may not push to %s", where, p.credName, p.spec.Credentials.Username, p.t.name+"/"+ip.repo)
	} else if !known {
		if err := ip.r.CheckPush(ctx); err != nil {
			return fmt.Errorf("%s: %s (%s) may not push: %w", where, p.credName, p.spec.Credentials.Username, err)
		}
	}
	if p.api != nil {
		if err := p.api.checkRepository(ctx, ip.repo); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		tags, err := p.api.tags(ctx, ip.repo)
		if err != nil && !errors.Is(err, oci.ErrNotFound) {
			return fmt.Errorf("%s: %w", where, err)
		}
		ip.listing = map[string]apiTag{}
		for _, t := range tags {
			ip.listing[t.Name] = t
		}
	}
	fetched := map[string]*transfer.Manifest{} // by digest
	var errs []error
	for _, tp := range ip.tags {
		if err := p.resolveTag(ctx, ip, tp, fetched); err != nil {
			errs = append(errs, fmt.Errorf("%s, tag %s: %w", where, tp.tag, err))
		}
	}
	return errors.Join(errs...)
}

func (p *promoter) resolveTag(ctx context.Context, ip *imagePlan, tp *tagPlan, fetched map[string]*transfer.Manifest) error {
	// The staged manifest: reuse the bytes when the web API's listing says
	// the staging tag points to a digest already fetched (the tags of one
	// image are staged from one build).
	if lt, ok := ip.listing[tp.staging]; ok && fetched[lt.Digest] != nil {
		tp.manifest = fetched[lt.Digest]
	} else {
		m, err := ip.r.Get(ctx, tp.staging)
		switch {
		case err == nil:
			tp.manifest = m
			fetched[m.Digest] = m
		case errors.Is(err, oci.ErrNotFound):
			return p.recover(ctx, ip, tp)
		default:
			return err
		}
	}
	tp.digest, tp.mediaType = tp.manifest.Digest, tp.manifest.MediaType
	if ip.listing != nil {
		tp.previous = ip.listing[tp.tag].Digest
		return nil
	}
	d, err := ip.r.Head(ctx, tp.tag)
	switch {
	case err == nil:
		tp.previous = d.Digest
	case errors.Is(err, oci.ErrNotFound):
	default:
		return err
	}
	return nil
}

// recover handles a missing staging tag: fine if the final tag already
// holds an image built for this change (an interrupted promote), an error
// otherwise.
func (p *promoter) recover(ctx context.Context, ip *imagePlan, tp *tagPlan) error {
	staging := p.t.ref(ip.repo, tp.staging)
	final := p.t.ref(ip.repo, tp.tag)
	missing := fmt.Sprintf("staging tag %s does not exist (%s stages it in the gate: did the upload job run for this change?)", staging, p.upload)
	if p.spec.Zuul.Change == "" {
		return fmt.Errorf("%s; without zuul.change an earlier promote cannot be recognised from %s", missing, final)
	}
	m, err := ip.r.Get(ctx, tp.tag)
	if errors.Is(err, oci.ErrNotFound) {
		return fmt.Errorf("%s, and %s does not exist either", missing, final)
	}
	if err != nil {
		return err
	}
	cfg, err := imageConfig(ctx, ip.r, m)
	if err != nil {
		return fmt.Errorf("%s; reading %s to recognise an earlier promote: %w", missing, final, err)
	}
	if got := cfg.Config.Labels[ChangeLabel]; got != p.spec.Zuul.Change {
		label := "no " + ChangeLabel + " label"
		if got != "" {
			label = fmt.Sprintf("%s=%s", ChangeLabel, got)
		}
		return fmt.Errorf("%s, and %s (%s) carries %s, not change %s: it was not promoted from this change", missing, final, m.Digest, label, p.spec.Zuul.Change)
	}
	tp.already, tp.stagingGone = true, true
	tp.digest, tp.mediaType, tp.previous = m.Digest, m.MediaType, m.Digest
	return nil
}

// config is the part of an image configuration promote reads.
type config struct {
	Created time.Time `json:"created"`
	Config  struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
}

// imageConfig reads the configuration of the image m, or of the first
// platform image of the index m (attestation manifests, platform
// unknown/unknown, are skipped).
func imageConfig(ctx context.Context, r *transfer.Repository, m *transfer.Manifest) (*config, error) {
	for depth := 0; depth < 2; depth++ {
		var doc struct {
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
			Manifests []struct {
				Digest   string `json:"digest"`
				Platform *struct {
					Architecture string `json:"architecture"`
					OS           string `json:"os"`
				} `json:"platform"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(m.Body, &doc); err != nil {
			return nil, fmt.Errorf("decoding manifest %s: %w", m.Digest, err)
		}
		if !oci.IsIndex(m.MediaType) {
			if doc.Config.Digest == "" {
				return nil, fmt.Errorf("manifest %s has no config", m.Digest)
			}
			b, err := r.Blob(ctx, doc.Config.Digest)
			if err != nil {
				return nil, err
			}
			var c config
			if err := json.Unmarshal(b, &c); err != nil {
				return nil, fmt.Errorf("decoding config %s: %w", doc.Config.Digest, err)
			}
			return &c, nil
		}
		child := ""
		for _, d := range doc.Manifests {
			if d.Platform == nil || d.Platform.OS != "unknown" {
				child = d.Digest
				break
			}
		}
		if child == "" {
			return nil, fmt.Errorf("index %s has no platform image", m.Digest)
		}
		next, err := r.Get(ctx, child)
		if err != nil {
			return nil, err
		}
		m = next
	}
	return nil, fmt.Errorf("index %s nests indexes", m.Digest)
}
