package clientconf_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// TestSystemTrustStore: the module puts the CA in Debian's trust store and
// runs the real update-ca-certificates (inside the sandbox, on private
// copies of /usr/local/share/ca-certificates and /etc/ssl/certs); curl,
// which knows nothing but the system store, then trusts the registry.
func TestSystemTrustStore(t *testing.T) {
	f := newFixture(t, localAddr(t, "ipv4"))
	sb := testenv.NewSandbox(t, "/etc/hosts", "/usr/local/share/ca-certificates", "/etc/ssl/certs")
	port := strconv.Itoa(int(f.registry["port"].(int)))
	url := "https://" + f.location + "/v2/"
	resolve := "zuul-jobs.buildset-registry:" + port + ":" + f.registry["host"].(string)
	if out, err := sb.Command("curl", "-sS", "-o", "/dev/null", "--resolve", resolve, url).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "certificate") {
		t.Fatalf("curl trusted the registry before the module ran: %v: %s", err, out)
	}
	out := f.run(t, sb, f.args([]string{"system"}, nil), true)
	if out.Result["ca_trust_updated"] != true {
		t.Errorf("trust store not updated: %s", out.Stdout)
	}
	code := sb.Run(t, nil, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url)
	if code != "401" && code != "200" {
		t.Errorf("GET %s: HTTP %s", url, code)
	}
	bundle, err := os.ReadFile(filepath.Join(sb.Path("/etc/ssl/certs"), "ca-certificates.crt"))
	if err != nil || !strings.Contains(string(bundle), strings.TrimSpace(f.registry["cert"].(string))) {
		t.Errorf("the CA is not in the private copy of the bundle (%v)", err)
	}
	f.run(t, sb, f.args([]string{"system"}, nil), false)
}

// TestThroughAnsiblePlaybook runs the module from a real ansible-playbook
// (ansible-core 2.14), reading buildset_registry from the job's result
// data file as a later playbook of the registry's own job does: check mode
// changes nothing, the first run configures, the second is not changed,
// --diff shows the hosts line; then podman pulls through the result.
func TestThroughAnsiblePlaybook(t *testing.T) {
	f := newFixture(t, localAddr(t, "ipv4"))
	sb := testenv.NewSandbox(t, "/etc/hosts", "/etc/containers/certs.d", "/etc/docker/certs.d")
	dir := testenv.ShortTempDir(t)

	results := filepath.Join(dir, "results.json")
	rd, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": f.registry}})
	os.WriteFile(results, rd, 0o600)
	vars, _ := json.Marshal(map[string]any{"zuul": map[string]any{"build": "b1", "executor": map[string]any{"result_data_file": results}}})
	os.WriteFile(filepath.Join(dir, "vars.json"), vars, 0o600)
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(filepath.Join(dir, "inventory"), []byte("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"), 0o644)
	playbook := `- hosts: localhost
  gather_facts: false
  vars:
    ubr_args: &ubr_args
      zuul: "{{ zuul }}"
      clients: [containers]
      registries_conf: ` + conf + `
  tasks:
    - name: Check mode
      use_buildset_registry: *ubr_args
      check_mode: true
      register: ubr_check
    - name: Registries.conf untouched by check mode
      stat:
        path: ` + conf + `
      register: ubr_conf
    - name: Configure
      use_buildset_registry: *ubr_args
      register: ubr_first
    - name: Configure again
      use_buildset_registry: *ubr_args
      register: ubr_second
    - name: Check the results
      assert:
        that:
          - ubr_check is changed
          - not ubr_conf.stat.exists
          - ubr_first is changed
          - ubr_second is not changed
          - ubr_first.clients == ['containers']
          - ubr_first.mirrors['quay.io'] == ubr_first.location + '/quay.io'
          - "'/etc/hosts' in ubr_first.files"
`
	pb := filepath.Join(dir, "use.yaml")
	os.WriteFile(pb, []byte(playbook), 0o644)
	env := ansibletest.PlaybookEnv(t, dir, lib.Dir)
	out := sb.Run(t, env, "ansible-playbook", "--diff", "-i", filepath.Join(dir, "inventory"),
		"-e", "@"+filepath.Join(dir, "vars.json"), pb)
	if !strings.Contains(out, "+"+f.registry["host"].(string)+"\tzuul-jobs.buildset-registry") {
		t.Errorf("--diff does not show the hosts line:\n%s", out)
	}
	if strings.Contains(out, f.registry["password"].(string)) {
		t.Error("the registry password appears in the playbook output")
	}
	podman(t, sb, dir, conf, "pull", "-q", quayApp+":latest")
	if got := strings.TrimSpace(podman(t, sb, dir, conf, "image", "inspect", "--format", "{{.Digest}}", quayApp+":latest")); got != f.digest[quayApp] {
		t.Errorf("podman pulled %s, want the speculative %s", got, f.digest[quayApp])
	}
}
