// Package lab writes the projects and queues of imagegate's end-to-end
// scenarios and demo: a base image project (myorg/base), an application
// project built FROM it (myorg/app) with its own test jobs, and queue files
// that run them through the opendev-* jobs of a release tree, with the job
// variables that point the roles at one machine's daemons and registries.
//
// Images are built FROM scratch on a busybox rootfs (Debian's
// busybox-static), so nothing is pulled from the network.
package lab

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// Registry is a registry the jobs talk to.
type Registry struct {
	Host     string
	Port     int
	Username string
	Password string
	// CA is the PEM of the CA its certificate chains to.
	CA string
}

// Address is host:port.
func (r Registry) Address() string { return fmt.Sprintf("%s:%d", r.Host, r.Port) }

// Env is the machine the scenarios run on.
type Env struct {
	// Dist is the release tree (make dist's dist/imagegate).
	Dist string
	// DockerHost, DockerConfigFile, DockerPidfile and DockerClientConfig
	// describe the node's dockerd (its socket, daemon.json, pid file and a
	// private CLI configuration directory).
	DockerHost, DockerConfigFile, DockerPidfile, DockerClientConfig string
	// Buildkitd is the buildkitd binary ensure-buildkit installs (empty:
	// the release tree's, the role's default), and BuildkitDir a short
	// directory for its root, socket and files.
	Buildkitd, BuildkitDir string
	// BuildsetRegistryPort is the port of the buildset registries.
	BuildsetRegistryPort int
	// Intermediate is the intermediate registry; Target the registry
	// images are uploaded to and promoted in.
	Intermediate, Target Registry
	// ExtraSecrets are more site secrets by name, in plain text (a
	// project's container_registry_credentials, ...).
	ExtraSecrets map[string]any
}

// BuildkitAddress is the buildkitd socket ensure-buildkit starts.
func (e *Env) BuildkitAddress() string {
	return "unix://" + filepath.Join(e.BuildkitDir, "buildkitd.sock")
}

// BuildkitPidfile is the pid file of that buildkitd.
func (e *Env) BuildkitPidfile() string { return filepath.Join(e.BuildkitDir, "buildkitd.pid") }

// Vars are the job variables of every change: the roles' defaults point at
// a real node's system paths; these point them at the Env.
func (e *Env) Vars() map[string]any {
	v := map[string]any{
		"buildset_registry_port":                   e.BuildsetRegistryPort,
		"use_buildset_registry_become":             false,
		"use_buildset_registry_clients":            []any{"docker"},
		"use_buildset_registry_docker_daemon_json": e.DockerConfigFile,
		"use_buildset_registry_docker_host":        e.DockerHost,
		"use_buildset_registry_docker_pidfile":     e.DockerPidfile,
		"ensure_buildkit_install_dir":              filepath.Join(e.BuildkitDir, "bin"),
		"ensure_buildkit_config_dir":               filepath.Join(e.BuildkitDir, "etc"),
		"ensure_buildkit_root":                     filepath.Join(e.BuildkitDir, "root"),
		"ensure_buildkit_address":                  e.BuildkitAddress(),
		"ensure_buildkit_pidfile":                  e.BuildkitPidfile(),
		"ensure_buildkit_log":                      filepath.Join(e.BuildkitDir, "buildkitd.log"),
		"ensure_buildkit_service_manager":          "process",
		"ensure_buildkit_become":                   false,
		// Images reach the node's dockerd only through the buildset
		// registry (as a pull through registry-mirrors), which is what the
		// test jobs check.
		"build_docker_image_docker_host": "none",
		"lab_docker_host":                e.DockerHost,
		"lab_docker_config":              e.DockerClientConfig,
		"docker_registry":                e.Target.Address(),
		"docker_registry_cert":           e.Target.CA,
	}
	if e.Buildkitd != "" {
		v["ensure_buildkit_binary"] = e.Buildkitd
	}
	return v
}

