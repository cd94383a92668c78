// Command docker_image_build is the Ansible module that builds the images of
// docker_images with BuildKit and pushes them to the buildset registry (see
// docker_image_build.yml).
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/build"
	"github.com/imagegate/imagegate/pkg/zuul"
)

type params struct {
	Images           []zuul.Image           `ansible:"docker_images,required"`
	Zuul             zuul.Vars              `ansible:"zuul,raw,required"`
	WorkDir          string                 `ansible:"zuul_work_dir,path"`
	BuildsetRegistry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	DockerRegistry   string                 `ansible:"docker_registry"`
	BuildkitAddr     string                 `ansible:"buildkit_addr" default:"unix:///run/buildkit/buildkitd.sock"`
	DockerHost       string                 `ansible:"docker_host"`
	LogFile          string                 `ansible:"log_file,path" default:"~/zuul-output/logs/docker_image_build.log"`
	Timeout          int                    `ansible:"timeout" default:"3600"`
	ConnectTimeout   int                    `ansible:"connect_timeout" default:"30"`
}

func main() {
	ansible.Main(func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		br := p.BuildsetRegistry
		if br == nil && p.Zuul.Executor.ResultDataFile != "" {
			loaded, err := zuul.LoadBuildsetRegistry(p.Zuul.Executor.ResultDataFile)
			if err == nil {
				br = loaded
				m.AddSecret(br.Password)
			} else {
				m.Log.Info("no buildset registry in the result data file", "err", err)
			}
		}
		opts := []build.Option{build.WithLogger(m.Log),
			build.WithTimeout(time.Duration(p.Timeout) * time.Second),
			build.WithConnectTimeout(time.Duration(p.ConnectTimeout) * time.Second)}
		if m.Verbosity >= 2 {
			opts = append(opts, build.WithProgress(m.Stderr()))
		}
		if p.Timeout <= 0 || p.ConnectTimeout <= 0 {
			return nil, fmt.Errorf("timeout and connect_timeout must be positive numbers of seconds")
		}
		b, err := build.New(p.BuildkitAddr, opts...)
		if err != nil {
			return nil, err
		}
		rep, err := b.Run(ctx, &build.Request{
			Images: p.Images, Zuul: p.Zuul, WorkDir: p.WorkDir, Registry: br,
			DockerRegistry: p.DockerRegistry, DockerHost: p.DockerHost,
			LogFile: p.LogFile, CheckMode: m.CheckMode,
		})
		if rep == nil {
			return nil, err
		}
		res := &ansible.Result{Changed: rep.Changed}
		res.Set("images", rep.Images).Set("log_file", rep.LogFile)
		return res, err
	})
}
