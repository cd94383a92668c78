package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Tool returns the path of a tool: the value of envVar if set, else name
// looked up in PATH, else where tests/setup/deps.sh puts it. A missing tool
// is a setup problem: the error says to run `make deps`.
func Tool(envVar, name string) (string, error) {
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			return "", fmt.Errorf("%s=%s does not exist: run `make deps` (tests/setup/deps.sh)", envVar, p)
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if envVar != "" {
		if p := toolFromDeps(envVar); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (set %s or install it): run `make deps` (tests/setup/deps.sh)", name, envVar)
}

var depsOnce sync.Once
var depsPaths map[string]string

// toolFromDeps asks tests/setup/deps.sh where it puts a tool, so `go test`
// works without make once the tools are built.
func toolFromDeps(envVar string) string {
	depsOnce.Do(func() {
		depsPaths = map[string]string{}
		root := RepoRoot()
		if root == "" {
			return
		}
		out, err := exec.Command(filepath.Join(root, "tests/setup/deps.sh"), "--print").Output()
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				depsPaths[k] = v
			}
		}
	})
	p := depsPaths[envVar]
	if p == "" {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// RepoRoot returns the repository's top directory (where go.mod is), found
// from the working directory, or "" outside the repository.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
