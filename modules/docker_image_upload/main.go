// Command docker_image_upload is the Ansible module that stages the images
// of a gated change in the target registry: it copies each image from the
// buildset registry as <repository>:change_<N>_<tag> for a later promote
// (upstream: the upload-docker-image role), or under its final tags (see
// docker_image_upload.yml).
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
	Images           []zuul.Image           `ansible:"docker_images,required"`
	Credentials      *publish.Credentials   `ansible:"docker_credentials,required"`
	Zuul             zuul.Vars              `ansible:"zuul,raw,required"`
	Registry         string                 `ansible:"docker_registry" default:"docker.io"`
	RegistryURL      string                 `ansible:"docker_registry_url"`
	Cert             string                 `ansible:"docker_registry_cert"`
	Promote          bool                   `ansible:"upload_docker_image_promote" default:"true"`
	BuildsetRegistry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	Jobs             int                    `ansible:"jobs" default:"8"`
	Timeout          int                    `ansible:"timeout" default:"3600"`
}

func main() {
	ansible.Main(func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		if p.Timeout <= 0 || p.Jobs <= 0 {
			return nil, fmt.Errorf("timeout and jobs must be positive, got %d and %d", p.Timeout, p.Jobs)
		}
		br := p.BuildsetRegistry
		if br == nil {
			loaded, err := zuul.LoadBuildsetRegistry(p.Zuul.Executor.ResultDataFile)
			if err != nil {
				return nil, err
			}
			m.AddSecret(loaded.Password)
			br = loaded
		}
		ctx, cancel := context.WithTimeout(ctx, time.Duration(p.Timeout)*time.Second)
		defer cancel()
		spec := publish.UploadSpec{
			Images:           p.Images,
			Target:           publish.Target{Registry: p.Registry, URL: p.RegistryURL, CA: []byte(p.Cert)},
			Credentials:      *p.Credentials,
			Zuul:             p.Zuul,
			Promote:          p.Promote,
			BuildsetRegistry: br,
			Jobs:             p.Jobs,
		}
		r, err := publish.Upload(ctx, spec, publish.WithCheckMode(m.CheckMode), publish.WithLogger(m.Log))
		if err != nil {
			return nil, err
		}
		for _, w := range r.Warnings {
			m.Warn("%s", w)
		}
		res := &ansible.Result{Changed: r.Changed, Diff: []ansible.Diff{{Before: r.Before, After: r.After,
			BeforeHeader: "target tags before", AfterHeader: "target tags after"}}}
		res.Set("uploads", r.Uploads)
		return res, nil
	})
}
