// Package jobs holds static checks of imagegate's Zuul jobs, playbooks and
// roles: everything zuul.d references exists, every role is documented
// like a zuul-jobs role, every job variable is documented, and the house
// rules of zuul-jobs (.yaml, loop_var: zj_*) hold.
package jobs

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/runner"
)

// imagegateModules are the module names the imagegate-modules role links
// to its action plugin.
var imagegateModules = []string{
	"buildset_registry", "use_buildset_registry", "intermediate_registry_pull",
	"intermediate_registry_push", "docker_image_build", "docker_image_upload", "docker_image_promote",
	"buildkitd_service", "container_image_build", "container_image_upload",
	"container_image_promote", "registry_tag_remove", "container_image_mirror", "quay_repository",
}

// ownRoles are the roles of this tree that follow all of imagegate's rules;
// every role must still have README.rst, defaults and tasks.
var wantRoles = []string{
	"imagegate-modules", "run-buildset-registry", "use-buildset-registry",
	"pull-from-intermediate-registry", "push-to-intermediate-registry", "pause-buildset-registry",
	"build-docker-image", "upload-docker-image", "promote-docker-image", "ensure-buildkit", "ensure-dockerd",
	"build-container-image", "upload-container-image",
	"promote-container-image", "remove-registry-tag", "mirror-container-images", "ensure-quay-repo",
}

