package clientconf_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/internal/testenv"
)

// consumer is a user of the node, in the sandbox's private /etc/passwd,
// whose credentials use-buildset-registry writes.
type consumer struct {
	name     string
	uid, gid int
	home     string
}

// addUser adds a user to the sandbox's /etc/passwd and /etc/group, with a
// home directory and a runtime directory under the sandbox's /run/user.
func addUser(t *testing.T, sb *testenv.Sandbox, dir string) *consumer {
	t.Helper()
	c := &consumer{name: "igconsumer", uid: 4242, gid: 4242, home: filepath.Join(dir, "home", "igconsumer")}
	appendLine := func(path, line string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	appendLine(filepath.Join(sb.Path("/etc"), "passwd"), fmt.Sprintf("%s:x:%d:%d:imagegate consumer:%s:/bin/sh", c.name, c.uid, c.gid, c.home))
	appendLine(filepath.Join(sb.Path("/etc"), "group"), fmt.Sprintf("%s:x:%d:", c.name, c.gid))
	for _, d := range []string{filepath.Join(dir, "home"), c.home, filepath.Join(sb.Path("/run/user"), strconv.Itoa(c.uid))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test's own directories are root's, 0700: the user must reach
	// its home.
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	os.Chown(c.home, c.uid, c.gid)
	run := filepath.Join(sb.Path("/run/user"), strconv.Itoa(c.uid))
	os.Chown(run, c.uid, c.gid)
	os.Chmod(run, 0o700)
	return c
}

// TestConsumerPushesWithWrittenCredentials: use-buildset-registry with
// buildset_registry_docker_user, through real ansible-playbook on a node
// (this machine in a sandbox with a private /etc and /run/user), writes the
// registry's credentials for that user as upstream does: docker's
// ~/.docker/config.json, the containers auth.json in /run/user/<uid>, the
// kubelet's config.json link, 0600 and the user's, never shown. Then
// skopeo (as the user), podman and docker push to the buildset registry
// with nothing but those files, and skopeo without them is refused. The
// docker, containers and buildkit files are written although the role ran
// before dockerd started. A second run changes nothing.
func TestConsumerPushesWithWrittenCredentials(t *testing.T) {
	f := newFixture(t, localAddr(t, "ipv4"))
	sb := testenv.NewSandbox(t, "/etc", "/run/user", "/usr/local/share/ca-certificates")
	dir := testenv.ShortTempDir(t)
	user := addUser(t, sb, dir)
	kubelet := filepath.Join(dir, "kubelet")
	os.MkdirAll(kubelet, 0o755)
	dockerDir := testenv.ShortTempDir(t)
	daemonJSON := filepath.Join(dockerDir, "daemon.json")

	roles := rolesDir(t, dir, "use-buildset-registry")
	vars, _ := json.Marshal(map[string]any{
		"buildset_registry":                        f.registry,
		"buildset_registry_docker_user":            user.name,
		"use_buildset_registry_become":             false,
		"use_buildset_registry_kubelet_dir":        kubelet,
		"use_buildset_registry_docker_daemon_json": daemonJSON,
		"use_buildset_registry_docker_host":        "unix://" + filepath.Join(dockerDir, "docker.sock"),
		"use_buildset_registry_docker_pidfile":     filepath.Join(dockerDir, "docker.pid"),
	})
	varsFile := filepath.Join(dir, "vars.json")
	os.WriteFile(varsFile, vars, 0o600)
	pb := filepath.Join(dir, "consumer-pre.yaml")
	os.WriteFile(pb, []byte("- hosts: localhost\n  gather_facts: false\n  roles:\n    - use-buildset-registry\n"), 0o644)
	env := append(ansibletest.PlaybookEnv(t, dir, lib.Dir), "ANSIBLE_ROLES_PATH="+roles)
	password := f.registry["password"].(string)
	auth := base64.StdEncoding.EncodeToString([]byte(f.registry["username"].(string) + ":" + password))
	playbook := func() string {
		t.Helper()
		out, err := sbRun(sb, env, "ansible-playbook", "--diff", "-i", "localhost,", "-c", "local",
			"-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "@"+varsFile, pb)
		if err != nil {
			t.Fatalf("ansible-playbook: %v\n%s", err, out)
		}
		if strings.Contains(out, password) || strings.Contains(out, auth) {
			t.Errorf("ansible-playbook's output shows the credentials:\n%s", out)
		}
		return out
	}
	out := playbook()
	if !strings.Contains(out, "(credentials for "+f.location+", not shown)") {
		t.Errorf("--diff does not say the credentials files changed:\n%s", out)
	}

	// The files, as upstream writes them, the user's and 0600.
	dockerConfig := filepath.Join(user.home, ".docker", "config.json")
	runAuth := filepath.Join(sb.Path("/run/user"), strconv.Itoa(user.uid), "auth.json")
	for _, p := range []string{dockerConfig, runAuth} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Auths map[string]struct{ Auth string }
		}
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.Auths[f.location].Auth != auth {
			t.Errorf("%s does not hold the registry's credentials for %s (%v)", p, f.location, err)
		}
		fi, _ := os.Stat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o600 || int(st.Uid) != user.uid || int(st.Gid) != user.gid {
			t.Errorf("%s: mode %o owner %d:%d, want 0600 %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid, user.uid, user.gid)
		}
	}
	if fi, err := os.Stat(filepath.Dir(dockerConfig)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("~/.docker: %v %v", fi, err)
	}
	if dest, err := os.Readlink(filepath.Join(kubelet, "config.json")); err != nil || dest != dockerConfig {
		t.Errorf("the kubelet's config.json: %q %v, want a link to %s", dest, err, dockerConfig)
	}
	// Clients that are not running (dockerd) or not installed (buildkitd)
	// are configured for when they start.
	for _, p := range []string{daemonJSON, filepath.Join(sb.Path("/etc"), "buildkit", "buildkitd.toml"),
		filepath.Join(sb.Path("/etc"), "containers", "registries.conf")} {
		if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), f.location) {
			t.Errorf("%s does not name the registry (%v)", p, err)
		}
	}

	img := testenv.BusyboxOCIImage(t, testenv.FileLayer("consumer", []byte(testenv.RandomString(t, 16))))
	src := filepath.Join(user.home, "layout")
	writeLayout(t, src, img)
	testenv.Run(t, nil, "chown", "-R", fmt.Sprintf("%d:%d", user.uid, user.gid), src)

	// skopeo, as the user, with only its files: pushed. Without them
	// (another home): refused.
	asUser := func(home string, args ...string) (string, error) {
		return sbRun(sb, []string{"HOME=" + home, "XDG_RUNTIME_DIR=/run/user/" + strconv.Itoa(user.uid)}, "setpriv",
			append([]string{"--reuid", strconv.Itoa(user.uid), "--regid", strconv.Itoa(user.gid), "--clear-groups", "--"}, args...)...)
	}
	if out, err := asUser(user.home, "skopeo", "copy", "oci:"+src+":latest", "docker://"+f.location+"/consumer/skopeo:latest"); err != nil {
		t.Errorf("skopeo push as %s: %v\n%s", user.name, err, out)
	}
	if out, err := asUser(filepath.Join(dir, "home"), "skopeo", "copy", "oci:"+src+":latest", "docker://"+f.location+"/consumer/denied:latest"); err == nil {
		t.Errorf("skopeo pushed without the credentials:\n%s", out)
	}

	// podman (root, the user's home: podman falls back to
	// ~/.docker/config.json) pushes what it pulled from the layout.
	pdir := testenv.ShortTempDir(t)
	podmanArgs := []string{"--root", filepath.Join(pdir, "root"), "--runroot", filepath.Join(pdir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	podmanEnv := []string{"HOME=" + user.home}
	sb.Run(t, podmanEnv, "podman", append(podmanArgs, "pull", "-q", "oci:"+src+":latest")...)
	id := strings.TrimSpace(sb.Run(t, podmanEnv, "podman", append(podmanArgs, "images", "-q")...))
	if out, err := sbRun(sb, podmanEnv, "podman", append(podmanArgs, "push", id, "docker://"+f.location+"/consumer/podman:latest")...); err != nil {
		t.Errorf("podman push: %v\n%s", err, out)
	}

	// docker (the CLI reads the user's config.json; dockerd, started now,
	// reads the daemon.json and certs.d the role wrote).
	t.Setenv("DOCKERD", sb.Wrap(t, testenv.Tool(t, "DOCKERD", "dockerd")))
	d := testenv.StartDockerd(t, testenv.DockerdOptions{ConfigFile: daemonJSON})
	dockerEnv := []string{"DOCKER_HOST=" + d.Host, "HOME=" + user.home}
	sb.Run(t, dockerEnv, "docker", "pull", "-q", f.location+"/"+dockerApp+":latest")
	sb.Run(t, dockerEnv, "docker", "tag", f.location+"/"+dockerApp+":latest", f.location+"/consumer/docker:latest")
	if out, err := sbRun(sb, dockerEnv, "docker", "push", f.location+"/consumer/docker:latest"); err != nil {
		t.Errorf("docker push: %v\n%s", err, out)
	}

	// The registry has what each pushed.
	for _, repo := range []string{"consumer/skopeo", "consumer/podman", "consumer/docker"} {
		if _, err := f.head(repo + ":latest"); err != nil {
			t.Errorf("%s: %v", repo, err)
		}
	}
	if _, err := f.head("consumer/denied:latest"); err == nil {
		t.Error("consumer/denied exists: a push without credentials went through")
	}

	if out := playbook(); !strings.Contains(out, "changed=0") {
		t.Errorf("second run changed something:\n%s", out)
	}
}

// TestBrokenDaemonJSONWritesNothing: a daemon.json that does not parse
// fails use-buildset-registry, naming the file, before anything is
// written: no credentials, no registries.conf, no hosts line.
func TestBrokenDaemonJSONWritesNothing(t *testing.T) {
	f := newFixture(t, localAddr(t, "ipv4"))
	sb := testenv.NewSandbox(t, "/etc", "/run/user", "/usr/local/share/ca-certificates")
	dir := testenv.ShortTempDir(t)
	user := addUser(t, sb, dir)
	daemonJSON := filepath.Join(sb.Path("/etc"), "docker", "daemon.json")
	if err := os.WriteFile(daemonJSON, []byte(`{"debug": tru`), 0o644); err != nil {
		t.Fatal(err)
	}
	hostsBefore, _ := os.ReadFile(filepath.Join(sb.Path("/etc"), "hosts"))
	regBefore, _ := os.ReadFile(filepath.Join(sb.Path("/etc"), "containers", "registries.conf"))

	roles := rolesDir(t, dir, "use-buildset-registry")
	vars, _ := json.Marshal(map[string]any{"buildset_registry": f.registry, "buildset_registry_docker_user": user.name,
		"use_buildset_registry_become": false})
	varsFile := filepath.Join(dir, "vars.json")
	os.WriteFile(varsFile, vars, 0o600)
	pb := filepath.Join(dir, "pre.yaml")
	os.WriteFile(pb, []byte("- hosts: localhost\n  gather_facts: false\n  roles:\n    - use-buildset-registry\n"), 0o644)
	env := append(ansibletest.PlaybookEnv(t, dir, lib.Dir), "ANSIBLE_ROLES_PATH="+roles)
	out, err := sbRun(sb, env, "ansible-playbook", "-i", "localhost,", "-c", "local",
		"-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "@"+varsFile, pb)
	if err == nil {
		t.Fatalf("the role succeeded with a broken daemon.json:\n%s", out)
	}
	if !strings.Contains(out, "/etc/docker/daemon.json: not valid JSON") || !strings.Contains(out, "it was left as it is") {
		t.Errorf("the failure does not name the file:\n%s", out)
	}
	if strings.Contains(out, f.registry["password"].(string)) {
		t.Error("the failure shows the password")
	}
	if _, err := os.Stat(filepath.Join(user.home, ".docker")); !os.IsNotExist(err) {
		t.Errorf("credentials were written: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(sb.Path("/etc"), "hosts")); string(b) != string(hostsBefore) {
		t.Error("/etc/hosts was changed")
	}
	if b, _ := os.ReadFile(filepath.Join(sb.Path("/etc"), "containers", "registries.conf")); string(b) != string(regBefore) {
		t.Error("registries.conf was changed")
	}
	if b, _ := os.ReadFile(daemonJSON); string(b) != `{"debug": tru` {
		t.Errorf("daemon.json was changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(sb.Path("/etc"), "buildkit")); !os.IsNotExist(err) {
		t.Errorf("/etc/buildkit was created: %v", err)
	}
}

// rolesDir copies roles of the tree and imagegate-modules, with the
// modules of lib as its library, into dir/roles.
func rolesDir(t *testing.T, dir string, roles ...string) string {
	t.Helper()
	out := filepath.Join(dir, "roles")
	if err := os.MkdirAll(filepath.Join(out, "imagegate-modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		testenv.Run(t, nil, "cp", "-a", filepath.Join(daemon.RepoRoot(), "roles", r), filepath.Join(out, r))
	}
	for _, sub := range []string{"action_plugins", "defaults", "meta", "tasks"} {
		testenv.Run(t, nil, "cp", "-a", filepath.Join(daemon.RepoRoot(), "roles", "imagegate-modules", sub), filepath.Join(out, "imagegate-modules", sub))
	}
	testenv.Run(t, nil, "cp", "-a", lib.Dir, filepath.Join(out, "imagegate-modules", "library"))
	return out
}

// writeLayout writes img to an OCI image layout at dir as :latest.
func writeLayout(t *testing.T, dir string, img v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "latest"})); err != nil {
		t.Fatal(err)
	}
}

// sbRun runs a command inside the sandbox and returns its stdout, and an
// error carrying its stderr when it fails, for commands whose failure the
// test inspects or tolerates.
func sbRun(sb *testenv.Sandbox, env []string, name string, args ...string) (string, error) {
	cmd := sb.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstderr: %s", err, stderr.String())
	}
	return stdout.String(), nil
}
