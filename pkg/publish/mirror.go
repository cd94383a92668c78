package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// MirrorImage is one entry of mirror_container_images_images: copy
// src_repository:src_tag to dest_repository:dest_tag, pushing with the
// credentials of dest_registry.
type MirrorImage struct {
	// SrcRepository and DestRepository include their registry
	// (docker.io/library/busybox, quay.io/myorg/busybox).
	SrcRepository  string `ansible:"src_repository,required" json:"src_repository"`
	SrcTag         string `ansible:"src_tag,required" json:"src_tag"`
	DestRepository string `ansible:"dest_repository,required" json:"dest_repository"`
	DestTag        string `ansible:"dest_tag,required" json:"dest_tag"`
	// DestRegistry names the entry of container_registry_credentials
	// that pushes.
	DestRegistry string `ansible:"dest_registry,required" json:"dest_registry"`
}

// MirrorSpec is what container_image_mirror does (upstream's
// mirror-container-images role); its fields are the module's parameters.
type MirrorSpec struct {
	Images      []MirrorImage        `ansible:"mirror_container_images_images,required"`
	Credentials ContainerCredentials `ansible:"container_registry_credentials,required"`
	// Jobs bounds the images copied at once.
	Jobs int `ansible:"jobs" default:"8"`
}

// Mirrored is one image copied, or that would be (check mode).
type Mirrored struct {
	// Source and Destination are the references as given.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Digest and MediaType are the manifest's, the same on both sides.
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// Manifests counts the child manifests of an index copied.
	Manifests int `json:"manifests"`
	// Changed is true when the destination did not point at Digest.
	Changed bool `json:"changed"`
	transfer.BlobStats
	// index is the image's position in the list.
	index int
}

// MirrorResult is what Mirror did.
type MirrorResult struct {
	ansible.Outcome
	Images []Mirrored `json:"images"`
}

// mirrorParam names the image list in messages.
const mirrorParam = "mirror_container_images_images"

// Mirror copies every image of the list as skopeo copy --all does: an
// index is copied whole, every platform, and every manifest keeps its
// bytes and so its digest.
//
// Nothing is sent before every input is known good, as upstream checks
// before its skopeo login: every dest_registry has an entry in
// container_registry_credentials with a username and password, and every
// dest_repository lies in that registry and matches the entry's
// repository expression; then every source is read and every destination
// checked for push (package transfer's Plan), and only then is anything
// copied (CopyAll). A source registry with an entry in
// container_registry_credentials is read with its credentials (and
// registry_url, cert); any other anonymously, as upstream's skopeo does.
func Mirror(ctx context.Context, spec MirrorSpec, opts ...Option) (*MirrorResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := ansible.ApplyDefaults(&spec); err != nil {
		return nil, err
	}
	for _, c := range spec.Credentials {
		o.redact(c.Password)
		o.redact(c.APIToken)
	}
	if err := checkJobs(spec.Jobs); err != nil {
		return nil, err
	}
	res := &MirrorResult{Images: []Mirrored{}}
	if len(spec.Images) == 0 {
		res.Msg = mirrorParam + " is empty: nothing to mirror"
		return res, nil
	}

	// Every image, statically.
	targets := map[string]*containerTarget{}
	var eps endpoints
	var jobs []transfer.Job
	var errs []error
	warned := map[string]bool{}
	seen := map[string]int{}
	for i, im := range spec.Images {
		job, err := spec.plan(i, im, targets, warned, res)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if j, dup := seen[job.Dst]; dup {
			errs = append(errs, fmt.Errorf("%s[%d]: %s:%s is also the destination of %s[%d]", mirrorParam, i, im.DestRepository, im.DestTag, mirrorParam, j))
			continue
		}
		seen[job.Dst] = i
		jobs = append(jobs, job)
		res.Images = append(res.Images, Mirrored{Source: im.SrcRepository + ":" + im.SrcTag, Destination: im.DestRepository + ":" + im.DestTag, index: i})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was mirrored: %w", errors.Join(errs...))
	}
	if err := registryEndpoints(spec.Credentials, &eps); err != nil {
		return nil, err
	}

	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	topts := append(eps.options(), transfer.WithImageJobs(spec.Jobs), transfer.WithLogger(o.log))
	if o.wrap != nil {
		topts = append(topts, transfer.WithTransportWrapper(o.wrap))
	}
	client, err := transfer.New(topts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// Every source and destination read, every destination's push access
	// proved; nothing written.
	planned, err := client.Plan(ctx, jobs)
	if err != nil {
		return nil, fmt.Errorf("nothing was mirrored: %w", describeMirrorErrors(res.Images, planned, err))
	}
	for _, key := range sortedKeys(targets) {
		if err := checkContainerPush(ctx, client, targets[key]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was mirrored: %w", errors.Join(errs...))
	}
	results := planned
	if !o.check {
		var todo []transfer.Job
		var idx []int
		for i, r := range planned {
			if r.Changed {
				todo = append(todo, jobs[i])
				idx = append(idx, i)
			}
		}
		if len(todo) > 0 {
			copied, err := client.CopyAll(ctx, todo)
			if err != nil {
				done := 0
				for _, r := range copied {
					if r.Err == nil {
						done++
					}
				}
				sub := make([]Mirrored, len(idx))
				for k, i := range idx {
					sub[k] = res.Images[i]
				}
				return nil, fmt.Errorf("mirroring (%d of %d images done; run again to finish): %w", done, len(todo), describeMirrorErrors(sub, copied, err))
			}
			results = append([]transfer.Result(nil), planned...)
			for k, i := range idx {
				if copied[k].Digest != planned[i].Digest {
					return nil, fmt.Errorf("%s: copied digest %s, but the source read before was %s (the source tag moved during the copy?)",
						res.Images[i].Destination, copied[k].Digest, planned[i].Digest)
				}
				results[i] = copied[k]
				results[i].Changed = true
			}
		}
	}
	var before, after []string
	for i, r := range results {
		m := &res.Images[i]
		m.Digest, m.MediaType, m.Manifests, m.Changed = r.Digest, r.MediaType, r.Manifests, r.Changed
		if !o.check {
			m.BlobStats = r.BlobStats
		}
		res.Changed = res.Changed || m.Changed
		if m.Changed {
			before = append(before, m.Destination+" -> (other or absent)")
		} else {
			before = append(before, m.Destination+" -> "+m.Digest)
		}
		after = append(after, m.Destination+" -> "+m.Digest)
		if m.Changed && !o.check {
			o.log.Info("mirrored", "source", m.Source, "destination", m.Destination, "digest", m.Digest)
		}
	}
	if o.diff {
		sort.Strings(before)
		sort.Strings(after)
		res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after), BeforeHeader: "destination tags before", AfterHeader: "destination tags after"}}
	}
	return res, nil
}

