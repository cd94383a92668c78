package jobs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// passThroughRE is a module argument a role passes through only when its
// variable is set: "{{ var | default(omit) }}".
var passThroughRE = regexp.MustCompile(`^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*default\(omit\)\s*\}\}$`)

// passThrough is one role variable handed to a module parameter.
type passThrough struct{ role, file, module, param string }

// rolePassThroughs finds, in every role's task files, the module arguments
// given as "{{ var | default(omit) }}", by variable.
func rolePassThroughs(t *testing.T, root string) map[string][]passThrough {
	t.Helper()
	out := map[string][]passThrough{}
	files, _ := filepath.Glob(filepath.Join(root, "roles", "*", "tasks", "*.yaml"))
	isModule := map[string]bool{}
	for _, m := range imagegateModules {
		isModule[m] = true
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tasks []any
		if err := yaml.Unmarshal(b, &tasks); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rel, _ := filepath.Rel(root, f)
		role := strings.Split(rel, string(filepath.Separator))[1]
		var walk func(v any)
		walk = func(v any) {
			list, _ := v.([]any)
			for _, tv := range list {
				task, _ := tv.(map[string]any)
				for k, args := range task {
					if !isModule[k] {
						continue
					}
					am, _ := args.(map[string]any)
					for param, val := range am {
						s, _ := val.(string)
						if m := passThroughRE.FindStringSubmatch(strings.TrimSpace(s)); m != nil {
							out[m[1]] = append(out[m[1]], passThrough{role: role, file: rel, module: k, param: param})
						}
					}
				}
				for _, k := range []string{"block", "rescue", "always"} {
					walk(task[k])
				}
			}
		}
		walk(tasks)
	}
	return out
}

// readmeDefaults returns the :default: of every role variable README.rst
// documents with one.
func readmeDefaults(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	cur := ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, ".. zuul:rolevar:: "):
			cur = strings.TrimPrefix(trimmed, ".. zuul:rolevar:: ")
		case cur != "" && strings.HasPrefix(trimmed, ":default:"):
			out[cur] = strings.TrimSpace(strings.TrimPrefix(trimmed, ":default:"))
		case cur != "" && strings.HasPrefix(trimmed, ":"):
		default:
			cur = ""
		}
	}
	return out
}

// moduleDefault is the documented default of a module parameter, rendered
// as a README writes it ("" when it has none).
func moduleDefault(t *testing.T, root, module, param string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "modules", module, module+".yml"))
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		Documentation struct {
			Options map[string]struct {
				Default any `yaml:"default"`
			} `yaml:"options"`
		} `yaml:"DOCUMENTATION"`
	}
	if err := yaml.Unmarshal(b, &sc); err != nil {
		t.Fatal(err)
	}
	o, ok := sc.Documentation.Options[param]
	if !ok {
		t.Errorf("module %s has no parameter %s", module, param)
		return "", false
	}
	switch d := o.Default.(type) {
	case nil:
		return "", false
	case []any:
		var s []string
		for _, e := range d {
			s = append(s, fmt.Sprint(e))
		}
		return "[" + strings.Join(s, ", ") + "]", true
	default:
		return fmt.Sprint(d), true
	}
}

// TestRoleDefaultsAreTheModules: a role passes each module parameter it
// exposes as "{{ var | default(omit) }}" and does not restate the module's
// default in defaults/main.yaml, so each default is stated once, in the
// module (Go and its documentation); where the role's README.rst states a
// default for such a variable, it is the module's.
func TestRoleDefaultsAreTheModules(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	pts := rolePassThroughs(t, root)
	if len(pts) < 30 {
		t.Fatalf("found %d role variables passed through to modules; the roles pass their variables with default(omit)", len(pts))
	}
	var vars []string
	for v := range pts {
		vars = append(vars, v)
	}
	sort.Strings(vars)
	for _, v := range vars {
		for _, pt := range pts[v] {
			b, err := os.ReadFile(filepath.Join(root, "roles", pt.role, "defaults", "main.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var defaults map[string]any
			if err := yaml.Unmarshal(b, &defaults); err != nil {
				t.Fatalf("role %s: defaults/main.yaml: %v", pt.role, err)
			}
			if _, ok := defaults[v]; ok {
				t.Errorf("role %s: defaults/main.yaml sets %s, which %s passes to %s.%s with default(omit): the module's default applies; drop it from defaults/main.yaml",
					pt.role, v, pt.file, pt.module, pt.param)
			}
			readme, ok := readmeDefaults(t, filepath.Join(root, "roles", pt.role, "README.rst"))[v]
			if !ok || strings.Contains(readme, "{{") {
				continue
			}
			want, has := moduleDefault(t, root, pt.module, pt.param)
			if !has {
				t.Errorf("role %s: README.rst states %s's default %q, but %s.%s has none", pt.role, v, readme, pt.module, pt.param)
			} else if strings.Trim(readme, "'\"") != want {
				t.Errorf("role %s: README.rst states %s's default %q, %s.%s's is %q", pt.role, v, readme, pt.module, pt.param, want)
			}
		}
	}
}
