// Command archmod is a module for the imagegate-modules role's tests: it
// reports which build it is (set with -ldflags -X main.arch=...), so a test
// can tell which binary the action plugin ran.
package main

import (
	"context"

	"github.com/imagegate/imagegate/pkg/ansible"
)

var arch = "unset"

type params struct {
	Echo string `ansible:"echo"`
}

func main() {
	ansible.Main(func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		r := &ansible.Result{}
		r.Set("arch", arch).Set("echo", p.Echo).Set("check_mode", m.CheckMode)
		return r, nil
	})
}
