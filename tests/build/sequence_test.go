package build

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// The phases of a job as an existing configuration writes them, calling
// the roles with no extra steps: a pre-run playbook that starts the buildset
// registry and configures the node's clients (upstream's
// buildset-registry/pre.yaml), and a run playbook that builds
// (docker-image/run.yaml). The run playbook finds the registry in the job's
// result data file, as Zuul gives it to later playbooks of the same job.
const (
	earlyPlaybook = `
# A buildkitd that started before the buildset registry existed (an earlier
# build on this node, or a site's pre-run): it runs without mirrors.
- hosts: all
  gather_facts: false
  roles:
    - ensure-buildkit
`
	prePlaybook = `
- hosts: all
  gather_facts: false
  roles:
    - run-buildset-registry
    - use-buildset-registry
`
	// The build jobs' post-run: buildkitd ends with the job.
	postPlaybook = `
- hosts: all
  gather_facts: false
  tasks:
    - name: Stop buildkitd
      ansible.builtin.include_role:
        name: ensure-buildkit
        tasks_from: stop.yaml
`
	runPlaybook = `
- hosts: all
  gather_facts: false
  environment:
    # build_args: [FROM_ENV] takes its value from here, as docker build
    # --build-arg FROM_ENV would.
    FROM_ENV: set in the job environment
  roles:
    - build-docker-image
  tasks:
    - name: buildkitd was (re)started only when its configuration changed
      ansible.builtin.assert:
        that:
          - (ensure_buildkit_result is changed) == (expect_restart | bool)
          - not (expect_restart | bool) or (ensure_buildkit_result.msg is search('^restarted buildkitd .*/etc/buildkit/buildkitd.toml changed since it started'))
          - build_docker_image_result.images[0].docker_names == ['myorg/app:latest', 'myorg/app:change_7_latest']

    - name: Run the built image with docker
      ansible.builtin.command: docker run --rm --network none myorg/app:change_7_latest
      environment:
        DOCKER_HOST: "{{ build_docker_image_docker_host }}"
      register: run
      changed_when: false

    - name: The image runs what the Dockerfile built on the speculative quay.io base
      ansible.builtin.assert:
        that:
          - run.stdout_lines == ['built on the speculative quay.io base', 'FROM_ENV=set in the job environment', 'UNSET_ARG=its ARG default']
`
)

