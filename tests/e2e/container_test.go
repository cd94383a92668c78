package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/runner"
)

// containerProject is a project using the container family as a
// zuul-jobs user writes it: its .zuul.yaml (jobs on OpenDev's
// opendev-*-container-image jobs, with upstream's variables only) and an
// image of repository quay.io/myorg/<name>, FROM base (a busybox rootfs of
// its own when empty) with /app.txt holding marker. Its podman test job
// pulls the image through the buildset registry with podman and runs it.
type containerProject struct {
	name, marker, base string
	// method is promote_container_image_method ("" leaves upstream's
	// default, tag).
	method string
	// promoteVars are more variables of the promote job.
	promoteVars map[string]any
}

func (p containerProject) repository() string { return "quay.io/myorg/" + p.name }

func (p containerProject) write(dir string) error {
	files := map[string][]byte{
		"app.txt":                    []byte(p.marker + "\n"),
		".zuul.yaml":                 []byte(p.zuulYAML()),
		"playbooks/test-podman.yaml": []byte(podmanTest),
	}
	if p.base == "" {
		rootfs, err := lab.BusyboxRootfs()
		if err != nil {
			return err
		}
		files["rootfs.tar"] = rootfs
		files["base.txt"] = []byte("standalone base\n")
		files["Containerfile"] = []byte("FROM scratch\nADD rootfs.tar /\nCOPY base.txt /etc/base.txt\nCOPY app.txt /app.txt\nENV PATH=/bin\nCMD [\"/bin/cat\", \"/etc/base.txt\", \"/app.txt\"]\n")
	} else {
		files["Containerfile"] = []byte("FROM " + p.base + "\nCOPY app.txt /app.txt\nCMD [\"/bin/cat\", \"/etc/base.txt\", \"/app.txt\"]\n")
	}
	for f, content := range files {
		path := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// zuulYAML is the project's configuration, as a zuul-jobs user writes it
// for quay.io: one image list shared by the jobs (a YAML anchor), the
// credentials a secret passed to the parent.
func (p containerProject) zuulYAML() string {
	method := ""
	if p.method != "" {
		method = "\n      promote_container_image_method: " + p.method
	}
	promote := ""
	if len(p.promoteVars) > 0 {
		b, err := yaml.Marshal(p.promoteVars)
		if err != nil {
			panic(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			promote += "\n      " + l
		}
	}
	return fmt.Sprintf(`- job:
    name: myorg-%[1]s-build
    parent: opendev-build-container-image
    vars: &build_vars
      container_command: podman
      container_images: &images
        - context: .
          registry: quay.io
          repository: %[2]s
          tags: [latest, v1]

- job:
    name: myorg-%[1]s-upload
    parent: opendev-upload-container-image
    secrets: &credentials
      - name: container_registry_credentials
        secret: myorg-quay
        pass-to-parent: true
    vars:
      container_command: podman
      container_images: *images
      upload_container_image_promote: true%[3]s

- job:
    name: myorg-%[1]s-promote
    parent: opendev-promote-container-image
    secrets: *credentials
    vars:
      container_images: *images%[3]s%[4]s

- job:
    name: myorg-%[1]s-test
    description: Pull the image through the buildset registry with podman and run it.
    roles:
      - zuul: imagegate
    vars:
      lab_image: %[2]s:latest
    run: playbooks/test-podman.yaml
`, p.name, p.repository(), method, promote)
}

// podmanTest is the test job: podman, pointed at the buildset registry as a
// mirror of quay.io (use_buildset_registry, clients: containers), pulls the
// image (the copy the build loaded into podman's store removed first, and
// quay.io has no such tag yet), runs it, and returns what it printed and
// the digest podman pulled.
const podmanTest = `- hosts: all
  roles:
    - imagegate-modules
  tasks:
    - name: Point podman at the buildset registry
      use_buildset_registry:
        buildset_registry: "{{ buildset_registry }}"
        clients: [containers]

    - name: Remove the build's copy, so the image comes through the buildset registry
      ansible.builtin.command: podman rmi -f {{ lab_image }}
      changed_when: false
      failed_when: false

    - name: Pull it (quay.io's name; the buildset registry is its mirror)
      ansible.builtin.command: podman pull {{ lab_image }}

    - name: Run it
      ansible.builtin.command: >-
        podman run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {{ lab_image }}
      register: lab_run

    - name: Read the digest it was pulled by
      ansible.builtin.command: podman image inspect --format "{{ '{{' }}.Digest{{ '}}' }}" {{ lab_image }}
      register: lab_inspect

    - name: Return what the image printed and its digest
      zuul_return:
        data:
          lab_test:
            job: "{{ zuul.job }}"
            output: "{{ lab_run.stdout }}"
            repo_digests: ["{{ lab_image }}@{{ lab_inspect.stdout }}"]
`

// upstreamVars are the variables of zuul-jobs' container roles (and
// OpenDev's jobs) a project sets; upstreamImageKeys and
// upstreamCredentialKeys the keys of container_images entries and of
// container_registry_credentials entries upstream documents.
var (
	upstreamVars = map[string]bool{"container_images": true, "container_command": true, "container_filename": true,
		"container_build_extra_env": true, "upload_container_image_promote": true, "promote_container_image_method": true,
		"promote_container_image_api": true, "promote_container_image_pipeline": true, "promote_container_image_job": true,
		"promote_container_image_query": true, "zuul_work_dir": true}
	upstreamImageKeys = map[string]bool{"context": true, "registry": true, "repository": true, "path": true, "container_filename": true,
		"build_args": true, "target": true, "tags": true, "siblings": true, "arch": true, "labels": true}
	upstreamCredentialKeys = map[string]bool{"username": true, "password": true, "repository": true, "api_token": true, "type": true}
)

// checkUpstreamOnly fails t if the project's build, upload and promote
// jobs set anything but upstream's variables, or the credentials secret
// anything but upstream's keys.
func checkUpstreamOnly(t *testing.T, p containerProject, secret map[string]any) {
	t.Helper()
	var stanzas []map[string]map[string]any
	if err := yaml.Unmarshal([]byte(p.zuulYAML()), &stanzas); err != nil {
		t.Fatal(err)
	}
	for _, s := range stanzas {
		job := s["job"]
		if strings.HasSuffix(job["name"].(string), "-test") {
			continue // the project's own test job
		}
		vars, _ := job["vars"].(map[string]any)
		for k, v := range vars {
			if !upstreamVars[k] {
				t.Errorf("job %s sets %s, not a variable of upstream's container roles", job["name"], k)
			}
			if k == "container_images" {
				for _, im := range v.([]any) {
					for ik := range im.(map[string]any) {
						if !upstreamImageKeys[ik] {
							t.Errorf("job %s: container_images entry key %s is not upstream's", job["name"], ik)
						}
					}
				}
			}
		}
	}
	for reg, e := range secret {
		for k := range e.(map[string]any) {
			if !upstreamCredentialKeys[k] {
				t.Errorf("container_registry_credentials[%s].%s is not upstream's", reg, k)
			}
		}
	}
}

// podmanRan checks a test job's result: it succeeded, printed want, and
// ran the image of digest.
func podmanRan(t *testing.T, ir *registrytest.Registry, b *runner.BuildReport, digest string, want ...string) {
	t.Helper()
	if b.Result != runner.Success {
		t.Errorf("%s: %s %s", b.Job, b.Result, b.Message)
		return
	}
	output, digests := labTest(t, b)
	for _, w := range want {
		if !strings.Contains(output, w) {
			t.Errorf("%s: the image printed %q, want %q", b.Job, output, w)
		}
	}
	if len(digests) != 1 {
		t.Errorf("%s ran %v, want the image built (%s)", b.Job, digests, digest)
		return
	}
	// podman names a pulled index by the platform image it chose: the
	// index built (with its attestation manifests) or one of its images.
	ran := digests[0]
	at := strings.LastIndex(ran, "@")
	named := ran[:max(at, 0)]
	if i := strings.LastIndex(named, ":"); i > strings.LastIndex(named, "/") {
		named = named[:i]
	}
	if !slices.Contains(platformDigests(t, ir, named, digest), ran[at+1:]) {
		t.Errorf("%s ran %v, want the image built (%s) or one of its platform images", b.Job, digests, digest)
	}
}

// platformDigests is digest and, when it is an index in repo of r, the
// digests of its platform images (not its attestation manifests).
func platformDigests(t *testing.T, r *registrytest.Registry, repo, digest string) []string {
	t.Helper()
	out := []string{digest}
	n, err := name.ParseReference(r.Host + "/" + repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(n, remoteOpts(r)...)
	if err != nil {
		return out // not an index (or gone): the digest alone
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		if m.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			out = append(out, m.Digest.String())
		}
	}
	return out
}

// TestContainerFamily runs the container family end to end on one machine
// (one runner, one set of registries and daemons for every sub-case):
// quay.io is quay emulated in front of imagegate's registry, the projects'
// configurations are written for upstream's container roles, the images
// land in podman's store and the test jobs run them with podman.
func TestContainerFamily(t *testing.T) {
	w := newWorld(t, withSandboxed("/etc/containers"))
	usePodman(t)
	quay := startQuayIO(w)
	credentials := map[string]any{"quay.io": map[string]any{
		"username": quay.backend.Username, "password": quay.backend.Password,
		"api_token": quay.token, "repository": "^quay.io/myorg/"}}
	w.env.ExtraSecrets = map[string]any{"myorg-quay": credentials}
	api, err := w.runner.Builds().ServeBuildsAPI("127.0.0.1:0", "lab", "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	dep := func(job, on string) map[string]any {
		return map[string]any{job: map[string]any{"dependencies": []any{on}}}
	}
	secrets := []string{quay.backend.Password, quay.token, w.ir.Password, w.target.Password}

	// (c) and the tag method: a configuration using upstream's variables
	// only, through check, gate and promote.
	t.Run("tag", func(t *testing.T) {
		p := containerProject{name: "app-tag", marker: "quay.io/myorg/app-tag of change 701: " + nonce(t)}
		checkUpstreamOnly(t, p, credentials)
		src := w.project(p.name, p.write)
		repo := "myorg/" + p.name
		change := func(pipeline string, jobs ...any) lab.Change {
			return lab.Change{Project: "myorg/" + p.name, Number: 701, Src: src, Pipeline: pipeline, Jobs: jobs}
		}
		queue, err := w.env.Queue(change("check", "myorg-app-tag-build", dep("myorg-app-tag-test", "myorg-app-tag-build")))
		if err != nil {
			t.Fatal(err)
		}
		rep := w.run(queue)
		bld := build(t, rep, 701, "check", "myorg-app-tag-build")
		if bld.Result != runner.Success {
			t.Fatalf("check build: %s %s", bld.Result, bld.Message)
		}
		arts := bld.ImageArtifacts()
		if len(arts) != 2 {
			t.Fatalf("check build artifacts: %v", arts)
		}
		checked := digestOf(t, w.ir, artifactTag(t, arts[0], w.ir, bld, p.repository(), "latest"))
		podmanRan(t, w.ir, build(t, rep, 701, "check", "myorg-app-tag-test"), checked, p.marker, "standalone base")
		if tags := quay.tags(t, repo); len(tags) != 0 {
			t.Errorf("quay.io/%s has tags %v after the check pipeline", repo, tags)
		}

		queue, err = w.env.Queue(change("gate", "myorg-app-tag-upload", dep("myorg-app-tag-test", "myorg-app-tag-upload")))
		if err != nil {
			t.Fatal(err)
		}
		rep = w.run(queue)
		up := build(t, rep, 701, "gate", "myorg-app-tag-upload")
		if up.Result != runner.Success {
			t.Fatalf("gate upload: %s %s", up.Result, up.Message)
		}
		gated := map[string]string{}
		for i, tag := range []string{"latest", "v1"} {
			gated[tag] = digestOf(t, w.ir, artifactTag(t, up.ImageArtifacts()[i], w.ir, up, p.repository(), tag))
			if staged := digestOf(t, quay.backend, repo+":change_701_"+tag); staged != gated[tag] {
				t.Errorf("quay.io/%s:change_701_%s is %q, the gate built %s", repo, tag, staged, gated[tag])
			}
		}
		podmanRan(t, w.ir, build(t, rep, 701, "gate", "myorg-app-tag-test"), gated["latest"], p.marker)
		if got := quay.tags(t, repo); strings.Join(got, ",") != "change_701_latest,change_701_v1" {
			t.Errorf("quay.io/%s has tags %v after the gate, want the change tags only", repo, got)
		}

		queue, err = w.env.Queue(change("promote", "myorg-app-tag-promote"))
		if err != nil {
			t.Fatal(err)
		}
		rep = w.run(queue)
		pr := build(t, rep, 701, "promote", "myorg-app-tag-promote")
		if pr.Result != runner.Success {
			t.Fatalf("promote: %s %s", pr.Result, pr.Message)
		}
		for tag, d := range gated {
			if got := digestOf(t, quay.backend, repo+":"+tag); got != d {
				t.Errorf("quay.io/%s:%s is %q after the promote, want the gate's %s", repo, tag, got, d)
			}
		}
		if got := quay.tags(t, repo); strings.Join(got, ",") != "latest,v1" {
			t.Errorf("quay.io/%s has tags %v after the promote, want latest and v1 only (change tags removed)", repo, got)
		}
		deletes := 0
		for _, c := range quay.q.Calls() {
			if strings.HasPrefix(c, "DELETE /api/v1/repository/"+repo+"/tag/change_701_") {
				deletes++
			}
		}
		if deletes != 2 {
			t.Errorf("quay's API got %d change tag deletes, want 2: %v", deletes, quay.q.Calls())
		}
	})

	// The intermediate-registry method: nothing staged in quay.io; the
	// promote finds the gate build through the runner's builds API and
	// copies its images from the intermediate registry.
	t.Run("intermediate-registry", func(t *testing.T) {
		p := containerProject{name: "app-ir", marker: "quay.io/myorg/app-ir of change 702: " + nonce(t),
			method: "intermediate-registry",
			promoteVars: map[string]any{
				"promote_container_image_api":      api.URL,
				"promote_container_image_pipeline": "gate",
				"promote_container_image_job":      "myorg-app-ir-upload",
			}}
		src := w.project(p.name, p.write)
		repo := "myorg/" + p.name
		// The promote reads the intermediate registry with an entry of its
		// own; the node trusts the registry's and the API's CAs.
		irCreds := map[string]any{"quay.io": credentials["quay.io"],
			w.ir.Host: map[string]any{"username": w.ir.Username, "password": w.ir.Password}}
		w.env.ExtraSecrets = map[string]any{"myorg-quay": irCreds}
		defer func() { w.env.ExtraSecrets = map[string]any{"myorg-quay": credentials} }()
		w.trust(w.ir.Host, w.ir.CAPEM)
		vars := map[string]any{"promote_container_image_api_cert": string(api.CACert)}
		change := func(pipeline string, jobs ...any) lab.Change {
			return lab.Change{Project: "myorg/" + p.name, Number: 702, Src: src, Pipeline: pipeline, Jobs: jobs, Vars: vars}
		}
		queue, err := w.env.Queue(change("gate", "myorg-app-ir-upload", dep("myorg-app-ir-test", "myorg-app-ir-upload")))
		if err != nil {
			t.Fatal(err)
		}
		rep := w.run(queue)
		up := build(t, rep, 702, "gate", "myorg-app-ir-upload")
		if up.Result != runner.Success {
			t.Fatalf("gate upload: %s %s", up.Result, up.Message)
		}
		gated := map[string]string{}
		for i, tag := range []string{"latest", "v1"} {
			gated[tag] = digestOf(t, w.ir, artifactTag(t, up.ImageArtifacts()[i], w.ir, up, p.repository(), tag))
		}
		podmanRan(t, w.ir, build(t, rep, 702, "gate", "myorg-app-ir-test"), gated["latest"], p.marker)
		if got := quay.tags(t, repo); len(got) != 0 {
			t.Errorf("quay.io/%s has tags %v after the gate; the intermediate-registry method uploads nothing", repo, got)
		}

		queue, err = w.env.Queue(change("promote", "myorg-app-ir-promote"))
		if err != nil {
			t.Fatal(err)
		}
		rep = w.run(queue)
		pr := build(t, rep, 702, "promote", "myorg-app-ir-promote")
		if pr.Result != runner.Success {
			t.Fatalf("promote: %s %s", pr.Result, pr.Message)
		}
		for tag, d := range gated {
			if got := digestOf(t, quay.backend, repo+":"+tag); got != d {
				t.Errorf("quay.io/%s:%s is %q after the promote, want the gate's %s", repo, tag, got, d)
			}
		}
		if got := quay.tags(t, repo); strings.Join(got, ",") != "latest,v1" {
			t.Errorf("quay.io/%s has tags %v after the promote, want latest and v1 only", repo, got)
		}
		for _, c := range quay.q.Calls() {
			if strings.Contains(c, "/repository/"+repo+"/") && strings.Contains(c, "change_") {
				t.Errorf("a change tag reached quay's API: %s", c)
			}
		}
	})

	// Cross-change speculation with container_images: change 704 builds
	// quay.io/myorg/app-on-base FROM quay.io/myorg/base, which change 703
	// (ahead of it) changes; 704's build uses 703's image from the
	// intermediate registry, and its test job runs the result.
	t.Run("speculation", func(t *testing.T) {
		baseMarker := "quay.io/myorg/base as changed by change 703: " + nonce(t)
		base := containerProject{name: "base", marker: baseMarker}
		app := containerProject{name: "app-on-base", marker: "quay.io/myorg/app-on-base of change 704: " + nonce(t), base: "quay.io/myorg/base"}
		baseSrc := w.project(base.name, func(dir string) error {
			if err := base.write(dir); err != nil {
				return err
			}
			// The base image carries change 703's file as /etc/base.txt.
			return os.WriteFile(filepath.Join(dir, "base.txt"), []byte(baseMarker+"\n"), 0o644)
		})
		appSrc := w.project(app.name, app.write)
		queue, err := w.env.Queue(
			lab.Change{Project: "myorg/base", Number: 703, Src: baseSrc, Jobs: []any{"myorg-base-build"}},
			lab.Change{Project: "myorg/app-on-base", Number: 704, Src: appSrc, DependsOn: []int{703},
				Jobs: []any{"myorg-app-on-base-build", dep("myorg-app-on-base-test", "myorg-app-on-base-build")}},
		)
		if err != nil {
			t.Fatal(err)
		}
		rep := w.run(queue)
		buildA := build(t, rep, 703, "", "myorg-base-build")
		buildB := build(t, rep, 704, "", "myorg-app-on-base-build")
		if buildA.Result != runner.Success || buildB.Result != runner.Success {
			t.Fatalf("builds: %s %s; %s %s", buildA.Result, buildA.Message, buildB.Result, buildB.Message)
		}
		baseTag := artifactTag(t, buildA.ImageArtifacts()[0], w.ir, buildA, base.repository(), "latest")
		appTag := artifactTag(t, buildB.ImageArtifacts()[0], w.ir, buildB, app.repository(), "latest")
		baseLayers, appLayers := layers(t, w.ir, baseTag), layers(t, w.ir, appTag)
		if len(appLayers) <= len(baseLayers) {
			t.Fatalf("%s has %d layers, change 703's base %d", app.repository(), len(appLayers), len(baseLayers))
		}
		for i := range baseLayers {
			if appLayers[i] != baseLayers[i] {
				t.Errorf("layer %d of change 704's image is %s, change 703's base has %s: not built on 703's image", i, appLayers[i], baseLayers[i])
			}
		}
		podmanRan(t, w.ir, build(t, rep, 704, "", "myorg-app-on-base-test"), digestOf(t, w.ir, appTag), baseMarker, app.marker)
	})

	w.checkNoSecrets(secrets...)
}
