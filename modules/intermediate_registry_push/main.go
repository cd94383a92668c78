// Command intermediate_registry_push is the Ansible module that copies the
// images a job built from the buildset registry to the intermediate
// registry and returns them as zuul artifacts (upstream: the
// push-to-intermediate-registry role). The work is done by package
// intermediate.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/intermediate"
	"github.com/imagegate/imagegate/pkg/zuul"
)

type params struct {
	Zuul            zuul.Vars                  `ansible:"zuul,raw,required"`
	Buildset        *zuul.BuildsetRegistry     `ansible:"buildset_registry"`
	Intermediate    *zuul.IntermediateRegistry `ansible:"intermediate_registry,required"`
	DockerImages    []zuul.Image               `ansible:"docker_images"`
	ContainerImages []zuul.Image               `ansible:"container_images"`
	Jobs            int                        `ansible:"jobs" default:"16"`
	LayerJobs       int                        `ansible:"layer_jobs" default:"8"`
	Retries         int                        `ansible:"retries" default:"4"`
	Timeout         int                        `ansible:"timeout" default:"1800"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
	// docker_images wins when both are given, as upstream.
	param, images := "docker_images", p.DockerImages
	if images == nil {
		param, images = "container_images", p.ContainerImages
	}
	br := p.Buildset
	if br == nil {
		var err error
		if br, err = zuul.LoadBuildsetRegistry(p.Zuul.Executor.ResultDataFile); err != nil {
			return nil, err
		}
		m.AddSecret(br.Password) // read from a file, not a no_log parameter
	}
	cfg := intermediate.Config{Buildset: br, Intermediate: p.Intermediate, Jobs: p.Jobs, LayerJobs: p.LayerJobs,
		Retries: p.Retries, Timeout: time.Duration(p.Timeout) * time.Second, CheckMode: m.CheckMode, Log: m.Log}
	r, err := intermediate.Push(ctx, cfg, &p.Zuul, param, images)
	if r == nil {
		return nil, err
	}
	res := &ansible.Result{Changed: r.Changed}
	res.Set("images", nonNil(r.Images)).Set("artifacts", r.Artifacts)
	if err == nil {
		res.Msg = summary(r.Images, m.CheckMode, p.Intermediate.Address())
	}
	return res, err
}

func summary(images []intermediate.Image, check bool, ir string) string {
	n := 0
	for _, im := range images {
		if im.Changed {
			n++
		}
	}
	verb := "copied"
	if check {
		verb = "would copy"
	}
	return fmt.Sprintf("%s %d of %d image tag(s) to the intermediate registry at %s; the others were up to date", verb, n, len(images), ir)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