// TestRoleSequenceOnAFreshNode: run-buildset-registry, use-buildset-registry
// and build-docker-image in sequence, with nothing else, on a node (this
// machine in a sandbox: its /etc is private, buildkitd's paths are
// temporary) that has no internet. buildkitd comes from the release tree
// (ensure-buildkit's files/, as make dist puts it there), and the image is
// built FROM quay.io/myorg/base, which exists only in the buildset
// registry. A buildkitd already runs, started before the registry existed:
// the build restarts it with the configuration use-buildset-registry wrote
// (/etc/buildkit/buildkitd.toml), and a second build in the same job does
// not restart it.
func TestRoleSequenceOnAFreshNode(t *testing.T) {
	t.Parallel()
	sb := testenv.NewSandbox(t, "/etc", "/usr/local/share/ca-certificates")
	dockerd := testenv.StartDockerd(t, testenv.DockerdOptions{})
	dir := testenv.ShortTempDir(t)
	bk := filepath.Join(dir, "bk")
	roles := rolesPath(t, []string{"run-buildset-registry", "use-buildset-registry", "build-docker-image", "ensure-buildkit"},
		"buildset_registry", "use_buildset_registry", "docker_image_build", "buildkitd_service")
	// The release tree's buildkitd for this machine, where make dist puts it.
	dist := testenv.Tool(t, "BUILDKITD_DIST", "buildkitd-dist")
	files := filepath.Join(roles, "ensure-buildkit", "files", "linux_"+runtime.GOARCH)
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, nil, "cp", filepath.Join(dist, "linux_"+runtime.GOARCH, "buildkitd"), filepath.Join(files, "buildkitd"))

	registryRoot := filepath.Join(dir, "buildset_registry")
	t.Cleanup(func() {
		stopBuildkitd(t, filepath.Join(bk, "run", "buildkitd.pid"), filepath.Join(bk, "buildkitd.log"))
		for _, exe := range daemon.StopUnder(registryRoot) {
			t.Logf("stopped %s", exe)
		}
	})

	work := filepath.Join(dir, "src", "example.org", "org", "app")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := `FROM quay.io/myorg/base
ARG FROM_ENV
ARG UNSET_ARG="its ARG default"
RUN echo "built on the $(cat /etc/base-release) quay.io base" > /built.txt && echo "FROM_ENV=$FROM_ENV" >> /built.txt && echo "UNSET_ARG=$UNSET_ARG" >> /built.txt
CMD ["cat", "/built.txt"]
`
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results.json")
	if err := os.WriteFile(results, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	vars := map[string]any{
		"zuul": map[string]any{"build": "b7", "change": "7", "pipeline": "check",
			"change_url": "https://review.example.org/7",
			"project":    map[string]any{"src_dir": "src/example.org/org/app"},
			"executor":   map[string]any{"result_data_file": results}},
		"docker_images": []any{map[string]any{"context": ".", "repository": "myorg/app",
			"build_args": []any{"FROM_ENV", "UNSET_ARG"}}},
		"zuul_work_dir":          work,
		"buildset_registry_root": registryRoot,
		"buildset_registry_port": port,
		"buildset_registry_host": "127.0.0.1",
		// The node's dockerd: the build loads the image into it, and
		// use-buildset-registry makes the registry its mirror.
		"build_docker_image_docker_host":           dockerd.Host,
		"use_buildset_registry_docker_daemon_json": dockerd.ConfigFile,
		"use_buildset_registry_docker_host":        dockerd.Host,
		"use_buildset_registry_docker_pidfile":     dockerd.Pidfile,
		// buildkitd.toml is the default /etc/buildkit/buildkitd.toml,
		// which use-buildset-registry writes; buildkitd's own paths are
		// temporary.
		"ensure_buildkit_install_dir":     filepath.Join(bk, "bin"),
		"ensure_buildkit_root":            filepath.Join(bk, "root"),
		"ensure_buildkit_address":         "unix://" + filepath.Join(bk, "run", "buildkitd.sock"),
		"ensure_buildkit_pidfile":         filepath.Join(bk, "run", "buildkitd.pid"),
		"ensure_buildkit_log":             filepath.Join(bk, "buildkitd.log"),
		"ensure_buildkit_service_manager": "process",
		"ensure_buildkit_extra_args":      []any{"--oci-worker-binary=runc", "--containerd-worker=false"},
		"ensure_buildkit_become":          false,
		"use_buildset_registry_become":    false,
		"build_docker_image_log_file":     filepath.Join(dir, "build.log"),
	}
	b, _ := json.Marshal(vars)
	varsFile := filepath.Join(dir, "vars.json")
	if err := os.WriteFile(varsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(ansibletest.PlaybookEnv(t, dir, ""), "ANSIBLE_ROLES_PATH="+roles, "HOME="+home,
		"ANSIBLE_ACTION_PLUGINS="+filepath.Join(daemon.RepoRoot(), "pkg", "runner", "plugins", "action"))
	ansiblePlaybook := sb.Wrap(t, "/usr/bin/ansible-playbook")
	var registryPassword string
	play := func(name, content string, extra ...string) string {
		t.Helper()
		pb := filepath.Join(dir, name)
		if err := os.WriteFile(pb, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
			"-e", "@" + varsFile}, extra...)
		cmd := exec.Command(ansiblePlaybook, append(args, pb)...)
		cmd.Env = append(os.Environ(), env...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
		if registryPassword != "" && strings.Contains(string(out), registryPassword) {
			t.Errorf("%s: the registry password appears in ansible-playbook's output", name)
		}
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "build.log"))
			t.Fatalf("%s: %v\n%s\nbuild log:\n%s", name, err, out, log)
		}
		return string(out)
	}

	play("early.yaml", earlyPlaybook)
	early := readPid(t, filepath.Join(bk, "run", "buildkitd.pid"))
	if cfg, _ := os.ReadFile(sb.Path("/etc") + "/buildkit/buildkitd.toml"); len(cfg) != 0 {
		t.Fatalf("buildkitd.toml before the registry exists: %q", cfg)
	}

	play("pre.yaml", prePlaybook)
	br := registryFromResults(t, results)
	registryPassword = br.Password
	cfg, err := os.ReadFile(sb.Path("/etc") + "/buildkit/buildkitd.toml")
	location := fmt.Sprintf("zuul-jobs.buildset-registry:%d", port)
	if err != nil || !strings.Contains(string(cfg), `mirrors = ['`+location+`/quay.io'`) {
		t.Fatalf("use-buildset-registry did not write /etc/buildkit/buildkitd.toml with the quay.io mirror (%v):\n%s", err, cfg)
	}

	// The speculative base, as pull-from-intermediate-registry leaves it:
	// under quay.io/ in the buildset registry (namespace mapping), and
	// nowhere else (quay.io itself is unreachable from here).
	base := testenv.BusyboxImage(t, testenv.FileLayer("etc/base-release", []byte("speculative\n")))
	pool, err := pki.CertPool([]byte(br.Cert))
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	ropts := []remote.Option{remote.WithAuth(&authn.Basic{Username: br.Username, Password: br.Password}),
		remote.WithTransport(tr), remote.WithContext(context.Background())}
	baseRef, _ := name.ParseReference(br.Address() + "/quay.io/myorg/base:latest")
	if err := remote.Write(baseRef, base, ropts...); err != nil {
		t.Fatal(err)
	}

	play("run.yaml", runPlaybook, "-e", "expect_restart=true")
	restarted := readPid(t, filepath.Join(bk, "run", "buildkitd.pid"))
	if restarted == early || alive(early) {
		t.Errorf("the buildkitd started before the registry (pid %d) still runs; after the build: pid %d", early, restarted)
	}
	// The app was built on the speculative base: its first layers are the
	// base's, by digest.
	app, err := remote.Image(mustRef(t, br.Address()+"/myorg/app:change_7_latest"), ropts...)
	if err != nil {
		t.Fatal(err)
	}
	baseLayers, _ := base.Layers()
	appLayers, _ := app.Layers()
	if len(appLayers) != len(baseLayers)+1 {
		t.Fatalf("app has %d layers, base %d", len(appLayers), len(baseLayers))
	}
	for i, bl := range baseLayers {
		bd, _ := bl.Digest()
		if ad, _ := appLayers[i].Digest(); bd != ad {
			t.Errorf("layer %d: app %s, speculative base %s", i, ad, bd)
		}
	}

	// A second build in the same job: buildkitd is left alone.
	second := play("run.yaml", runPlaybook, "-e", "expect_restart=false")
	if pid := readPid(t, filepath.Join(bk, "run", "buildkitd.pid")); pid != restarted {
		t.Errorf("the second build restarted buildkitd (pid %d, was %d):\n%s", pid, restarted, second)
	}

	// The job ends: buildkitd stops, its log goes with the job's logs, and
	// its build cache stays.
	play("post.yaml", postPlaybook)
	if alive(restarted) {
		t.Errorf("buildkitd (pid %d) still runs after the post-run playbook", restarted)
	}
	if log, err := os.ReadFile(filepath.Join(home, "zuul-output", "logs", "buildkitd.log")); err != nil || !strings.Contains(string(log), "started by imagegate's buildkitd_service") {
		t.Errorf("buildkitd's log is not with the job's logs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bk, "root")); err != nil {
		t.Errorf("the build cache is gone: %v", err)
	}
}

