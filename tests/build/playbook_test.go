// Package build holds the end-to-end tests of the ensure-buildkit role and
// the docker_image_build module, run through real ansible-playbook against
// real buildkitd, dockerd and docker-registry.
package build

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
)

const playbook = `
- hosts: localhost
  gather_facts: false
  roles:
    - role: ensure-buildkit
  tasks:
    - name: Build the project's image into the buildset registry and dockerd
      docker_image_build:
        zuul: "{{ zuul }}"
        docker_images: "{{ docker_images }}"
        buildset_registry: "{{ buildset_registry }}"
        zuul_work_dir: "{{ work_dir }}"
        buildkit_addr: "{{ ensure_buildkit_address }}"
        docker_host: "{{ docker_host }}"
        log_file: "{{ log_file }}"
      register: build

    - name: The module reports every reference and the digest
      ansible.builtin.assert:
        that:
          - build.images | length == 1
          - build.images[0].digest is match('^sha256:[0-9a-f]{64}$')
          - build.images[0].references | length == 2
          - build.images[0].docker_names == ['myorg/app:latest', 'myorg/app:change_42_latest']
          # Every build writes a new provenance (its time and
          # invocation ID), so a rebuild changes the index too.
          - build is changed
          - (expect_changed | bool) or build.images[0].cache_hits > 0

    - name: Run the built image with docker
      ansible.builtin.command: docker run --rm --network none myorg/app:change_42_latest
      environment:
        DOCKER_HOST: "{{ docker_host }}"
      register: run
      changed_when: false

    - name: The image runs what the Dockerfile built on the speculative base
      ansible.builtin.assert:
        that:
          - run.stdout == 'built on speculative base'

    - name: Save the result for the test
      ansible.builtin.copy:
        content: "{{ build | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      changed_when: false
`

// TestPlaybookEnsureBuildkitAndBuild runs the ensure-buildkit role (local
// binary, detached process) and docker_image_build through
// ansible-playbook twice: the first run installs, starts and builds on a
// speculative base image from the buildset registry, and docker runs the
// result; the second run changes only the build (its new provenance).
func TestPlaybookEnsureBuildkitAndBuild(t *testing.T) {
	t.Parallel()
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	dockerd := testenv.StartDockerd(t, testenv.DockerdOptions{})
	tr := &http.Transport{TLSClientConfig: reg.TLS.Client().Transport.(*http.Transport).TLSClientConfig}
	ropts := []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(tr), remote.WithContext(context.Background())}

	// The speculative base, as pull-from-intermediate-registry leaves it.
	base := testenv.BusyboxImage(t, testenv.FileLayer("etc/base-release", []byte("speculative\n")))
	baseRef, _ := name.ParseReference(reg.Host + "/myorg/base:latest")
	if err := remote.Write(baseRef, base, ropts...); err != nil {
		t.Fatal(err)
	}

	// The role maps the registry's alias in /etc/hosts: a private copy.
	sb := testenv.NewSandbox(t, "/etc/hosts")
	dir := testenv.ShortTempDir(t)
	pidfile := filepath.Join(dir, "buildkitd.pid")
	t.Cleanup(func() { stopBuildkitd(t, pidfile, filepath.Join(dir, "buildkitd.log")) })

	roles := rolesPath(t, []string{"ensure-buildkit"}, "docker_image_build", "use_buildset_registry", "buildkitd_service")
	work := filepath.Join(dir, "home", "src", "example.org", "org", "app")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM myorg/base\nRUN echo built on $(cat /etc/base-release) base > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n"
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	resultFile := filepath.Join(dir, "result.json")
	vars := map[string]any{
		"zuul": map[string]any{"change": "42", "pipeline": "check", "change_url": "https://review.example.org/42",
			"project": map[string]any{"src_dir": "src/example.org/org/app"}},
		"docker_images": []any{map[string]any{"context": ".", "repository": "myorg/app"}},
		"buildset_registry": map[string]any{"host": "127.0.0.1", "port": reg.Port, "username": reg.Username,
			"password": reg.Password, "cert": string(reg.TLS.CA.CertPEM)},
		"work_dir":                        work,
		"docker_host":                     dockerd.Host,
		"log_file":                        filepath.Join(dir, "build.log"),
		"result_file":                     resultFile,
		"ensure_buildkit_binary":          testenv.Tool(t, "BUILDKITD", "buildkitd"),
		"ensure_buildkit_install_dir":     filepath.Join(dir, "bin"),
		"ensure_buildkit_config_dir":      filepath.Join(dir, "etc"),
		"ensure_buildkit_root":            filepath.Join(dir, "root"),
		"ensure_buildkit_address":         "unix://" + filepath.Join(dir, "run", "buildkitd.sock"),
		"ensure_buildkit_pidfile":         pidfile,
		"ensure_buildkit_log":             filepath.Join(dir, "buildkitd.log"),
		"ensure_buildkit_service_manager": "process",
		"ensure_buildkit_become":          false,
	}
	b, _ := json.Marshal(vars)
	varsFile := filepath.Join(dir, "vars.json")
	if err := os.WriteFile(varsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pbFile := filepath.Join(dir, "playbook.yaml")
	if err := os.WriteFile(pbFile, []byte(playbook), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(ansibletest.PlaybookEnv(t, dir, ""), "ANSIBLE_ROLES_PATH="+roles, "ANSIBLE_HOST_KEY_CHECKING=0")
	ansiblePlaybook := sb.Wrap(t, "/usr/bin/ansible-playbook")
	run := func(expectChanged bool) string {
		cmd := exec.Command(ansiblePlaybook, "-i", "localhost,", "-c", "local",
			"-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "@"+varsFile,
			"-e", "expect_changed="+strconv.FormatBool(expectChanged), pbFile)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), reg.Password) {
			t.Errorf("the registry password appears in ansible-playbook's output")
		}
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "build.log"))
			t.Fatalf("ansible-playbook: %v\n%s\nbuild log:\n%s", err, out, log)
		}
		return string(out)
	}

	first := run(true)
	if !recapChanged(t, first) {
		t.Errorf("first run changed nothing:\n%s", first)
	}
	var res struct {
		Images []struct {
			Digest string `json:"digest"`
		} `json:"images"`
	}
	rb, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &res); err != nil {
		t.Fatal(err)
	}

	// The image was built on the speculative base: its first layers are the
	// base's, by digest.
	// The tag is an index (the image and its provenance); remote.Image
	// resolves it to the image.
	appRef, _ := name.ParseReference(reg.Host + "/myorg/app:change_42_latest")
	app, err := remote.Image(appRef, ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := remote.Head(appRef, ropts...); err != nil || d.Digest.String() != res.Images[0].Digest {
		t.Errorf("registry holds %v (%v), module reported %s", d, err, res.Images[0].Digest)
	}
	baseLayers, _ := base.Layers()
	appLayers, _ := app.Layers()
	if len(appLayers) != len(baseLayers)+1 {
		t.Fatalf("app has %d layers, base %d", len(appLayers), len(baseLayers))
	}
	for i, bl := range baseLayers {
		bd, _ := bl.Digest()
		ad, _ := appLayers[i].Digest()
		if bd != ad {
			t.Errorf("layer %d: app %s, speculative base %s", i, ad, bd)
		}
	}
	// buildkitd.toml, written by use_buildset_registry: the mirror at the
	// alias, mapped in the (sandbox's) /etc/hosts, and the CA trusted for
	// the alias and for the address, where docker_image_build may push.
	cfg, _ := os.ReadFile(filepath.Join(dir, "etc", "buildkitd.toml"))
	if strings.Contains(string(cfg), reg.Password) {
		t.Error("buildkitd.toml holds the registry password")
	}
	location := fmt.Sprintf("zuul-jobs.buildset-registry:%d", reg.Port)
	for _, want := range []string{`mirrors = ['` + location + `'`, `[registry.'` + location + `']`, `[registry.'` + reg.Host + `']`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("buildkitd.toml lacks %s:\n%s", want, cfg)
		}
	}
	if hosts, _ := os.ReadFile(sb.Path("/etc/hosts")); !strings.Contains(string(hosts), "127.0.0.1\tzuul-jobs.buildset-registry") {
		t.Errorf("the sandbox's /etc/hosts does not map the alias:\n%s", hosts)
	}

	// The second run changes only the build's provenance.
	second := run(false)
	if n := recapChangedCount(t, second); n != 1 {
		t.Errorf("second run changed %d tasks, want 1 (the build's new provenance):\n%s", n, second)
	}
}

