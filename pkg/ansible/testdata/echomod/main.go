// Command echomod is a module used by the tests of package ansible: it
// echoes its parameters, writes stray output to stdout, logs, and fails on
// request, so the protocol guarantees can be checked on a real binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/imagegate/imagegate/pkg/ansible"
)

type creds struct {
	Username string `ansible:"username,required"`
	Password string `ansible:"password,required,no_log"`
}

type params struct {
	Name  string   `ansible:"name,required"`
	Tags  []string `ansible:"tags" default:"latest"`
	Force bool     `ansible:"force"`
	Count int      `ansible:"count" default:"1"`
	State string   `ansible:"state" default:"present" choices:"present,absent"`
	Creds *creds   `ansible:"docker_credentials"`
	Token string   `ansible:"token,no_log"`
	Fail  bool     `ansible:"fail"`
	Stray bool     `ansible:"stray"`
}

func main() {
	ansible.Main(func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		if p.Stray {
			fmt.Println("stray line from fmt.Println")
			os.Stdout.WriteString("stray write to os.Stdout\n")
			cmd := exec.Command("echo", "stray line from a child process")
			cmd.Stdout = os.Stdout
			_ = cmd.Run()
		}
		pw := ""
		if p.Creds != nil {
			pw = p.Creds.Password
		}
		m.Log.Error("logging the secrets", "password", pw, "token", p.Token)
		m.Warn("a warning mentioning %s", pw)
		if p.Fail {
			return nil, fmt.Errorf("failing with password %s and token %s", pw, p.Token)
		}
		r := &ansible.Result{Changed: !m.CheckMode, Msg: "echo " + pw}
		r.Set("name", p.Name).Set("tags", p.Tags).Set("force", p.Force).Set("count", p.Count).
			Set("state", p.State).Set("check_mode", m.CheckMode).Set("echo_token", p.Token)
		r.Diff = []ansible.Diff{{Before: "a\n", After: "b\n"}}
		return r, nil
	})
}