// TestEnsureBuildkitArchitectures: a node whose architecture has no
// buildkitd in the release tree fails ensure-buildkit, naming the host and
// the architecture, before anything is installed; so does a release tree
// that lacks the node's binary.
func TestEnsureBuildkitArchitectures(t *testing.T) {
	t.Parallel()
	dir := testenv.ShortTempDir(t)
	roles := rolesPath(t, []string{"ensure-buildkit"}, "use_buildset_registry", "buildkitd_service")
	pb := filepath.Join(dir, "ensure.yaml")
	os.WriteFile(pb, []byte("- hosts: all\n  gather_facts: false\n  roles:\n    - ensure-buildkit\n"), 0o644)
	for _, tc := range []struct {
		arch string
		want []string
	}{
		{"riscv64", []string{"Host localhost is riscv64 (imagegate_module_arch)", "x86_64 (amd64), aarch64 (arm64), ppc64le and s390x only"}},
		{"s390x", []string{"There is no buildkitd for linux/s390x (host localhost, s390x)", "ensure-buildkit/files/linux_s390x/buildkitd", "make dist"}},
	} {
		install := filepath.Join(dir, tc.arch, "bin")
		vars, _ := json.Marshal(map[string]any{"imagegate_module_arch": tc.arch, "ensure_buildkit_install_dir": install,
			"ensure_buildkit_config_dir": filepath.Join(dir, tc.arch, "etc"), "ensure_buildkit_become": false})
		varsFile := filepath.Join(dir, tc.arch+".json")
		os.WriteFile(varsFile, vars, 0o600)
		cmd := exec.Command("ansible-playbook", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
			"-e", "@"+varsFile, pb)
		cmd.Env = append(append(os.Environ(), ansibletest.PlaybookEnv(t, dir, "")...), "ANSIBLE_ROLES_PATH="+roles)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: ensure-buildkit succeeded:\n%s", tc.arch, out)
			continue
		}
		flat := strings.Join(strings.Fields(string(out)), " ")
		for _, w := range tc.want {
			if !strings.Contains(flat, w) {
				t.Errorf("%s: the failure lacks %q:\n%s", tc.arch, w, out)
			}
		}
		if _, err := os.Stat(install); !os.IsNotExist(err) {
			t.Errorf("%s: something was installed (%v)", tc.arch, err)
		}
	}
}

