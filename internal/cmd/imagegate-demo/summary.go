package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/pkg/runner"
)

func (rg *serverRegistry) opts(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: rg.Username, Password: rg.Password}),
		remote.WithTransport(rg.Transport()), remote.WithContext(ctx)}
}

// digest returns the digest of repo:tag, or "".
func (rg *serverRegistry) digest(ctx context.Context, ref string) string {
	n, err := name.ParseReference(rg.Host + "/" + ref)
	if err != nil {
		return ""
	}
	d, err := remote.Head(n, rg.opts(ctx)...)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

func (rg *serverRegistry) tags(ctx context.Context, repo string) []string {
	r, err := name.NewRepository(rg.Host + "/" + repo)
	if err != nil {
		return nil
	}
	tags, err := remote.List(r, rg.opts(ctx)...)
	if err != nil {
		return nil
	}
	sort.Strings(tags)
	return tags
}

type seededTags struct{ stale, fresh string }

// seedTarget puts two change tags of an earlier change in the target
// registry, as changes that never merged leave them: one three days old
// (the promote sweeps it) and one an hour old (it stays). Their age is the
// creation time of their images: registries other than Docker Hub keep no
// tag timestamps.
func seedTarget(rg *serverRegistry) (seededTags, error) {
	s := seededTags{stale: "change_900_latest", fresh: "change_950_latest"}
	rootfs, err := lab.BusyboxRootfs()
	if err != nil {
		return s, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rootfs)), nil })
	if err != nil {
		return s, err
	}
	base, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return s, err
	}
	for tag, age := range map[string]time.Duration{s.stale: 72 * time.Hour, s.fresh: time.Hour} {
		img, err := mutate.CreatedAt(base, v1.Time{Time: time.Now().Add(-age)})
		if err != nil {
			return s, err
		}
		ref, err := name.ParseReference(rg.Host + "/myorg/app:" + tag)
		if err != nil {
			return s, err
		}
		if err := remote.Write(ref, img, rg.opts(context.Background())...); err != nil {
			return s, fmt.Errorf("seeding %s: %w", ref, err)
		}
	}
	return s, nil
}

// printImages says where every image came from: the images changes handed
// to later changes through the intermediate registry, the tags of the
// target registry (with the gate build that staged each promoted digest),
// the swept tags, and what the test job saw when it ran myorg/app.
func printImages(w io.Writer, rep *runner.Report, ir, target *serverRegistry, seeded seededTags) error {
	ctx := context.Background()
	short := func(d string) string {
		if len(d) > 19 {
			return d[:19] + "..."
		}
		return d
	}
	// Builds are reproducible: the check and gate builds of a change may
	// produce the same digest. Keep every build of a digest.
	origins := map[string][]string{}
	originOf := func(d, pipeline string) string {
		for _, o := range origins[d] {
			if strings.HasSuffix(o, "("+pipeline+")") {
				return o
			}
		}
		if len(origins[d]) > 0 {
			return origins[d][0]
		}
		return ""
	}
	fmt.Fprintf(w, "\nImages in the intermediate registry (%s), handed from change to change:\n", ir.Host)
	for _, it := range rep.Items {
		for _, b := range it.Builds {
			for _, a := range b.Artifacts() {
				url, _ := a["url"].(string)
				ref := strings.TrimPrefix(url, "docker://"+ir.Host+"/")
				d := ir.digest(ctx, ref)
				who := fmt.Sprintf("%s for change %s (%s)", b.Job, it.Ref(), it.Pipeline)
				if d != "" {
					origins[d] = append(origins[d], who)
				}
				fmt.Fprintf(w, "  %-60s %s  built by %s\n", ref, short(d), who)
			}
		}
	}
	fmt.Fprintf(w, "\nTags in the target registry (%s):\n", target.Host)
	for _, repo := range []string{"myorg/base", "myorg/app"} {
		for _, tag := range target.tags(ctx, repo) {
			d := target.digest(ctx, repo+":"+tag)
			note := ""
			switch {
			case tag == seeded.fresh:
				note = "kept: a change tag of an unmerged change, 1 hour old"
			case originOf(d, "gate") != "":
				note = "promoted: the image built by " + originOf(d, "gate")
			}
			fmt.Fprintf(w, "  %-40s %s  %s\n", repo+":"+tag, short(d), note)
		}
	}
	if target.digest(ctx, "myorg/app:"+seeded.stale) == "" {
		fmt.Fprintf(w, "  (swept by the promote: myorg/app:%s, a change tag 3 days old)\n", seeded.stale)
	}
	for _, it := range rep.Items {
		b := it.Build("myorg-test-app")
		if b == nil {
			continue
		}
		lt, _ := b.Data["lab_test"].(map[string]any)
		out, _ := lt["output"].(string)
		fmt.Fprintf(w, "\nChange %s's test job pulled myorg/app through its buildset registry and ran it; it printed:\n", it.Ref())
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			fmt.Fprintf(w, "  | %s\n", line)
		}
		if digests, ok := lt["repo_digests"].([]any); ok {
			for _, d := range digests {
				ds, _ := d.(string)
				if i := strings.LastIndex(ds, "@"); i >= 0 && originOf(ds[i+1:], it.Pipeline) != "" {
					fmt.Fprintf(w, "  (digest %s: the image built by %s)\n", short(ds[i+1:]), originOf(ds[i+1:], it.Pipeline))
				}
			}
		}
	}
	return nil
}