var recapRE = regexp.MustCompile(`localhost\s+: ok=\d+\s+changed=(\d+)`)

func recapChanged(t *testing.T, out string) bool {
	t.Helper()
	return recapChangedCount(t, out) != 0
}

// recapChangedCount is the number of changed tasks in the play recap.
func recapChangedCount(t *testing.T, out string) int {
	t.Helper()
	m := recapRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no play recap in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// stopBuildkitd stops the buildkitd the role started (it runs detached, so
// it is not a child of the test), printing its log if the test failed.
func stopBuildkitd(t *testing.T, pidfile, log string) {
	if t.Failed() {
		if l, err := os.ReadFile(log); err == nil {
			t.Logf("buildkitd log:\n%s", l)
		}
	}
	daemon.StopPidfile(pidfile)
}

// rolesPath returns a roles path holding roles of this tree and the
// imagegate-modules role they depend on, with modules built fresh into its
// library (the tree's own library holds whatever make build last left
// there).
func rolesPath(t *testing.T, roles []string, modules ...string) string {
	t.Helper()
	root := daemon.RepoRoot()
	dir := filepath.Join(t.TempDir(), "roles")
	if err := os.MkdirAll(filepath.Join(dir, "imagegate-modules", "library"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		testenv.Run(t, nil, "cp", "-a", filepath.Join(root, "roles", r), filepath.Join(dir, r))
	}
	entries, err := os.ReadDir(filepath.Join(root, "roles", "imagegate-modules"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "library" {
			testenv.Run(t, nil, "cp", "-a", filepath.Join(root, "roles", "imagegate-modules", e.Name()), filepath.Join(dir, "imagegate-modules", e.Name()))
		}
	}
	if _, err := ansibletest.BuildLibrary(filepath.Join(dir, "imagegate-modules", "library"), modules...); err != nil {
		t.Fatal(err)
	}
	return dir
}
