// Command docker_image_promote is the Ansible module that promotes images
// staged by docker_image_upload: after a change merges, every final tag is
// pointed at the manifest staged for the change, the staging tags are
// deleted, and stale staging tags are swept (upstream: the
// promote-docker-image role). It runs on the executor, with nothing
// installed but itself (see docker_image_promote.yml).
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

type params struct {
	Images         []zuul.Image         `ansible:"docker_images,required"`
	Credentials    *publish.Credentials `ansible:"docker_credentials,required"`
	Zuul           zuul.Vars            `ansible:"zuul,raw,required"`
	Registry       string               `ansible:"docker_registry" default:"docker.io"`
	RegistryURL    string               `ansible:"docker_registry_url"`
	HubURL         string               `ansible:"docker_hub_url"`
	Cert           string               `ansible:"docker_registry_cert"`
	Sweep          bool                 `ansible:"stale_tag_sweep" default:"true"`
	StaleAge       int                  `ansible:"stale_tag_age" default:"86400"`
	StalePipelines []string             `ansible:"stale_tag_pipelines"`
	Jobs           int                  `ansible:"jobs" default:"8"`
	Timeout        int                  `ansible:"timeout" default:"1800"`
}

func main() {
	ansible.Main(func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		if p.Timeout <= 0 || p.Jobs <= 0 {
			return nil, fmt.Errorf("timeout and jobs must be positive, got %d and %d", p.Timeout, p.Jobs)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Duration(p.Timeout)*time.Second)
		defer cancel()
		spec := publish.PromoteSpec{
			Images:      p.Images,
			Target:      publish.Target{Registry: p.Registry, URL: p.RegistryURL, HubURL: p.HubURL, CA: []byte(p.Cert)},
			Credentials: *p.Credentials,
			Zuul:        p.Zuul,
			Sweep:       p.Sweep, StaleAge: time.Duration(p.StaleAge) * time.Second, Pipelines: p.StalePipelines,
			Jobs: p.Jobs,
		}
		r, err := publish.Promote(ctx, spec, publish.WithCheckMode(m.CheckMode), publish.WithLogger(m.Log))
		if err != nil {
			return nil, err
		}
		for _, w := range r.Warnings {
			m.Warn("%s", w)
		}
		res := &ansible.Result{Changed: r.Changed, Diff: []ansible.Diff{{Before: r.Before, After: r.After,
			BeforeHeader: "tags before", AfterHeader: "tags after"}}}
		res.Set("promoted", r.Promoted).Set("deleted", r.Deleted)
		return res, nil
	})
}
