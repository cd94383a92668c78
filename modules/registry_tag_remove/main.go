// Command registry_tag_remove is the Ansible module of zuul-jobs'
// remove-registry-tag role: it removes one tag of a repository, or sweeps
// the tags matching an expression that are older than an age, through the
// registry's own API (Docker Hub's web API, quay's, or the distribution
// API's tag delete). It runs on the executor with nothing installed but
// itself. The work is done by package publish.
package main

import (
	"context"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/publish"
)

type params struct {
	publish.RemoveTagSpec
	Timeout time.Duration `ansible:"timeout,seconds" default:"600"`
}

func main() { ansible.Main(run) }

func run(ctx context.Context, m *ansible.Module, p *params) (*publish.RemoveTagResult, error) {
	return publish.RemoveTag(ctx, p.RemoveTagSpec, publish.WithCheckMode(m.CheckMode), publish.WithDiff(m.Diff),
		publish.WithLogger(m.Log), publish.WithTimeout(p.Timeout), publish.WithRedact(m.AddSecret))
}