// Secrets are the site and project secrets, in plain text.
func (e *Env) Secrets() map[string]any {
	s := map[string]any{
		"opendev-intermediate-registry": map[string]any{
			"host": e.Intermediate.Host, "port": e.Intermediate.Port,
			"username": e.Intermediate.Username, "password": e.Intermediate.Password,
			"cert": e.Intermediate.CA,
		},
		"myorg-registry": map[string]any{
			"username": e.Target.Username, "password": e.Target.Password,
			"repository": "^myorg/",
		},
	}
	for k, v := range e.ExtraSecrets {
		s[k] = v
	}
	return s
}

// Images returns docker_images for one repository built from the project
// root.
func Images(repository string, tags ...string) []any {
	img := map[string]any{"context": ".", "repository": repository}
	if len(tags) > 0 {
		l := make([]any, len(tags))
		for i, t := range tags {
			l[i] = t
		}
		img["tags"] = l
	}
	return []any{img}
}

// Change is one queue item.
type Change struct {
	Project   string
	Number    int
	Src       string
	DependsOn []int
	Pipeline  string
	Vars      map[string]any
	// Jobs are job names or {name: {attributes}} entries.
	Jobs []any
}

// Queue returns a queue file for the changes, with the release tree as
// configuration project "imagegate", one node per job that sets none,
// and the Env's variables and secrets.
func (e *Env) Queue(changes ...Change) ([]byte, error) {
	var items []any
	for _, c := range changes {
		vars := map[string]any{}
		for k, v := range e.Vars() {
			vars[k] = v
		}
		for k, v := range c.Vars {
			vars[k] = v
		}
		item := map[string]any{
			"project": c.Project, "src": c.Src, "vars": vars, "jobs": c.Jobs,
			"message": fmt.Sprintf("Change %d of %s", c.Number, c.Project),
		}
		if c.Number > 0 {
			item["change"] = c.Number
		}
		if len(c.DependsOn) > 0 {
			item["depends-on"] = c.DependsOn
		}
		if c.Pipeline != "" {
			item["pipeline"] = c.Pipeline
		}
		items = append(items, item)
	}
	q := map[string]any{
		"tenant":  "lab",
		"config":  []any{map[string]any{"path": e.Dist, "project": "imagegate"}},
		"secrets": e.Secrets(),
		"nodeset": map[string]any{"nodes": []any{map[string]any{"name": "node", "label": "lab"}}},
		"changes": items,
	}
	return yaml.Marshal(q)
}

// UploadCredentials is the job entry attribute that gives the upload and
// promote jobs the project's registry credentials.
func UploadCredentials() map[string]any {
	return map[string]any{"secrets": []any{map[string]any{
		"name": "docker_credentials", "secret": "myorg-registry", "pass-to-parent": true}}}
}

// WriteBase writes the myorg/base project: a busybox rootfs with
// /etc/base.txt holding marker.
func WriteBase(dir, marker string) error {
	rootfs, err := BusyboxRootfs()
	if err != nil {
		return err
	}
	return writeFiles(dir, map[string][]byte{
		"rootfs.tar": rootfs,
		"base.txt":   []byte(marker + "\n"),
		"Dockerfile": []byte("FROM scratch\nADD rootfs.tar /\nCOPY base.txt /etc/base.txt\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n"),
	})
}

// WriteApp writes the myorg/app project: an image FROM myorg/base (or, with
// standalone, on its own busybox rootfs) whose command prints
// /etc/base.txt and /app.txt (holding marker), and the project's own jobs
// (.zuul.yaml): myorg-test-app, which pulls and runs myorg/app through the
// buildset registry with the use-buildset-registry role, and
// myorg-test-app-direct, which calls imagegate's modules from its own
// playbook.
func WriteApp(dir, marker string, standalone bool) error {
	files := map[string][]byte{
		"app.txt":                        []byte(marker + "\n"),
		".zuul.yaml":                     []byte(appZuul),
		"playbooks/test-pre.yaml":        []byte(appTestPre),
		"playbooks/test.yaml":            []byte(appTest),
		"playbooks/test-direct.yaml":     []byte(appTestDirect),
		"playbooks/run-image-tasks.yaml": []byte(appRunImage),
	}
	if standalone {
		rootfs, err := BusyboxRootfs()
		if err != nil {
			return err
		}
		files["rootfs.tar"] = rootfs
		files["base.txt"] = []byte("standalone base\n")
		files["Dockerfile"] = []byte("FROM scratch\nADD rootfs.tar /\nCOPY base.txt /etc/base.txt\nCOPY app.txt /app.txt\nENV PATH=/bin\nCMD [\"/bin/cat\", \"/etc/base.txt\", \"/app.txt\"]\n")
	} else {
		files["Dockerfile"] = []byte("FROM myorg/base\nCOPY app.txt /app.txt\nCMD [\"/bin/cat\", \"/etc/base.txt\", \"/app.txt\"]\n")
	}
	return writeFiles(dir, files)
}

