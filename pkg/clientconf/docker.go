package clientconf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// docker plans the CA in the docker certs directory and the mirror in
// daemon.json.
func (p *plan) docker(paths Paths, location string, ca []byte) error {
	if _, err := p.put(string(Docker), caFile(paths.DockerCertsDir, location), 0o644, ca); err != nil {
		return err
	}
	mirror := "https://" + location + "/"
	changed, err := p.edit(string(Docker), paths.DockerDaemonJSON, 0o644, func(before []byte, _ bool) ([]byte, error) {
		after, mirrors, err := editDaemonJSON(before, mirror)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; fix or remove the file (it was left as it is)", paths.DockerDaemonJSON, err)
		}
		p.dockerMirrors = mirrors
		return after, nil
	})
	p.dockerChanged = changed
	return err
}

// member is one top-level key of a JSON object, with its raw value.
type member struct {
	key string
	val json.RawMessage
}

// parseObject reads a JSON object keeping its keys in file order, so an
// edit does not reorder a hand-written daemon.json. An empty file is an
// empty object.
func parseObject(b []byte) ([]member, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not valid JSON: %v", err)
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("not valid JSON at key %q: %v", key, err)
		}
		if seen[key] {
			return nil, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		out = append(out, member{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not valid JSON: data after the object")
	}
	return out, nil
}

// formatObject writes members as an indented JSON object.
func formatObject(ms []member) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{")
	for i, m := range ms {
		if i > 0 {
			buf.WriteString(",")
		}
		k, _ := json.Marshal(m.key)
		buf.WriteString("\n  ")
		buf.Write(k)
		buf.WriteString(": ")
		if err := json.Indent(&buf, m.val, "  ", "  "); err != nil {
			return nil, err
		}
	}
	if len(ms) > 0 {
		buf.WriteString("\n")
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// editDaemonJSON puts mirror at the front of registry-mirrors, keeping the
// mirrors already configured after it (upstream replaced them, dropping
// site mirrors) and every other key as it is. It returns before unchanged
// when mirror already comes first, and the resulting mirror list.
func editDaemonJSON(before []byte, mirror string) ([]byte, []string, error) {
	ms, err := parseObject(before)
	if err != nil {
		return nil, nil, err
	}
	idx := -1
	var mirrors []string
	for i, m := range ms {
		if m.key == "registry-mirrors" {
			idx = i
			if err := json.Unmarshal(m.val, &mirrors); err != nil {
				return nil, nil, errors.New(`"registry-mirrors" is not a list of URLs`)
			}
		}
	}
	want := []string{mirror}
	for _, m := range mirrors {
		if normalizeMirror(m) != normalizeMirror(mirror) {
			want = append(want, m)
		}
	}
	if idx >= 0 && slices.Equal(mirrors, want) {
		return before, want, nil
	}
	val, _ := json.Marshal(want)
	if idx >= 0 {
		ms[idx].val = val
	} else {
		ms = append(ms, member{"registry-mirrors", val})
	}
	after, err := formatObject(ms)
	return after, want, err
}

// normalizeMirror is a mirror URL as dockerd reports it: with one trailing
// slash.
func normalizeMirror(m string) string { return strings.TrimSuffix(m, "/") + "/" }

// dockerAPI talks to dockerd's API on a unix socket.
type dockerAPI struct {
	client *http.Client
}

func newDockerAPI(host string) *dockerAPI {
	sock := strings.TrimPrefix(host, "unix://")
	return &dockerAPI{client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// mirrors returns the registry mirrors the running daemon uses (GET /info,
// RegistryConfig.Mirrors).
func (a *dockerAPI) mirrors(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET /info: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var info struct {
		RegistryConfig struct {
			Mirrors []string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("GET /info: %w", err)
	}
	return info.RegistryConfig.Mirrors, nil
}

func sameMirrors(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if normalizeMirror(a[i]) != normalizeMirror(b[i]) {
			return false
		}
	}
	return true
}

// reloadDocker makes a running dockerd use the mirrors of daemon.json. It
// compares the daemon's live mirrors with want and, when they differ, sends
// SIGHUP (what `systemctl reload docker` does): registry-mirrors is one of
// the settings dockerd reloads, so no restart is needed and running
// containers are not touched. It then waits until the daemon reports want,
// since a reload that dockerd rejects (a daemon.json it cannot accept) is
// only visible in its log. A daemon that is not running is left alone: it
// reads daemon.json when it starts.
func reloadDocker(ctx context.Context, s *apply, want []string, fileChanged bool, warnings *[]string) (bool, error) {
	api := newDockerAPI(s.Paths.DockerHost)
	live, err := api.mirrors(ctx)
	if err != nil {
		if isNotRunning(err) {
			s.o.log.Info("dockerd is not running; it reads daemon.json when it starts", "docker_host", s.Paths.DockerHost)
			// A dockerd installed later reads the file; only an installed
			// one that runs elsewhere can miss it.
			if _, lerr := exec.LookPath("dockerd"); fileChanged && lerr == nil {
				*warnings = append(*warnings, fmt.Sprintf("%s changed, but no dockerd answers on %s: a running dockerd elsewhere needs a reload (SIGHUP) to use it (set docker_host and docker_pidfile to its socket and pid file)", s.Paths.DockerDaemonJSON, s.Paths.DockerHost))
			}
			return false, nil
		}
		return false, fmt.Errorf("asking dockerd at %s for its registry mirrors: %w", s.Paths.DockerHost, err)
	}
	if sameMirrors(live, want) {
		return false, nil
	}
	if s.o.check {
		return true, nil
	}
	pid, err := readPidfile(s.Paths.DockerPidfile)
	if err != nil {
		return false, fmt.Errorf("reloading dockerd (running with registry mirrors %q, daemon.json has %q): %w; set docker_pidfile to the daemon's pid file, or docker_reload: false and restart docker yourself",
			live, want, err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return false, fmt.Errorf("reloading dockerd: sending SIGHUP to pid %d (from %s): %w", pid, s.Paths.DockerPidfile, err)
	}
	s.o.log.Info("sent SIGHUP to dockerd", "pid", pid)
	deadline := time.Now().Add(s.o.reloadTimeout)
	for {
		live, err = api.mirrors(ctx)
		if err == nil && sameMirrors(live, want) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("reloading dockerd (pid %d): after %s it still reports registry mirrors %q (last error: %v), not %q from %s: dockerd rejected the reload, see its log (a key set both in daemon.json and as a command-line flag is a common cause)",
				pid, s.o.reloadTimeout, live, err, want, s.Paths.DockerDaemonJSON)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func isNotRunning(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func readPidfile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s holds no process id", path)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("pid file %s names pid %d, which is not running: %w", path, pid, err)
	}
	return pid, nil
}
