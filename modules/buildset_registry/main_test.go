package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/buildset"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "buildset_registry") }

// moduleBin returns the path of the module binary.
func moduleBin() string { return lib.Bin("buildset_registry") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "buildset_registry.yml", params{})
	ansibletest.CheckReturn(t, "buildset_registry.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc, as a user would.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "buildset_registry",
		"buildset_registry_root", "buildset_registry_port", "buildset_registry_host", "buildset_registry_listen", "EXAMPLES", "RETURN VALUES", "check_mode", "zuul_return")
}

// newRoot returns a root path and port for one registry, and removes the
// registry (stopping its daemon) at the end of the test.
func newRoot(t *testing.T) (string, int) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "buildset_registry")
	t.Cleanup(func() {
		o := ansibletest.RunBinary(t, moduleBin(), map[string]any{"state": "absent", "buildset_registry_root": root})
		if o.Failed() {
			t.Errorf("cleanup: %s", o.Msg())
		}
	})
	return root, testenv.FreePort(t)
}

func runModule(t *testing.T, args map[string]any, env ...string) *ansibletest.Output {
	t.Helper()
	return ansibletest.RunBinary(t, moduleBin(), args, env...)
}

func mustSucceed(t *testing.T, o *ansibletest.Output) {
	t.Helper()
	if o.Failed() || o.Exit != 0 {
		t.Fatalf("module failed (exit %d): %s\nstderr: %s", o.Exit, o.Stdout, o.Stderr)
	}
}

// registryOf decodes the buildset_registry return value.
func registryOf(t *testing.T, o *ansibletest.Output) zuul.BuildsetRegistry {
	t.Helper()
	m, ok := o.Result["buildset_registry"].(map[string]any)
	if !ok {
		t.Fatalf("no buildset_registry in %s", o.Stdout)
	}
	keys := []string{"cert", "host", "password", "port", "username"}
	if len(m) != len(keys) {
		t.Errorf("buildset_registry has keys %v, want exactly %v", m, keys)
	}
	var br zuul.BuildsetRegistry
	br.Host, _ = m["host"].(string)
	port, _ := m["port"].(float64)
	br.Port = int(port)
	br.Username, _ = m["username"].(string)
	br.Password, _ = m["password"].(string)
	br.Cert, _ = m["cert"].(string)
	return br
}

func pidOf(o *ansibletest.Output) int { p, _ := o.Result["pid"].(float64); return int(p) }

