package build

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// containerPlaybook runs the build-container-image role as a job's run
// playbook would, then podman run on the result in the same play.
const containerPlaybook = `
- hosts: localhost
  gather_facts: false
  environment:
    CONTAINERS_STORAGE_CONF: "{{ podman_storage_conf }}"
    CONTAINERS_CONF: "{{ podman_conf }}"
  roles:
    - build-container-image
  tasks:
    - name: The role reports the images where podman has them
      ansible.builtin.assert:
        that:
          - build_container_image_result.container_command == 'podman'
          - build_container_image_result.images[0].local_names == ['quay.io/myorg/app:latest', 'quay.io/myorg/app:change_7_latest']
          # Every build writes a new provenance (its time and
          # invocation ID), so a rebuild changes the index too.
          - build_container_image_result is changed

    - name: Run the built image with podman
      ansible.builtin.command: >-
        podman run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        quay.io/myorg/app:latest
      register: run
      changed_when: false

    - name: The image runs what was built
      ansible.builtin.assert:
        that:
          - run.stdout == 'built by build-container-image'
`

// TestRoleBuildContainerImageWithPodman: the build-container-image role
// (ensure-buildkit with the local binary, the buildset registry from the
// job's variables) builds container_images with the default
// container_command, and a later task's podman run <repository>:<tag> finds
// the image; the second run changes only the build (its new provenance).
func TestRoleBuildContainerImageWithPodman(t *testing.T) {
	t.Parallel()
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	sb := testenv.NewSandbox(t, "/etc/hosts")
	dir := testenv.ShortTempDir(t)
	pidfile := filepath.Join(dir, "buildkitd.pid")
	t.Cleanup(func() { stopBuildkitd(t, pidfile, filepath.Join(dir, "buildkitd.log")) })
	roles := rolesPath(t, []string{"build-container-image", "ensure-buildkit"}, "container_image_build", "use_buildset_registry", "buildkitd_service")
	work := filepath.Join(dir, "home", "src", "example.org", "org", "app")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, nil, "cp", testenv.BusyboxPath, filepath.Join(work, "busybox"))
	os.WriteFile(filepath.Join(work, "msg"), []byte("built by build-container-image\n"), 0o644)
	os.WriteFile(filepath.Join(work, "Containerfile"), []byte("FROM scratch\nCOPY busybox /busybox\nCOPY msg /msg\nCMD [\"/busybox\", \"cat\", \"/msg\"]\n"), 0o644)
	pdir := filepath.Join(dir, "podman")
	os.MkdirAll(pdir, 0o755)
	storage, conf := filepath.Join(pdir, "storage.conf"), filepath.Join(pdir, "containers.conf")
	os.WriteFile(storage, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(pdir, "root"), filepath.Join(pdir, "run"))), 0o644)
	os.WriteFile(conf, []byte("[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n"), 0o644)

	vars := map[string]any{
		"zuul": map[string]any{"change": "7", "pipeline": "check", "change_url": "https://review.example.org/7",
			"project": map[string]any{"src_dir": "src/example.org/org/app"}},
		"container_images": []any{map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/app"}},
		"buildset_registry": map[string]any{"host": "127.0.0.1", "port": reg.Port, "username": reg.Username,
			"password": reg.Password, "cert": string(reg.TLS.CA.CertPEM)},
		"zuul_work_dir":                   work,
		"podman_storage_conf":             storage,
		"podman_conf":                     conf,
		"build_container_image_log_file":  filepath.Join(dir, "build.log"),
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
	os.WriteFile(varsFile, b, 0o600)
	pbFile := filepath.Join(dir, "playbook.yaml")
	os.WriteFile(pbFile, []byte(containerPlaybook), 0o644)
	env := append(ansibletest.PlaybookEnv(t, dir, ""), "ANSIBLE_ROLES_PATH="+roles)
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
	if first := run(true); !recapChanged(t, first) {
		t.Errorf("first run changed nothing:\n%s", first)
	}
	// The second run changes only the build's provenance.
	if second := run(false); recapChangedCount(t, second) != 1 {
		t.Errorf("second run changed more than the build's provenance:\n%s", second)
	}
}