var pidRE = regexp.MustCompile(`^\d+$`)

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if err != nil || !pidRE.MatchString(s) {
		t.Fatalf("pid file %s: %q, %v", path, b, err)
	}
	pid, _ := strconv.Atoi(s)
	return pid
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// registryFromResults reads secret_data.buildset_registry from the job's
// result data file, where run-buildset-registry's zuul_return put it.
func registryFromResults(t *testing.T, path string) *zuul.BuildsetRegistry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rd struct {
		SecretData struct {
			BuildsetRegistry *zuul.BuildsetRegistry `json:"buildset_registry"`
		} `json:"secret_data"`
	}
	if err := json.Unmarshal(b, &rd); err != nil || rd.SecretData.BuildsetRegistry == nil {
		t.Fatalf("result data file %s holds no buildset registry (%v)", path, err)
	}
	return rd.SecretData.BuildsetRegistry
}

var installSkipped = regexp.MustCompile(`Install docker\.io from the distribution\] \*+\nskipping: \[localhost\]`)

// TestEnsureDockerd: the build jobs' ensure-dockerd leaves a node that has
// dockerd as it is (no package installed, nothing changed), and does
// nothing at all with ensure_dockerd_install: false.
func TestEnsureDockerd(t *testing.T) {
	t.Parallel()
	dir := testenv.ShortTempDir(t)
	roles := filepath.Join(dir, "roles")
	testenv.Run(t, nil, "mkdir", "-p", roles)
	testenv.Run(t, nil, "cp", "-a", filepath.Join(daemon.RepoRoot(), "roles", "ensure-dockerd"), filepath.Join(roles, "ensure-dockerd"))
	pb := filepath.Join(dir, "pre.yaml")
	os.WriteFile(pb, []byte(`- hosts: all
  gather_facts: false
  tasks:
    - name: Make sure the node has docker
      ansible.builtin.include_role:
        name: ensure-dockerd
`), 0o644)
	for _, tc := range []struct {
		install string
		want    string
	}{
		{"true", "ok: [localhost]"},
		{"false", "skipping: [localhost]"},
	} {
		cmd := exec.Command("ansible-playbook", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
			"-e", "ensure_dockerd_install="+tc.install, "-e", "ensure_dockerd_become=false", pb)
		cmd.Env = append(append(os.Environ(), ansibletest.PlaybookEnv(t, dir, "")...), "ANSIBLE_ROLES_PATH="+roles)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ensure_dockerd_install=%s: %v\n%s", tc.install, err, out)
		}
		if !strings.Contains(string(out), "changed=0") || !strings.Contains(string(out), tc.want) {
			t.Errorf("ensure_dockerd_install=%s on a node with dockerd:\n%s", tc.install, out)
		}
		if tc.install == "true" && !strings.Contains(string(out), "TASK [ensure-dockerd : Find dockerd]") {
			t.Errorf("ensure-dockerd did not look for dockerd:\n%s", out)
		}
		if !installSkipped.Match(out) {
			t.Errorf("ensure_dockerd_install=%s: the package install was not skipped on a node that has dockerd:\n%s", tc.install, out)
		}
	}
}