func client(t *testing.T, caPEM string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("cert is not PEM")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func answers(t *testing.T, br zuul.BuildsetRegistry) error {
	t.Helper()
	resp, err := client(t, br.Cert).Get("https://127.0.0.1:" + strconv.Itoa(br.Port) + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}

func TestStartIdempotent(t *testing.T) {
	t.Parallel()
	root, port := newRoot(t)
	args := map[string]any{"buildset_registry_root": root, "buildset_registry_port": port, "buildset_registry_host": "127.0.0.1"}
	o1 := runModule(t, args)
	mustSucceed(t, o1)
	if !o1.Changed() {
		t.Error("first start: changed is false")
	}
	br := registryOf(t, o1)
	if br.Host != "127.0.0.1" || br.Port != port || br.Username != "zuul" {
		t.Errorf("connection data: %+v", br)
	}
	if err := br.Validate(); err != nil {
		t.Error(err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(br.Password); err != nil || len(raw)*8 < 128 {
		t.Errorf("password carries %d bits (decode error %v), want at least 128", len(raw)*8, err)
	}
	// The module has exited; the daemon lives on, in a session of its own.
	if err := answers(t, br); err != nil {
		t.Fatalf("registry does not answer after the module exited: %v", err)
	}
	pid := pidOf(o1)
	if sid := sessionOf(t, pid); sid != pid {
		t.Errorf("daemon %d is in session %d, want its own", pid, sid)
	}
	if o1.Result["root"] != root || o1.Result["log_file"] != filepath.Join(root, "registry.log") || o1.Result["state"] != "started" {
		t.Errorf("result: %v", o1.Result)
	}

	o2 := runModule(t, args)
	mustSucceed(t, o2)
	if o2.Changed() || registryOf(t, o2) != br || pidOf(o2) != pid {
		t.Errorf("second start: changed %v, same data %v, pid %d (was %d)", o2.Changed(), registryOf(t, o2) == br, pidOf(o2), pid)
	}
	// Ansible's string forms of the parameters are accepted too.
	o3 := runModule(t, map[string]any{"buildset_registry_root": root, "buildset_registry_port": strconv.Itoa(port), "buildset_registry_host": "127.0.0.1", "state": "started"})
	mustSucceed(t, o3)
	if o3.Changed() {
		t.Error("start with the port as a string: changed")
	}
}

func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: state ppid
	// pgrp session.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	sid, _ := strconv.Atoi(f[3])
	return sid
}

func TestDefaultRootAndHost(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	port := testenv.FreePort(t)
	root := filepath.Join(home, "buildset_registry")
	t.Cleanup(func() { runModule(t, map[string]any{"state": "absent"}, "HOME="+home) })
	o := runModule(t, map[string]any{"buildset_registry_port": port}, "HOME="+home)
	mustSucceed(t, o)
	if o.Result["root"] != root {
		t.Errorf("root %v, want %s", o.Result["root"], root)
	}
	want, err := buildset.DefaultHost()
	if err != nil {
		t.Fatal(err)
	}
	br := registryOf(t, o)
	if br.Host != want {
		t.Errorf("host %q, want the node's address %q", br.Host, want)
	}
	// The certificate covers the default host: connect to it by address.
	resp, err := client(t, br.Cert).Get("https://" + net.JoinHostPort(br.Host, strconv.Itoa(port)) + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/ on %s: %v", br.Host, err)
	}
	resp.Body.Close()
}

func TestStopAbsentAndCrash(t *testing.T) {
	t.Parallel()
	root, port := newRoot(t)
	start := map[string]any{"buildset_registry_root": root, "buildset_registry_port": port, "buildset_registry_host": "127.0.0.1"}
	o := runModule(t, start)
	mustSucceed(t, o)
	br := registryOf(t, o)

	// Crash: the daemon is killed and leaves a stale pid file.
	pid := pidOf(o)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the killed daemon to stop answering", 30*time.Second, nil, func() error {
		if answers(t, br) == nil {
			return errors.New("it still answers")
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(root, "registry.pid")); err != nil {
		t.Fatalf("no stale pid file: %v", err)
	}
	o = runModule(t, start)
	mustSucceed(t, o)
	if !o.Changed() || registryOf(t, o) != br || pidOf(o) == pid {
		t.Errorf("start after a crash: changed %v, same data %v, pid %d (was %d)", o.Changed(), registryOf(t, o) == br, pidOf(o), pid)
	}
	if err := answers(t, br); err != nil {
		t.Fatal(err)
	}

	stop := map[string]any{"state": "stopped", "buildset_registry_root": root}
	o = runModule(t, stop)
	mustSucceed(t, o)
	if !o.Changed() || pidOf(o) != 0 {
		t.Errorf("stop: %s", o.Stdout)
	}
	if answers(t, br) == nil {
		t.Error("registry answers after stop")
	}
	if _, err := os.Stat(filepath.Join(root, "registry.json")); err != nil {
		t.Errorf("stop removed data: %v", err)
	}
	o = runModule(t, stop)
	mustSucceed(t, o)
	if o.Changed() {
		t.Errorf("second stop: changed: %s", o.Msg())
	}

	// Started again after stopped: same data.
	o = runModule(t, start)
	mustSucceed(t, o)
	if !o.Changed() || registryOf(t, o) != br {
		t.Errorf("start after stop: changed %v, same data %v", o.Changed(), registryOf(t, o) == br)
	}

	absent := map[string]any{"state": "absent", "buildset_registry_root": root}
	o = runModule(t, absent)
	mustSucceed(t, o)
	if !o.Changed() {
		t.Error("absent: changed is false")
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root after absent: %v", err)
	}
	if answers(t, br) == nil {
		t.Error("registry answers after absent")
	}
	for _, args := range []map[string]any{absent, stop} {
		o = runModule(t, args)
		mustSucceed(t, o)
		if o.Changed() {
			t.Errorf("%s on nothing: changed: %s", args["state"], o.Msg())
		}
	}
}

func TestCheckModeAndDiff(t *testing.T) {
	t.Parallel()
	root, port := newRoot(t)
	start := map[string]any{"buildset_registry_root": root, "buildset_registry_port": port, "buildset_registry_host": "127.0.0.1",
		"_ansible_check_mode": true, "_ansible_diff": true}
	o := runModule(t, start)
	mustSucceed(t, o)
	if !o.Changed() || !strings.Contains(o.Msg(), "would start") {
		t.Errorf("check start: %s", o.Stdout)
	}
	if _, ok := o.Result["buildset_registry"]; ok {
		t.Error("check mode invented connection data")
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("check mode created the root: %v", err)
	}
	diff, _ := o.Result["diff"].([]any)
	if len(diff) != 1 || !strings.Contains(fmt.Sprint(diff[0]), "state: absent") || !strings.Contains(fmt.Sprint(diff[0]), "state: started") {
		t.Errorf("diff: %v", o.Result["diff"])
	}

	delete(start, "_ansible_check_mode")
	real := runModule(t, start)
	mustSucceed(t, real)
	br := registryOf(t, real)
	if d := fmt.Sprint(real.Result["diff"]); strings.Contains(d, br.Password) || !strings.Contains(d, "port: "+strconv.Itoa(port)) {
		t.Errorf("diff holds the password or lacks the port: %s", d)
	}

	for _, state := range []string{"stopped", "absent"} {
		o = runModule(t, map[string]any{"state": state, "buildset_registry_root": root, "_ansible_check_mode": true})
		mustSucceed(t, o)
		if !o.Changed() || !strings.Contains(o.Msg(), "would stop") {
			t.Errorf("check %s: %s", state, o.Stdout)
		}
	}
	if err := answers(t, br); err != nil {
		t.Fatalf("check mode stopped the registry: %v", err)
	}
	start["_ansible_check_mode"] = true
	o = runModule(t, start)
	mustSucceed(t, o)
	if o.Changed() || registryOf(t, o) != br {
		t.Errorf("check start on a running registry: %s", o.Stdout)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	inUse, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Parallel subtests run after this function returns: close in Cleanup.
	t.Cleanup(func() { inUse.Close() })
	busyPort := inUse.Addr().(*net.TCPAddr).Port
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, []byte("x"), 0o600)
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("keep me"), 0o600)

	tests := []struct {
		name string
		args map[string]any
		want []string
	}{
		{"unknown parameter", map[string]any{"buildset_registry_prot": 5000},
			[]string{"Unsupported parameters: buildset_registry_prot", "buildset_registry_port", "buildset_registry_root", "state"}},
		{"port not a number", map[string]any{"buildset_registry_port": "five thousand"},
			[]string{"parameter buildset_registry_port: must be an integer"}},
		{"port out of range", map[string]any{"buildset_registry_port": 70000},
			[]string{"buildset_registry_port 70000 is not a TCP port"}},
		// 0 is not "the default": upstream would have listened on 1<port>.
		{"port 0", map[string]any{"buildset_registry_port": 0},
			[]string{"buildset_registry_port 0 is not a TCP port: use 1-65535"}},
		{"state not a choice", map[string]any{"state": "running"},
			[]string{"parameter state: must be one of: started, stopped, absent"}},
		{"host with port", map[string]any{"buildset_registry_host": "10.0.0.1:5000"},
			[]string{"buildset_registry_host", "without scheme, port or path"}},
		{"listen not an address", map[string]any{"buildset_registry_listen": "127.0.0.1,eth0"},
			[]string{`buildset_registry_listen[1] "eth0" is not an IP address`}},
		{"listen wrong type", map[string]any{"buildset_registry_listen": map[string]any{"a": 1}},
			[]string{"parameter buildset_registry_listen: must be a list"}},
		{"root under a file", map[string]any{"buildset_registry_root": filepath.Join(file, "br")},
			[]string{"buildset_registry_root " + filepath.Join(file, "br"), "cannot create or write the root directory", "not a directory"}},
		{"root on a read-only file system", map[string]any{"buildset_registry_root": "/proc/sys/kernel/imagegate-br"},
			[]string{"buildset_registry_root /proc/sys/kernel/imagegate-br", "cannot create or write the root directory"}},
		{"root not ours", map[string]any{"buildset_registry_root": foreign},
			[]string{"buildset_registry_root " + foreign, "without registry.json", "choose a new or empty directory"}},
		{"port in use", map[string]any{"buildset_registry_port": busyPort},
			[]string{"port already in use", "choose another buildset_registry_port", strconv.Itoa(busyPort)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := filepath.Join(t.TempDir(), "br")
			args := map[string]any{"buildset_registry_root": root, "buildset_registry_port": testenv.FreePort(t), "buildset_registry_host": "127.0.0.1"}
			for k, v := range tc.args {
				args[k] = v
			}
			t.Cleanup(func() { runModule(t, map[string]any{"state": "absent", "buildset_registry_root": root}) })
			o := runModule(t, args)
			if !o.Failed() || o.Exit == 0 {
				t.Fatalf("not failed (exit %d): %s", o.Exit, o.Stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(o.Msg(), w) {
					t.Errorf("msg %q lacks %q", o.Msg(), w)
				}
			}
			if _, ok := o.Result["buildset_registry"]; ok {
				t.Error("failed result carries connection data")
			}
			if tc.name == "port in use" {
				// The root was made, but no daemon runs on it.
				if b, err := os.ReadFile(filepath.Join(root, "registry.pid")); err == nil {
					if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != 0 && syscall.Kill(pid, 0) == nil && sessionOf(t, pid) == pid {
						t.Errorf("daemon %d left running after a failed start", pid)
					}
				}
			} else if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a failed run created %s", root)
			}
		})
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(foreign, "notes.txt")); err != nil || string(b) != "keep me" {
			t.Errorf("foreign directory touched: %q, %v", b, err)
		}
	})

	t.Run("malformed args file", func(t *testing.T) {
		t.Parallel()
		args := filepath.Join(t.TempDir(), "args")
		os.WriteFile(args, []byte(`state=started buildset_registry_port=5000`), 0o600)
		o := ansibletest.RunBinaryFile(t, moduleBin(), args)
		if !o.Failed() || o.Exit == 0 || !strings.Contains(o.Msg(), "reading module arguments") || !strings.Contains(o.Msg(), "not a JSON object") {
			t.Errorf("result: %s", o.Stdout)
		}
	})
	t.Run("no args file", func(t *testing.T) {
		t.Parallel()
		out, _ := exec.Command(moduleBin()).Output()
		if !bytes.Contains(out, []byte(`"failed":true`)) || !bytes.Contains(out, []byte("this is an Ansible module")) {
			t.Errorf("result: %s", out)
		}
	})
}

