package build

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
)

// TestIntermediateRegistryTrustedThroughCertsD: an executor that trusts
// the intermediate registry only through
// /etc/docker/certs.d/<host:port>/ca.crt (the secret has no cert) runs
// push-to- and pull-from-intermediate-registry unchanged, through real
// ansible-playbook, inside a sandbox whose /etc/docker/certs.d is private
// (the modules read the real default path). An invalid certificate there
// fails the role naming the file.
func TestIntermediateRegistryTrustedThroughCertsD(t *testing.T) {
	t.Parallel()
	br1, br2, ir := transfertest.Ours(t), transfertest.Ours(t), transfertest.Distribution(t)
	want := transfertest.Push(t, br1, br1.Host+"/myorg/app:latest", transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(61, 20_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(62, 20_000))))

	sb := testenv.NewSandbox(t, "/etc/docker/certs.d")
	caFile := filepath.Join(sb.Path("/etc/docker/certs.d"), ir.Host, "ca.crt")
	if err := os.MkdirAll(filepath.Dir(caFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ir.CA, 0o644); err != nil {
		t.Fatal(err)
	}

	dir := testenv.ShortTempDir(t)
	roles := rolesPath(t, []string{"push-to-intermediate-registry", "pull-from-intermediate-registry"},
		"intermediate_registry_push", "intermediate_registry_pull")
	reg := func(r transfertest.Registry, withCert bool) map[string]any {
		host, port, _ := strings.Cut(r.Host, ":")
		m := map[string]any{"host": host, "port": json.Number(port), "username": r.Username, "password": r.Password}
		if withCert {
			m["cert"] = string(r.CA)
		}
		return m
	}
	ansiblePlaybook := sb.Wrap(t, "/usr/bin/ansible-playbook")
	run := func(name, pb string, vars map[string]any) (string, error) {
		b, _ := json.Marshal(vars)
		varsFile := filepath.Join(dir, name+"-vars.json")
		pbFile := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(varsFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pbFile, []byte(pb), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(ansiblePlaybook, "-i", "localhost,", "-c", "local",
			"-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "@"+varsFile, pbFile)
		cmd.Env = append(append(os.Environ(), ansibletest.PlaybookEnv(t, dir, "")...), "ANSIBLE_ROLES_PATH="+roles,
			"ANSIBLE_ACTION_PLUGINS="+filepath.Join(daemon.RepoRoot(), "pkg", "runner", "plugins", "action"))
		out, err := cmd.CombinedOutput()
		for _, secret := range []string{br1.Password, br2.Password, ir.Password} {
			if strings.Contains(string(out), secret) {
				t.Errorf("ansible-playbook %s: a password is in the output", name)
			}
		}
		return string(out), err
	}

	results := filepath.Join(dir, "results.json")
	if err := os.WriteFile(results, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run("push", "- hosts: localhost\n  roles: [push-to-intermediate-registry]\n", map[string]any{
		"zuul":                  map[string]any{"build": "9f8e7d", "change": "41", "pipeline": "check", "executor": map[string]any{"result_data_file": results}},
		"buildset_registry":     reg(br1, true),
		"intermediate_registry": reg(ir, false),
		"docker_images":         []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []string{"latest"}}},
	})
	if err != nil {
		t.Fatalf("push-to-intermediate-registry: %v\n%s", err, out)
	}
	if _, d := transfertest.Manifest(t, ir, ir.Host+"/myorg/app:9f8e7d_latest"); d != want {
		t.Fatalf("intermediate registry has %s, want %s", d, want)
	}
	var rd struct {
		Data struct {
			Zuul struct {
				Artifacts []map[string]any `json:"artifacts"`
			} `json:"zuul"`
		} `json:"data"`
	}
	b, _ := os.ReadFile(results)
	if err := json.Unmarshal(b, &rd); err != nil || len(rd.Data.Zuul.Artifacts) != 1 {
		t.Fatalf("result data %s (%v)", b, err)
	}
	arts := rd.Data.Zuul.Artifacts
	for _, a := range arts {
		a["project"], a["change"], a["patchset"], a["job"] = "org/ahead", "41", "1", "build-image"
	}
	pull := func() (string, error) {
		return run("pull", "- hosts: localhost\n  roles: [pull-from-intermediate-registry]\n", map[string]any{
			"zuul":                  map[string]any{"build": "aaaa", "change": "42", "pipeline": "check", "artifacts": arts},
			"buildset_registry":     reg(br2, true),
			"intermediate_registry": reg(ir, false),
		})
	}
	if out, err := pull(); err != nil {
		t.Fatalf("pull-from-intermediate-registry: %v\n%s", err, out)
	}
	if _, d := transfertest.Manifest(t, br2, br2.Host+"/myorg/app:latest"); d != want {
		t.Errorf("buildset registry has %s, want %s", d, want)
	}

	// An invalid certificate in certs.d fails, naming the file.
	if err := os.WriteFile(caFile, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = pull()
	if err == nil || !strings.Contains(out, "/etc/docker/certs.d/"+ir.Host+"/ca.crt") {
		t.Errorf("pull with an invalid certs.d file: %v; want a failure naming it\n%s", err, out)
	}
}
