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
	"time"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// releasePlaybook is upstream's release pattern as an existing playbook
// runs it: build-docker-image then upload-docker-image on the node, no
// buildset registry, the final tags uploaded to a plain-HTTP registry on
// localhost:80 with basic authentication.
const releasePlaybook = `
- hosts: all
  tasks:
    - name: Build
      ansible.builtin.include_role:
        name: build-docker-image
    - name: Upload
      ansible.builtin.include_role:
        name: upload-docker-image
    - name: Save the results for the test
      ansible.builtin.copy:
        content: "{{ {'build': build_docker_image_result, 'upload': upload_docker_image_result} | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      changed_when: false
`

// TestReleaseWithoutBuildsetRegistry: build then upload in one job with
// no buildset registry uploads what the build produced, with the digests
// built (a single-platform image and a multi-platform index), to Debian's
// docker-registry serving plain HTTP with htpasswd on port 80 of
// 127.0.0.1, in a network namespace of its own (so the port is free).
// The digests are read from the registry's storage.
func TestReleaseWithoutBuildsetRegistry(t *testing.T) {
	t.Parallel()
	dockerd := testenv.StartDockerd(t, testenv.DockerdOptions{})
	reg, cmd := testenv.DistributionCommand(t, testenv.DistributionOptions{PlainHTTP: true, Port: 80})
	ns := exec.Command("unshare", "--net", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, cmd.Path)
	ns.Args = append(ns.Args, cmd.Args[1:]...)
	ns.Env = cmd.Env
	reg.Process = testenv.StartProcess(t, "docker-registry", ns, reg.Dir)
	testenv.WaitFor(t, "docker-registry in its network namespace", 30*time.Second, reg.Process, func() error {
		if !reg.Process.LogContains("listening on") {
			return fmt.Errorf("not listening yet")
		}
		return nil
	})
	netns := "--net=/proc/" + strconv.Itoa(reg.Process.Cmd.Process.Pid) + "/ns/net"

	dir := testenv.ShortTempDir(t)
	pidfile := filepath.Join(dir, "buildkitd.pid")
	t.Cleanup(func() { stopBuildkitd(t, pidfile, filepath.Join(dir, "buildkitd.log")) })
	roles := rolesPath(t, []string{"ensure-buildkit", "build-docker-image", "upload-docker-image"},
		"docker_image_build", "docker_image_upload", "buildkitd_service", "use_buildset_registry")
	work := filepath.Join(dir, "home", "src", "example.org", "org", "app")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /release\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	resultFile := filepath.Join(dir, "result.json")
	vars := map[string]any{
		"zuul": map[string]any{"change": "42", "pipeline": "release", "change_url": "https://review.example.org/42",
			"project": map[string]any{"src_dir": work}, "executor": map[string]any{"result_data_file": filepath.Join(dir, "results.json")}},
		"docker_images": []any{
			map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "1.0"}},
			map[string]any{"context": ".", "repository": "myorg/multi", "tags": []any{"latest"}, "arch": []any{"linux/amd64", "linux/arm64"}},
		},
		"docker_registry":                 "localhost:80",
		"docker_credentials":              map[string]any{"username": reg.Username, "password": reg.Password},
		"upload_docker_image_promote":     false,
		"oci_layout_dir":                  layout,
		"build_docker_image_docker_host":  dockerd.Host,
		"build_docker_image_log_file":     filepath.Join(dir, "build.log"),
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
	if err := os.WriteFile(filepath.Join(dir, "results.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(vars)
	varsFile := filepath.Join(dir, "vars.json")
	if err := os.WriteFile(varsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pbFile := filepath.Join(dir, "playbook.yaml")
	if err := os.WriteFile(pbFile, []byte(releasePlaybook), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(ansibletest.PlaybookEnv(t, dir, ""), "ANSIBLE_ROLES_PATH="+roles, "ANSIBLE_HOST_KEY_CHECKING=0")
	cmd = exec.Command("nsenter", netns, "--", "ansible-playbook", "-i", "node,", "-c", "local",
		"-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "@"+varsFile, pbFile)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), reg.Password) {
		t.Errorf("the registry password appears in ansible-playbook's output")
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "build.log"))
		t.Fatalf("ansible-playbook: %v\n%s\nbuild log:\n%s", err, out, log)
	}

	var res struct {
		Build struct {
			Images []struct {
				Repository string `json:"repository"`
				Digest     string `json:"digest"`
			} `json:"images"`
		} `json:"build"`
		Upload struct {
			Uploads []struct {
				Reference, Digest, Source string
			} `json:"uploads"`
		} `json:"upload"`
	}
	rb, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &res); err != nil {
		t.Fatal(err)
	}
	built := map[string]string{}
	for _, im := range res.Build.Images {
		if !strings.HasPrefix(im.Digest, "sha256:") {
			t.Fatalf("build of %s reported digest %q", im.Repository, im.Digest)
		}
		built[im.Repository] = im.Digest
	}
	want := map[string]string{"myorg/app:latest": built["myorg/app"], "myorg/app:1.0": built["myorg/app"], "myorg/multi:latest": built["myorg/multi"]}
	if len(res.Upload.Uploads) != len(want) {
		t.Fatalf("uploads: %+v", res.Upload.Uploads)
	}
	for _, u := range res.Upload.Uploads {
		if !strings.HasPrefix(u.Source, "oci:"+layout+":") {
			t.Errorf("%s uploaded from %s, want the image layout", u.Reference, u.Source)
		}
	}
	// What the registry stores under each tag (distribution's filesystem
	// layout) is what was built.
	for ref, d := range want {
		repo, tag, _ := strings.Cut(ref, ":")
		link := filepath.Join(reg.Dir, "data", "docker", "registry", "v2", "repositories", repo, "_manifests", "tags", tag, "current", "link")
		got, err := os.ReadFile(link)
		if err != nil {
			t.Errorf("%s is not in the registry: %v", ref, err)
			continue
		}
		if string(got) != d {
			t.Errorf("registry has %s -> %s, built %s", ref, got, d)
		}
	}
	// The single-platform image was loaded into dockerd too, named with
	// the docker_registry prefix as upstream's build names it.
	if id := strings.TrimSpace(dockerd.Docker("image", "inspect", "--format", "{{.Id}}", "localhost:80/myorg/app:latest")); !strings.HasPrefix(id, "sha256:") {
		t.Errorf("dockerd has no localhost:80/myorg/app:latest (%q)", id)
	}
}
