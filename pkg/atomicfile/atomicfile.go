// Package atomicfile writes files so that a reader, or a crash, sees the
// old content or the new, never a part: the data goes to a temporary file
// in the same directory, created with the final mode (a secret is never
// readable by others, not even for a moment), synced, then renamed over
// the file.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically, with mode. The temporary file
// is removed when anything fails.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}
