package main_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
)

// build compiles the command as make build does.
func build(t *testing.T) string {
	t.Helper()
	return ansibletest.BuildModule(t, "github.com/imagegate/imagegate/cmd/imagegate-registry")
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCommand runs the built binary: bad configurations exit 1 with the
// setting named, check and prune work, and serve answers, then stops
// cleanly on SIGTERM.
func TestCommand(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	password := testenv.RandomString(t, 16)
	env := append(os.Environ(), "IR_PASSWORD="+password)

	for _, tc := range []struct {
		name, config, want string
	}{
		{"unknown key", "users: []\nanonymous_raed: true\n", `unknown setting "anonymous_raed"`},
		{"user without password", "users:\n  - name: zuul\n    access: write\n", "users[0] (zuul): no password"},
		{"unset secret", "users:\n  - name: zuul\n    password_env: IR_UNSET\n    access: write\n", "IR_UNSET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, t.TempDir(), tc.config)
			cmd := exec.Command(bin, "serve", "-c", cfg)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; output %s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output %q does not name %q", out, tc.want)
			}
		})
	}

	port, mon := testenv.FreePort(t), testenv.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: ["127.0.0.1:%d"]
state_dir: %s
monitoring:
  listen: 127.0.0.1:%d
shutdown_timeout: 5s
users:
  - name: zuul
    password: ${IR_PASSWORD}
    access: write
prune:
  expiration: 1d
`, port, filepath.Join(dir, "state"), mon))

	check := exec.Command(bin, "check", "-c", cfg)
	check.Env = env
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "usable") {
		t.Fatalf("check: %v\n%s", err, out)
	}

	var logs bytes.Buffer
	serve := exec.Command(bin, "serve", "-c", cfg)
	serve.Env = env
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			<-exited
		}
	})
	testenv.WaitFor(t, "imagegate-registry", 30*time.Second, nil, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", mon))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("health %d", resp.StatusCode)
		}
		return nil
	})
	ca, err := os.ReadFile(filepath.Join(dir, "state", "tls", "ca.crt"))
	if err != nil {
		t.Fatalf("the generated CA: %v", err)
	}
	pool, _ := pki.CertPool(ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	content := []byte("a blob pushed through the command")
	dg := digest.FromBytes(content)
	req, _ := http.NewRequest("POST", fmt.Sprintf("https://127.0.0.1:%d/v2/team/app/blobs/uploads/?digest=%s", port, dg), bytes.NewReader(content))
	req.SetBasicAuth("zuul", password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %d", resp.StatusCode)
	}

	prune := exec.Command(bin, "prune", "-dry-run", "-c", cfg)
	prune.Env = env
	if out, err := prune.CombinedOutput(); err != nil || !strings.Contains(string(out), "dry run, would prune: 0 repositories") {
		t.Fatalf("prune -dry-run: %v\n%s", err, out)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("serve did not stop on SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Errorf("no stop in the log:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the log holds the password")
	}
}