// plan checks image i and returns its copy job: the destination's entry
// (ContainerCredentials.For: it exists, its repository expression allows
// dest_repository), its username and password, dest_repository in
// dest_registry; the source with its registry, through its entry when it
// has one.
func (spec *MirrorSpec) plan(i int, im MirrorImage, targets map[string]*containerTarget,
	warned map[string]bool, res *MirrorResult) (transfer.Job, error) {
	where := fmt.Sprintf("%s[%d] (%s:%s)", mirrorParam, i, im.DestRepository, im.DestTag)
	for _, tg := range []struct{ param, tag string }{{"src_tag", im.SrcTag}, {"dest_tag", im.DestTag}} {
		if !tagRE.MatchString(tg.tag) {
			return transfer.Job{}, fmt.Errorf("%s: %s %q is not a valid tag", where, tg.param, tg.tag)
		}
	}
	dest := zuul.Image{Repository: im.DestRepository, Registry: im.DestRegistry}
	c, warning, err := spec.Credentials.For(mirrorParam, i, dest)
	if warning != "" && !warned[im.DestRegistry] {
		warned[im.DestRegistry] = true
		res.Warn("%s", warning)
	}
	if err != nil {
		return transfer.Job{}, err
	}
	if c.Username == "" || c.Password == "" {
		return transfer.Job{}, fmt.Errorf("%s: container_registry_credentials[%q] needs username and password to push", where, im.DestRegistry)
	}
	ct, ok := targets[im.DestRegistry]
	if !ok {
		t, err := containerImageTarget(mirrorParam, i, dest, c)
		if err != nil {
			return transfer.Job{}, err
		}
		ct = &containerTarget{key: im.DestRegistry, t: t, creds: c, repos: map[string]bool{}}
		targets[im.DestRegistry] = ct
	} else if !ct.t.hub && !strings.HasPrefix(im.DestRepository, im.DestRegistry+"/") {
		return transfer.Job{}, fmt.Errorf("%s: dest_repository must include its registry, as %s/<namespace>/<name>", where, im.DestRegistry)
	}
	destRepo, err := ct.t.repository(im.DestRepository)
	if err != nil {
		return transfer.Job{}, fmt.Errorf("%s: dest_repository: %w", where, err)
	}
	ct.repos[destRepo] = true

	srcHost, srcPath, ok := strings.Cut(im.SrcRepository, "/")
	if !ok || srcPath == "" || !(strings.ContainsAny(srcHost, ".:[") || srcHost == "localhost") {
		return transfer.Job{}, fmt.Errorf("%s: src_repository %q must include its registry, as docker.io/library/busybox", where, im.SrcRepository)
	}
	src := Target{Registry: srcHost}
	sc, hasEntry := spec.Credentials[srcHost]
	if hasEntry {
		src.URL, src.Cert = sc.RegistryURL, sc.Cert
	}
	st, err := src.resolve("")
	if err != nil {
		return transfer.Job{}, fmt.Errorf("%s: src_repository %q: %v", where, im.SrcRepository, err)
	}
	srcRepo, err := st.repository(im.SrcRepository)
	if err != nil {
		return transfer.Job{}, fmt.Errorf("%s: src_repository: %w", where, err)
	}
	job := transfer.Job{Src: st.host + "/" + srcRepo + ":" + im.SrcTag, Dst: ct.t.host + "/" + destRepo + ":" + im.DestTag}
	if job.Src == job.Dst {
		return transfer.Job{}, fmt.Errorf("%s: the source and the destination are the same tag", where)
	}
	return job, nil
}

// describeMirrorErrors names the image of each failed copy.
func describeMirrorErrors(images []Mirrored, results []transfer.Result, err error) error {
	if len(results) != len(images) {
		return err
	}
	var errs []error
	for i, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s[%d] (%s -> %s): %w", mirrorParam, images[i].index, images[i].Source, images[i].Destination, r.Err))
		}
	}
	if len(errs) == 0 {
		return err
	}
	return errors.Join(errs...)
}
