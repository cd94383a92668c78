package buildkitd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/imagegate/imagegate/pkg/atomicfile"
)

// record is what a daemon was started with, kept in Spec.recordFile.
type record struct {
	Version int       `json:"version"`
	Manager Manager   `json:"manager"`
	Unit    string    `json:"unit,omitempty"`
	PID     int       `json:"pid"`
	Argv    []string  `json:"argv"`
	Started time.Time `json:"started"`
	// Files maps the binary, buildkitd.toml and every file it names to
	// its sha256.
	Files map[string]string `json:"files"`
}

const recordVersion = 1

// sameAs reports whether r was started as want would start it, and if not
// why not.
func (r *record) sameAs(want *record) (bool, string) {
	switch {
	case r.Manager != want.Manager:
		return false, fmt.Sprintf("it runs under %s, %s was asked for", r.Manager, want.Manager)
	case !slices.Equal(r.Argv, want.Argv):
		return false, "its command line changed"
	}
	for _, p := range slices.Sorted(maps.Keys(want.Files)) {
		if r.Files[p] != want.Files[p] {
			if r.Files[p] == "" {
				return false, p + " is new to its configuration"
			}
			return false, p + " changed since it started"
		}
	}
	for p := range r.Files {
		if _, ok := want.Files[p]; !ok {
			return false, p + " is no longer part of its configuration"
		}
	}
	return true, ""
}

// describe is the record as diff text.
func (r *record) describe(running bool) string {
	if r == nil {
		return "state: stopped\n"
	}
	var b strings.Builder
	state := "stopped"
	if running {
		state = "started"
	}
	fmt.Fprintf(&b, "state: %s\nmanager: %s\ncommand: %s\n", state, r.Manager, strings.Join(r.Argv, " "))
	for _, p := range slices.Sorted(maps.Keys(r.Files)) {
		fmt.Fprintf(&b, "file %s: sha256:%s\n", p, r.Files[p])
	}
	return b.String()
}

func readRecord(path string) (*record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Version != recordVersion {
		// An unreadable record describes no daemon this version can
		// trust: as if there were none (the pid file still finds it).
		return nil, nil
	}
	return &r, nil
}

func writeRecord(path string, r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// desired returns the record of a daemon started for s now: the command
// line, and the sha256 of the binary, the configuration and every file the
// configuration names.
func desired(s Spec) (*record, error) {
	r := &record{Version: recordVersion, Manager: s.Manager, Argv: s.argv(), Files: map[string]string{}}
	if s.Manager == Systemd {
		r.Unit = s.Unit
	}
	sum, err := fileSum(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("buildkitd: %w", err)
	}
	r.Files[s.Binary] = sum
	cfg, err := os.ReadFile(s.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	h := sha256.Sum256(cfg)
	r.Files[s.Config] = hex.EncodeToString(h[:])
	refs, err := referencedFiles(cfg)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w; fix the file", s.Config, err)
	}
	for _, ref := range refs {
		p := ref.path
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(s.Config), p)
		}
		sum, err := fileSum(p)
		if err != nil {
			return nil, fmt.Errorf("config %s names %s (%s), which buildkitd could not read either: %w", s.Config, ref.path, ref.where, err)
		}
		r.Files[p] = sum
	}
	return r, nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileRef is a file a configuration names, and where.
type fileRef struct {
	path, where string
}

// referencedFiles lists the files buildkitd.toml names that buildkitd
// reads: per registry host, ca (a list) and keypair (key and cert of each
// entry); and grpc.tls's cert, key and ca.
func referencedFiles(cfg []byte) ([]fileRef, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(cfg, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("not valid TOML at line %d, column %d: %v", row, col, de)
		}
		return nil, fmt.Errorf("not valid TOML: %v", err)
	}
	var refs []fileRef
	add := func(v any, where string) error {
		switch x := v.(type) {
		case nil:
		case string:
			if x != "" {
				refs = append(refs, fileRef{x, where})
			}
		default:
			return fmt.Errorf("%s must be a string", where)
		}
		return nil
	}
	if regs, ok := doc["registry"].(map[string]any); ok {
		for _, host := range slices.Sorted(maps.Keys(regs)) {
			sec, ok := regs[host].(map[string]any)
			if !ok {
				continue
			}
			if cas, ok := sec["ca"].([]any); ok {
				for i, ca := range cas {
					if err := add(ca, fmt.Sprintf("registry.%q.ca[%d]", host, i)); err != nil {
						return nil, err
					}
				}
			}
			if kps, ok := sec["keypair"].([]any); ok {
				for i, kp := range kps {
					m, _ := kp.(map[string]any)
					for _, k := range []string{"key", "cert"} {
						if err := add(m[k], fmt.Sprintf("registry.%q.keypair[%d].%s", host, i, k)); err != nil {
							return nil, err
						}
					}
				}
			}
		}
	}
	if grpc, ok := doc["grpc"].(map[string]any); ok {
		if tls, ok := grpc["tls"].(map[string]any); ok {
			for _, k := range []string{"cert", "key", "ca"} {
				if err := add(tls[k], "grpc.tls."+k); err != nil {
					return nil, err
				}
			}
		}
	}
	return refs, nil
}

// readPidfile returns the pid in path, or 0.
func readPidfile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}
