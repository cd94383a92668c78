package runner

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The runner's Ansible plugins (zuul_return, the imagegate_node
// connection), embedded and written to the work directory.

//go:embed plugins
var pluginFS embed.FS

// installPlugins writes the runner's Ansible plugins (zuul_return, the
// imagegate_node connection) under dir.
func installPlugins(dir string) error {
	return fs.WalkDir(pluginFS, "plugins", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, strings.TrimPrefix(p, "plugins"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := pluginFS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