const appZuul = `- job:
    name: myorg-test-app
    parent: opendev-buildset-registry-consumer
    description: |
      Pull myorg/app through the buildset registry of the job this one
      depends on, run it, and return what it printed and its digest.
    roles:
      - zuul: imagegate
    pre-run: playbooks/test-pre.yaml
    run: playbooks/test.yaml

- job:
    name: myorg-test-app-direct
    description: |
      The same test, calling imagegate's modules from its own playbook
      instead of the use-buildset-registry role.
    roles:
      - zuul: imagegate
    run: playbooks/test-direct.yaml
`

const appTestPre = `- hosts: all
  roles:
    - use-buildset-registry
`

const appTest = `- hosts: all
  tasks:
    - name: Pull, run and inspect myorg/app
      ansible.builtin.include_tasks: run-image-tasks.yaml
`

const appTestDirect = `- hosts: all
  roles:
    - imagegate-modules
  tasks:
    - name: Point the node's dockerd at the buildset registry
      use_buildset_registry:
        buildset_registry: "{{ buildset_registry }}"
        clients: [docker]
        docker_daemon_json: "{{ use_buildset_registry_docker_daemon_json }}"
        docker_host: "{{ use_buildset_registry_docker_host }}"
        docker_pidfile: "{{ use_buildset_registry_docker_pidfile }}"
      register: configured

    - name: Pull, run and inspect myorg/app
      ansible.builtin.include_tasks: run-image-tasks.yaml
`

const appRunImage = `- name: Remove any local copy, so the image comes through the buildset registry
  ansible.builtin.command: docker image rm -f myorg/app:latest
  environment: &docker
    DOCKER_HOST: "{{ lab_docker_host }}"
    DOCKER_CONFIG: "{{ lab_docker_config }}"
  changed_when: false

- name: Pull myorg/app (Docker Hub's name; dockerd's mirror is the buildset registry)
  ansible.builtin.command: docker pull myorg/app:latest
  environment: *docker
  register: lab_pull

- name: Run it
  ansible.builtin.command: docker run --rm --network none myorg/app:latest
  environment: *docker
  register: lab_run

- name: Read the digest it was pulled by
  ansible.builtin.command: docker image inspect --format "{{ '{{' }}json .RepoDigests{{ '}}' }}" myorg/app:latest
  environment: *docker
  register: lab_inspect

- name: Return what the image printed and its digest
  zuul_return:
    data:
      lab_test:
        job: "{{ zuul.job }}"
        output: "{{ lab_run.stdout }}"
        repo_digests: "{{ lab_inspect.stdout | from_json }}"
`

func writeFiles(dir string, files map[string][]byte) error {
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BusyboxPath is where Debian's busybox-static installs busybox.
const BusyboxPath = "/bin/busybox"

// BusyboxRootfs returns a tar holding Debian's static busybox as
// /bin/busybox with /bin/sh and common applets linked to it.
func BusyboxRootfs() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s (Debian package busybox-static): %w", BusyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(0, 0)
	for _, d := range []string{"bin/", "etc/", "tmp/", "root/", "proc/", "sys/", "dev/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mod}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: mod}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "cat", "echo", "ls", "env", "sleep", "true", "false"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mod}); err != nil {
			return nil, err
		}
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: mod}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(passwd); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