// TestSecrets checks that the generated password appears only where it
// must: the result (for zuul_return secret_data) and registry.json. It
// must not reach the module's stderr, even at the highest verbosity, nor
// the daemon's log, also after clients authenticated with it.
func TestSecrets(t *testing.T) {
	t.Parallel()
	root, port := newRoot(t)
	start := map[string]any{"buildset_registry_root": root, "buildset_registry_port": port, "buildset_registry_host": "127.0.0.1",
		"_ansible_verbosity": 4, "_ansible_diff": true}
	o := runModule(t, start)
	mustSucceed(t, o)
	br := registryOf(t, o)
	outputs := [][]byte{o.Stderr}

	// Authenticate and push, then pull anonymously, then fail a login: the
	// registry logs requests, never credentials.
	ref, err := name.ParseReference(fmt.Sprintf("127.0.0.1:%d/secrets/test:latest", port))
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	tr := client(t, br.Cert).Transport
	if err := remote.Write(ref, img, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: br.Username, Password: br.Password})); err != nil {
		t.Fatalf("push with the returned credentials: %v", err)
	}
	if _, err := remote.Get(ref, remote.WithTransport(tr)); err != nil {
		t.Fatalf("anonymous pull: %v", err)
	}
	bad := fmt.Sprintf("127.0.0.1:%d/secrets/other:latest", port)
	badRef, _ := name.ParseReference(bad)
	if err := remote.Write(badRef, img, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: br.Username, Password: br.Password + "x"})); err == nil {
		t.Error("push with a wrong password succeeded")
	}
	if err := remote.Write(badRef, img, remote.WithTransport(tr)); err == nil {
		t.Error("anonymous push succeeded")
	}

	for _, args := range []map[string]any{start,
		{"state": "stopped", "buildset_registry_root": root, "_ansible_verbosity": 4},
		start,
		{"state": "started", "buildset_registry_root": root, "buildset_registry_port": "x", "_ansible_verbosity": 4},
	} {
		o := runModule(t, args)
		outputs = append(outputs, o.Stderr)
	}
	log, err := os.ReadFile(filepath.Join(root, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, log)
	if !bytes.Contains(log, []byte("secrets/test")) {
		t.Errorf("registry log does not record the requests, so this test proves nothing:\n%s", log)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(br.Username + ":" + br.Password))
	for i, out := range outputs {
		for _, secret := range []string{br.Password, basic} {
			if bytes.Contains(out, []byte(secret)) {
				t.Errorf("output %d holds a secret:\n%s", i, out)
			}
		}
	}
	// Only registry.json holds the password on disk.
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == filepath.Join(root, "registry.json") || strings.HasPrefix(p, filepath.Join(root, "bin")) {
			return err
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(br.Password)) {
			t.Errorf("%s holds the password", p)
		}
		return nil
	})
}