var wantJobs = []string{
	"build-docker-image", "upload-docker-image", "promote-docker-image",
	"opendev-buildset-registry", "opendev-buildset-registry-consumer",
	"opendev-build-docker-image-base", "opendev-build-docker-image",
	"opendev-upload-docker-image", "opendev-promote-docker-image",
	"build-container-image", "upload-container-image",
	"opendev-build-container-image", "opendev-upload-container-image",
	"promote-container-image", "opendev-promote-container-image", "mirror-container-images",
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

func loadLayout(t *testing.T, root string) *runner.Layout {
	t.Helper()
	l := runner.NewLayout()
	if err := l.LoadSource(&runner.Source{Project: "imagegate", Root: root}); err != nil {
		t.Fatal(err)
	}
	return l
}

func anySecret(ref runner.SecretRef, job *runner.JobDef) (map[string]any, error) {
	return map[string]any{"host": "ir.example.org", "port": 5000, "username": "u", "password": "p"}, nil
}

// TestJobsResolve freezes every job: parents, playbooks and secrets
// resolve, and the jobs of the seed document are all there, with the
// attributes upstream gives them.
func TestJobsResolve(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	l := loadLayout(t, root)
	for _, name := range wantJobs {
		if len(l.Jobs[name]) == 0 {
			t.Errorf("job %s is not defined in zuul.d", name)
		}
	}
	var names []string
	for name := range l.Jobs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		defs := l.Jobs[name]
		if defs[0].Description == "" {
			t.Errorf("job %s has no description", name)
		}
		abstract := false
		for _, d := range defs {
			abstract = abstract || d.Abstract
		}
		if abstract {
			// Freeze a child of it to check its playbooks.
			parent := name
			child := &runner.JobDef{Name: name + "-child", Source: defs[0].Source, Pos: "test", Parent: &parent,
				Run: []runner.PlaybookRef{{Name: "playbooks/docker-image/run.yaml"}}}
			l.Jobs[child.Name] = []*runner.JobDef{child}
			name = child.Name
		}
		// A job with no run playbook in its chain (as upstream's
		// opendev-buildset-registry-consumer) gets one from the project
		// pipeline that lists it.
		var extra []*runner.JobDef
		if !hasRun(l, name) {
			extra = append(extra, &runner.JobDef{Name: name, Source: defs[0].Source, Pos: "project",
				Run: []runner.PlaybookRef{{Name: "playbooks/docker-image/run.yaml"}}})
		}
		if _, err := l.Freeze(name, anySecret, extra...); err != nil {
			t.Errorf("freezing %s: %v", name, err)
		}
	}
	// opendev-buildset-registry-consumer runs in a project pipeline as
	// upstream's, with the playbooks given there.
	if defs := l.Jobs["opendev-buildset-registry-consumer"]; len(defs) == 0 || defs[0].Abstract {
		t.Error("opendev-buildset-registry-consumer must not be abstract: projects list it in their pipelines")
	}
	variant := &runner.JobDef{Name: "opendev-buildset-registry-consumer", Source: l.Jobs["opendev-buildset-registry-consumer"][0].Source, Pos: "project",
		PreRun: []runner.PlaybookRef{{Name: "playbooks/buildset-registry/run.yaml"}}, Run: []runner.PlaybookRef{{Name: "playbooks/docker-image/run.yaml"}}}
	consumer, err := l.Freeze("opendev-buildset-registry-consumer", anySecret, variant)
	if err != nil {
		t.Fatalf("opendev-buildset-registry-consumer with run from a project pipeline: %v", err)
	}
	if got := strings.Join(consumer.Phases(), "|"); got != "pre-run playbooks/buildset-registry/pull.yaml|pre-run playbooks/buildset-registry/run.yaml|run playbooks/docker-image/run.yaml" {
		t.Errorf("consumer phases: %s", got)
	}
	if _, ok := consumer.PreRun[0].Secrets["intermediate_registry"]; !ok || strings.Join(consumer.Requires, ",") != "docker-image" {
		t.Errorf("consumer: pull.yaml secrets %v, requires %v", consumer.PreRun[0].Secrets, consumer.Requires)
	}
	promote, err := l.Freeze("opendev-promote-docker-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	if len(promote.Nodeset.Nodes) != 0 {
		t.Errorf("opendev-promote-docker-image has nodes: %+v", promote.Nodeset)
	}
	build, err := l.Freeze("opendev-build-docker-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(build.Provides, ",") != "docker-image" || strings.Join(build.Requires, ",") != "docker-image" {
		t.Errorf("opendev-build-docker-image provides %v requires %v", build.Provides, build.Requires)
	}
	wantPhases := []string{
		"pre-run playbooks/buildset-registry/pre.yaml", "pre-run playbooks/buildset-registry/pull.yaml",
		"pre-run playbooks/docker-image/pre.yaml", "run playbooks/docker-image/run.yaml",
		"post-run playbooks/buildset-registry/post.yaml",
	}
	if got := build.Phases(); strings.Join(got, "|") != strings.Join(wantPhases, "|") {
		t.Errorf("opendev-build-docker-image phases:\n got %v\nwant %v", got, wantPhases)
	}
	upload, err := l.Freeze("opendev-upload-docker-image", anySecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := upload.Phases(); got[len(got)-2] != "post-run playbooks/docker-image/upload.yaml" {
		t.Errorf("the upload must run before the registry's post-run (push, stop): %v", got)
	}
	// The intermediate registry secret reaches the playbooks that talk to
	// the intermediate registry, and not the build.
	for _, pb := range append(append(build.PreRun, build.Run...), build.PostRun...) {
		_, has := pb.Secrets["intermediate_registry"]
		want := pb.Name != "playbooks/docker-image/pre.yaml" && pb.Name != "playbooks/docker-image/run.yaml"
		if has != want {
			t.Errorf("%s: intermediate_registry secret present=%v, want %v", pb.Name, has, want)
		}
	}
}

// hasRun reports whether a job or one of its parents sets run.
func hasRun(l *runner.Layout, name string) bool {
	for name != "" {
		defs := l.Jobs[name]
		if len(defs) == 0 {
			return false
		}
		for _, d := range defs {
			if len(d.Run) > 0 {
				return true
			}
		}
		name = ""
		if p := defs[0].Parent; p != nil {
			name = *p
		}
	}
	return false
}

// playbookRoles returns the roles a playbook or task file uses: play
// roles, include_role and import_role (with tasks_from), recursively
// through blocks.
func playbookRoles(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc []map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var roles []string
	for _, play := range doc {
		if rl, ok := play["roles"].([]any); ok {
			for _, r := range rl {
				switch x := r.(type) {
				case string:
					roles = append(roles, x)
				case map[string]any:
					n, _ := x["role"].(string)
					if n == "" {
						n, _ = x["name"].(string)
					}
					roles = append(roles, n)
				}
			}
		}
		for _, key := range []string{"pre_tasks", "tasks", "post_tasks", "handlers"} {
			roles = append(roles, taskRoles(play[key])...)
		}
		// A task file is a list of tasks, not plays.
		roles = append(roles, taskRoles([]any{play})...)
	}
	return roles
}

func taskRoles(v any) []string {
	tasks, _ := v.([]any)
	var out []string
	for _, tv := range tasks {
		task, _ := tv.(map[string]any)
		for _, k := range []string{"include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role"} {
			if ir, ok := task[k].(map[string]any); ok {
				n, _ := ir["name"].(string)
				out = append(out, n)
			}
		}
		for _, k := range []string{"block", "rescue", "always"} {
			out = append(out, taskRoles(task[k])...)
		}
	}
	return out
}

// TestPlaybooksAndRoles checks that every playbook uses existing roles,
// that every role is documented like a zuul-jobs role, and the house rules.
func TestPlaybooksAndRoles(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	roleDir := filepath.Join(root, "roles")
	for _, r := range wantRoles {
		for _, f := range []string{"README.rst", "defaults/main.yaml", "tasks/main.yaml"} {
			if _, err := os.Stat(filepath.Join(roleDir, r, f)); err != nil {
				t.Errorf("role %s has no %s", r, f)
			}
		}
	}
	var yamlFiles []string
	for _, top := range []string{"playbooks", "roles", "zuul.d"} {
		err := filepath.Walk(filepath.Join(root, top), func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if strings.Contains(rel, "/library/") {
				return nil // module documentation sidecars, named by Ansible's rules
			}
			if strings.HasSuffix(p, ".yml") {
				t.Errorf("%s: use .yaml, never .yml", rel)
			}
			if strings.HasSuffix(p, ".yaml") {
				yamlFiles = append(yamlFiles, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every playbook and role task file uses roles that exist.
	for _, f := range yamlFiles {
		rel, _ := filepath.Rel(root, f)
		if !strings.HasPrefix(rel, "playbooks/") && !strings.Contains(rel, "/tasks/") {
			continue
		}
		for _, r := range playbookRoles(t, f) {
			if _, err := os.Stat(filepath.Join(roleDir, r, "tasks")); err != nil {
				t.Errorf("%s uses role %q, which does not exist in roles/", rel, r)
			}
		}
		checkLoops(t, rel, f)
	}
	// Roles that call imagegate modules depend on imagegate-modules.
	entries, err := os.ReadDir(roleDir)
	if err != nil {
		t.Fatal(err)
	}
	moduleRE := regexp.MustCompile(`(?m)^\s*-?\s*(` + strings.Join(imagegateModules, "|") + `):\s*$`)
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "imagegate-modules" {
			continue
		}
		uses := false
		files, _ := filepath.Glob(filepath.Join(roleDir, e.Name(), "tasks", "*.yaml"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			uses = uses || moduleRE.Match(b) || strings.Contains(string(b), "name: imagegate-modules")
		}
		if !uses {
			continue
		}
		b, err := os.ReadFile(filepath.Join(roleDir, e.Name(), "meta", "main.yaml"))
		if err != nil {
			t.Errorf("role %s calls imagegate modules but has no meta/main.yaml depending on imagegate-modules", e.Name())
			continue
		}
		var meta struct {
			Dependencies []any `yaml:"dependencies"`
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Errorf("role %s: meta/main.yaml: %v", e.Name(), err)
		}
		found := false
		for _, d := range meta.Dependencies {
			switch x := d.(type) {
			case string:
				found = found || x == "imagegate-modules"
			case map[string]any:
				found = found || x["role"] == "imagegate-modules"
			}
		}
		if !found {
			t.Errorf("role %s calls imagegate modules but does not depend on imagegate-modules", e.Name())
		}
	}
	// The action plugin is linked for every module.
	for _, m := range imagegateModules {
		p := filepath.Join(roleDir, "imagegate-modules", "action_plugins", m+".py")
		if target, err := os.Readlink(p); err != nil || target != "imagegate_module.py" {
			t.Errorf("%s must be a symbolic link to imagegate_module.py (%q, %v)", p, target, err)
		}
	}
	for _, m := range moduleDirs(t, root) {
		found := false
		for _, k := range imagegateModules {
			found = found || k == m
		}
		if !found {
			t.Errorf("module %s has no action plugin link in roles/imagegate-modules/action_plugins", m)
		}
	}
}

func moduleDirs(t *testing.T, root string) []string {
	t.Helper()
	mains, _ := filepath.Glob(filepath.Join(root, "modules", "*", "main.go"))
	var out []string
	for _, m := range mains {
		out = append(out, filepath.Base(filepath.Dir(m)))
	}
	return out
}

// checkLoops enforces loop_var: zj_<name> on every loop (zuul-jobs' rule:
// a role's loop variable must not clash with the caller's).
func checkLoops(t *testing.T, rel, path string) {
	t.Helper()
	b, _ := os.ReadFile(path)
	var doc []map[string]any
	if yaml.Unmarshal(b, &doc) != nil {
		return
	}
	var walk func(v any)
	walk = func(v any) {
		tasks, _ := v.([]any)
		for _, tv := range tasks {
			task, _ := tv.(map[string]any)
			looped := false
			for k := range task {
				if k == "loop" || strings.HasPrefix(k, "with_") {
					looped = true
				}
			}
			if looped {
				lc, _ := task["loop_control"].(map[string]any)
				lv, _ := lc["loop_var"].(string)
				if !strings.HasPrefix(lv, "zj_") {
					t.Errorf("%s: task %q loops without loop_control.loop_var: zj_<name>", rel, task["name"])
				}
			}
			for _, k := range []string{"block", "rescue", "always"} {
				walk(task[k])
			}
		}
	}
	for _, play := range doc {
		for _, k := range []string{"pre_tasks", "tasks", "post_tasks"} {
			walk(play[k])
		}
	}
	walk(anySlice(doc))
}

func anySlice(doc []map[string]any) []any {
	out := make([]any, len(doc))
	for i, d := range doc {
		out[i] = d
	}
	return out
}

var rolevarRE = regexp.MustCompile(`(?m)^\s*\.\. zuul:rolevar:: (\S+)`)
var jobvarRE = regexp.MustCompile(`(?m)^\s*\.\. zuul:jobvar:: (\S+)`)

// TestVariablesDocumented checks that every role default is documented in
// the role's README.rst, and that every variable a job sets or receives as
// a secret is documented in the description of the job or of a parent,
// and that every documented job variable is a variable of a role the
// job's playbooks use.
func TestVariablesDocumented(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	roleVars := map[string]map[string]bool{} // role -> documented variables
	entries, _ := os.ReadDir(filepath.Join(root, "roles"))
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		readme, err := os.ReadFile(filepath.Join(root, "roles", e.Name(), "README.rst"))
		if err != nil {
			t.Errorf("role %s has no README.rst", e.Name())
			continue
		}
		doc := map[string]bool{}
		for _, m := range rolevarRE.FindAllStringSubmatch(string(readme), -1) {
			doc[m[1]] = true
		}
		roleVars[e.Name()] = doc
		if !strings.Contains(string(readme), "Role Variables") {
			t.Errorf("role %s: README.rst has no Role Variables section", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(root, "roles", e.Name(), "defaults", "main.yaml"))
		if err != nil {
			continue
		}
		var defaults map[string]any
		if err := yaml.Unmarshal(b, &defaults); err != nil {
			t.Errorf("role %s: defaults/main.yaml: %v", e.Name(), err)
		}
		for k := range defaults {
			if !doc[k] {
				t.Errorf("role %s: variable %s (defaults/main.yaml) is not documented in README.rst (.. zuul:rolevar:: %s)", e.Name(), k, k)
			}
		}
	}

	l := loadLayout(t, root)
	for name := range l.Jobs {
		documented := map[string]bool{}
		var used []string
		var chainSets []string
		job := name
		for job != "" {
			defs := l.Jobs[job]
			if len(defs) == 0 {
				break
			}
			for _, d := range defs {
				for _, m := range jobvarRE.FindAllStringSubmatch(d.Description, -1) {
					documented[m[1]] = true
				}
				for k := range d.Vars {
					chainSets = append(chainSets, k)
				}
				for _, s := range d.Secrets {
					chainSets = append(chainSets, s.Name)
				}
				for _, refs := range [][]runner.PlaybookRef{d.PreRun, d.Run, d.PostRun} {
					for _, r := range refs {
						used = append(used, playbookRoles(t, filepath.Join(root, r.Name))...)
					}
				}
			}
			job = ""
			if p := defs[0].Parent; p != nil {
				job = *p
			}
		}
		for _, v := range chainSets {
			if !documented[v] {
				t.Errorf("job %s: variable %s is set (vars or secrets) but not documented (.. zuul:jobvar:: %s)", name, v, v)
			}
		}
		known := map[string]bool{}
		for _, r := range used {
			for v := range roleVars[r] {
				known[v] = true
			}
			// Roles used by a role's own task files.
			files, _ := filepath.Glob(filepath.Join(root, "roles", r, "tasks", "*.yaml"))
			for _, f := range files {
				for _, rr := range playbookRoles(t, f) {
					for v := range roleVars[rr] {
						known[v] = true
					}
				}
			}
		}
		var undocumented []string
		for v := range documented {
			if !known[v] {
				undocumented = append(undocumented, v)
			}
		}
		sort.Strings(undocumented)
		for _, v := range undocumented {
			t.Errorf("job %s documents %s, which no role of its playbooks reads (a typo, or a stale description)", name, v)
		}
	}
}

// TestBuildkitPin: the BuildKit version is one pin: go.mod's (the client
// in docker_image_build), the release tree's buildkitd (deps.sh builds it)
// and ensure-buildkit's default.
func TestBuildkitPin(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	find := func(file, pattern string) string {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(pattern).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no match for %s", file, pattern)
		}
		return string(m[1])
	}
	gomod := find("go.mod", `(?m)^\s*github\.com/moby/buildkit (v\S+)`)
	deps := find("tests/setup/deps.sh", `(?m)^BUILDKIT_VERSION=(\S+)$`)
	role := find("roles/ensure-buildkit/defaults/main.yaml", `(?m)^ensure_buildkit_version: (\S+)$`)
	if gomod != deps || gomod != role {
		t.Errorf("BuildKit pins differ: go.mod %s, tests/setup/deps.sh %s, ensure_buildkit_version %s", gomod, deps, role)
	}
}
