package clientconf

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// credentials plans what upstream's use-buildset-registry writes for
// buildset_registry_docker_user, so that docker, podman, skopeo and the
// kubelet of that user can push to the buildset registry (and pull with
// credentials):
//
//   - ~/.docker/config.json: auths["<location>"].auth, base64 of
//     user:password, merged into the file (other registries and keys
//     kept); ~/.docker is created with mode 0700;
//   - /run/user/<uid>/auth.json, the same entry, when that directory
//     exists (the user's runtime directory);
//   - /var/lib/kubelet/config.json, when /var/lib/kubelet exists: a link to
//     the user's config.json, as upstream makes, or the entry merged into
//     the file already there.
//
// Every file is the user's, mode 0600; its content never leaves the
// package (diffs show a placeholder).
func (p *plan) credentials(s *apply, location string) error {
	u, err := s.o.lookupUser(s.DockerUser)
	if err != nil {
		return fmt.Errorf("buildset_registry_docker_user %q: %w", s.DockerUser, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || u.HomeDir == "" {
		return fmt.Errorf("buildset_registry_docker_user %q: no numeric uid/gid or no home directory in the user database", s.DockerUser)
	}
	if !filepath.IsAbs(u.HomeDir) || !isDir(u.HomeDir) {
		return fmt.Errorf("buildset_registry_docker_user %q: home directory %q is not an existing absolute path", s.DockerUser, u.HomeDir)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(s.Registry.Username + ":" + s.Registry.Password))
	o := fileOpts{mode: 0o600, own: owner{set: true, uid: uid, gid: gid}, dirMode: 0o700, secret: true}
	merge := func(path string) error {
		_, err := p.editWith(credentialsClient, path, o, func(before []byte, _ bool) ([]byte, error) {
			after, err := editAuths(before, location, auth)
			if err != nil {
				return nil, fmt.Errorf("%s: %w; fix or remove the file (it was left as it is)", path, err)
			}
			return after, nil
		})
		return err
	}
	dockerConfig := filepath.Join(u.HomeDir, ".docker", "config.json")
	if err := merge(dockerConfig); err != nil {
		return err
	}
	if run := filepath.Join(s.Paths.RunUserDir, u.Uid); isDir(run) {
		if err := merge(filepath.Join(run, "auth.json")); err != nil {
			return err
		}
	}
	if isDir(s.Paths.KubeletDir) {
		kube := filepath.Join(s.Paths.KubeletDir, "config.json")
		fi, err := os.Lstat(kube)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Root's link, as upstream's file task makes it.
			return p.symlink(credentialsClient, kube, dockerConfig, fileOpts{})
		case err != nil:
			return fmt.Errorf("reading %s: %w", kube, err)
		case fi.Mode()&fs.ModeSymlink != 0 && sameFile(kube, dockerConfig):
			return nil // the link to the user's config.json: done above
		}
		// A file of its own (or a link elsewhere): add the entry to it,
		// keeping what it holds, with its owner and mode.
		_, err = p.editWith(credentialsClient, kube, fileOpts{mode: 0o600, secret: true}, func(before []byte, _ bool) ([]byte, error) {
			after, err := editAuths(before, location, auth)
			if err != nil {
				return nil, fmt.Errorf("%s: %w; fix or remove the file (it was left as it is)", kube, err)
			}
			return after, nil
		})
		return err
	}
	return nil
}

// credentialsClient is the Client name of credential files in results.
const credentialsClient = "credentials"

// sameFile reports whether link resolves to target (which may not exist
// yet).
func sameFile(link, target string) bool {
	dest, err := os.Readlink(link)
	if err != nil {
		return false
	}
	if !filepath.IsAbs(dest) {
		dest = filepath.Join(filepath.Dir(link), dest)
	}
	return filepath.Clean(dest) == filepath.Clean(target)
}

// editAuths sets auths[location].auth in a docker config.json (or a
// containers auth.json: the same format), keeping every other key, entry
// and field in file order. It returns before unchanged when the entry is
// already there.
func editAuths(before []byte, location, auth string) ([]byte, error) {
	ms, err := parseObject(before)
	if err != nil {
		return nil, err
	}
	idx := -1
	var auths []member
	for i, m := range ms {
		if m.key != "auths" {
			continue
		}
		idx = i
		if auths, err = parseObject(m.val); err != nil {
			return nil, errors.New(`"auths" is not an object`)
		}
	}
	entryIdx := -1
	var entry []member
	for i, a := range auths {
		if a.key == location {
			entryIdx = i
			if entry, err = parseObject(a.val); err != nil {
				return nil, fmt.Errorf(`"auths"[%q] is not an object`, location)
			}
		}
	}
	val, _ := json.Marshal(auth)
	set := false
	for i, f := range entry {
		if f.key == "auth" {
			var cur string
			if json.Unmarshal(f.val, &cur) == nil && cur == auth {
				return before, nil
			}
			entry[i].val = val
			set = true
		}
	}
	if !set {
		entry = append(entry, member{"auth", val})
	}
	ev, err := compactObject(entry)
	if err != nil {
		return nil, err
	}
	if entryIdx >= 0 {
		auths[entryIdx].val = ev
	} else {
		auths = append(auths, member{location, ev})
	}
	av, err := compactObject(auths)
	if err != nil {
		return nil, err
	}
	if idx >= 0 {
		ms[idx].val = av
	} else {
		ms = append(ms, member{"auths", av})
	}
	return formatObject(ms)
}

// compactObject is formatObject without white space, for a nested value
// (formatObject indents the whole document).
func compactObject(ms []member) (json.RawMessage, error) {
	b, err := formatObject(ms)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// lookupUser is user.Lookup, with the error saying where users come from.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w (the module reads /etc/passwd; give a user that exists on the node)", err)
	}
	return u, nil
}
