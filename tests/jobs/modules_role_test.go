package jobs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildArchMod builds testdata/archmod reporting the given architecture.
func buildArchMod(t *testing.T, out, arch string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.arch="+arch, "-o", out, "./testdata/archmod")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building archmod: %v\n%s", err, b)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestModulesRole runs the imagegate-modules role's action plugin with real
// ansible-playbook (ansible-core 2.14): the binary for the host's
// architecture runs (from uname, from gathered facts, or forced), a role
// dependency's library/ and action_plugins/ serve the dependent role's
// tasks and every later play, check mode reaches the module, and an
// unsupported architecture or a missing binary fails with a clear message.
func TestModulesRole(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	dir := t.TempDir()
	roles := filepath.Join(dir, "roles")
	mods := filepath.Join(roles, "imagegate-modules")
	if err := os.MkdirAll(roles, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "roles", "imagegate-modules"), mods).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	os.RemoveAll(filepath.Join(mods, "library"))
	if err := os.MkdirAll(filepath.Join(mods, "library"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A test module with a build for every architecture of the release
	// tree (each a binary of this machine's architecture that reports the
	// name it was given), and one with only its amd64 build.
	buildArchMod(t, filepath.Join(mods, "library", "igtest_arch"), "amd64")
	for _, a := range []string{"arm64", "ppc64le", "s390x"} {
		buildArchMod(t, filepath.Join(mods, "library", "igtest_arch_"+a), a)
	}
	buildArchMod(t, filepath.Join(mods, "library", "igtest_amd64only"), "amd64")
	for _, m := range []string{"igtest_arch", "igtest_amd64only"} {
		if err := os.Symlink("imagegate_module.py", filepath.Join(mods, "action_plugins", m+".py")); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(roles, "dep-user", "meta", "main.yaml"), "dependencies:\n  - role: imagegate-modules\n")
	write(t, filepath.Join(roles, "dep-user", "tasks", "main.yaml"), `- name: Call the module from a role that depends on imagegate-modules
  igtest_arch:
    echo: from-role
  register: from_role
`)
	out := filepath.Join(dir, "out")
	write(t, filepath.Join(dir, "playbook.yaml"), `- hosts: localhost
  gather_facts: false
  roles:
    - dep-user
  tasks:
    - name: Record the role's result
      ansible.builtin.copy:
        content: "{{ from_role | to_json }}"
        dest: `+out+`/role.json

- hosts: localhost
  gather_facts: false
  tasks:
    - name: A later play, without the role
      igtest_arch:
        echo: later-play
      register: later
    - name: Check mode reaches the module
      igtest_arch:
      check_mode: true
      register: checked
    - name: Forced architecture
      igtest_arch:
      vars:
        imagegate_module_arch: aarch64
      register: forced
    - name: Forced ppc64le (ansible_architecture's name)
      igtest_arch:
      vars:
        imagegate_module_arch: ppc64le
      register: forced_ppc64le
    - name: Forced s390x
      igtest_arch:
      vars:
        imagegate_module_arch: s390x
      register: forced_s390x
    - name: Unsupported architecture
      igtest_arch:
      vars:
        imagegate_module_arch: riscv64
      register: unsupported
      ignore_errors: true
    - name: Missing binary for the architecture
      igtest_amd64only:
      vars:
        imagegate_module_arch: arm64
      register: missing
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ {'later': later, 'checked': checked, 'forced': forced, 'forced_ppc64le': forced_ppc64le, 'forced_s390x': forced_s390x, 'unsupported': unsupported, 'missing': missing} | to_json }}"
        dest: `+out+`/later.json

- hosts: localhost
  gather_facts: true
  tasks:
    - name: From gathered facts
      igtest_arch:
      register: facts
    - ansible.builtin.copy:
        content: "{{ {'facts': facts, 'arch': ansible_facts.architecture} | to_json }}"
        dest: `+out+`/facts.json
`)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ansible.cfg"), "[defaults]\nroles_path = "+roles+"\nlocalhost_warning = False\nlocal_tmp = "+filepath.Join(dir, "tmp")+"\n")
	cmd := exec.Command("ansible-playbook", "-i", "localhost,", "-c", "local", "playbook.yaml")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ANSIBLE_CONFIG="+filepath.Join(dir, "ansible.cfg"), "ANSIBLE_NOCOLOR=1")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-playbook: %v\n%s", err, b)
	}
	read := func(name string) map[string]any {
		raw, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	hostArch := map[string]string{"x86_64": "amd64", "aarch64": "arm64"}
	uname, _ := exec.Command("uname", "-m").Output()
	want := hostArch[strings.TrimSpace(string(uname))]
	if want == "" {
		t.Fatalf("this test needs an amd64 or arm64 machine, not %s", uname)
	}
	role := read("role.json")
	if role["arch"] != want || role["echo"] != "from-role" {
		t.Errorf("module called from a dependent role: %v", role)
	}
	later := read("later.json")
	get := func(k string) map[string]any { m, _ := later[k].(map[string]any); return m }
	if l := get("later"); l["arch"] != want || l["echo"] != "later-play" {
		t.Errorf("module in a later play: %v", l)
	}
	if c := get("checked"); c["check_mode"] != true {
		t.Errorf("check mode: %v", c)
	}
	if f := get("forced"); f["arch"] != "arm64" {
		t.Errorf("imagegate_module_arch=aarch64 ran %v", f)
	}
	for _, a := range []string{"ppc64le", "s390x"} {
		if f := get("forced_" + a); f["arch"] != a {
			t.Errorf("imagegate_module_arch=%s ran %v", a, f)
		}
	}
	if u := get("unsupported"); u["failed"] != true || !strings.Contains(u["msg"].(string), "host localhost is riscv64 (from imagegate_module_arch)") ||
		!strings.Contains(u["msg"].(string), "x86_64 (amd64), aarch64 (arm64), ppc64le and s390x") {
		t.Errorf("unsupported architecture: %v", u)
	}
	if m := get("missing"); m["failed"] != true || !strings.Contains(m["msg"].(string), "no igtest_amd64only binary for linux/arm64") {
		t.Errorf("missing binary: %v", m)
	}
	facts := read("facts.json")
	if f, _ := facts["facts"].(map[string]any); f["arch"] != want {
		t.Errorf("module with gathered facts (%v): %v", facts["arch"], f)
	}
}

// TestModuleDocs renders every module's sidecar documentation with
// ansible-doc -M, as an operator would from the role's library/.
func TestModuleDocs(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	lib := t.TempDir()
	for _, m := range moduleDirs(t, root) {
		sidecar := filepath.Join(root, "modules", m, m+".yml")
		b, err := os.ReadFile(sidecar)
		if err != nil {
			t.Errorf("module %s has no sidecar documentation %s", m, sidecar)
			continue
		}
		// ansible-doc reads the sidecar next to the module file; the
		// binary itself is not needed to render it.
		write(t, filepath.Join(lib, m+".yml"), string(b))
		write(t, filepath.Join(lib, m), "#!/bin/false\n")
		out, err := exec.Command("ansible-doc", "-M", lib, m).CombinedOutput()
		if err != nil || !strings.Contains(string(out), strings.ToUpper(m)) && !strings.Contains(string(out), m) {
			t.Errorf("ansible-doc -M %s %s: %v\n%s", lib, m, err, out)
		}
		if strings.Contains(string(out), "WARNING") {
			t.Errorf("ansible-doc %s warns:\n%s", m, out)
		}
	}
}
