package buildset

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/imagegate/imagegate/pkg/atomicfile"
	"github.com/imagegate/imagegate/pkg/pki"
)

// layout names the files below a root directory; see the package comment.
type layout string

func (l layout) root() string    { return string(l) }
func (l layout) config() string  { return filepath.Join(string(l), "registry.json") }
func (l layout) caCert() string  { return filepath.Join(string(l), "ca.crt") }
func (l layout) caKey() string   { return filepath.Join(string(l), "ca.key") }
func (l layout) pidFile() string { return filepath.Join(string(l), "registry.pid") }
func (l layout) logFile() string { return filepath.Join(string(l), "registry.log") }
func (l layout) binDir() string  { return filepath.Join(string(l), "bin") }
func (l layout) binary() string {
	return filepath.Join(string(l), "bin", "imagegate-buildset-registry")
}
func (l layout) storage() string { return filepath.Join(string(l), "storage") }

// config is the content of registry.json: what the daemon serves with, and
// the credentials Apply returns.
type config struct {
	Version  int      `json:"version"`
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Listen   []string `json:"listen,omitempty"`
	Username string   `json:"username"`
	Password string   `json:"password"`
	// Upstreams are the namespaces cached from upstreams (pull-through),
	// none when it is off; UpstreamCA is trusted for them and
	// UpstreamTagTTL (seconds) is how long an upstream tag is served
	// before it is revalidated.
	Upstreams      []upstreamConfig `json:"upstreams,omitempty"`
	UpstreamCA     string           `json:"upstream_ca,omitempty"`
	UpstreamTagTTL int64            `json:"upstream_tag_ttl,omitempty"`
}

// upstreamConfig is a namespace the registry caches: the registry's name
// in image references and its upstream's URL.
type upstreamConfig struct {
	Registry string `json:"registry"`
	URL      string `json:"url"`
}

const configVersion = 1

// sameServing reports whether a daemon started with c serves what d asks
// for.
func (c *config) sameServing(d *config) bool {
	return c.Host == d.Host && c.Port == d.Port && slices.Equal(c.Listen, d.Listen) &&
		c.Username == d.Username && c.Password == d.Password &&
		slices.Equal(c.Upstreams, d.Upstreams) && c.UpstreamCA == d.UpstreamCA && c.UpstreamTagTTL == d.UpstreamTagTTL
}

// passwordBytes is the password's randomness: 192 bits, more than the 128
// the registry's clients need to be safe from guessing.
const passwordBytes = 24

// newPassword returns a random password of URL-safe base64 characters,
// which need no quoting in docker, containers or buildkit configuration.
func newPassword() (string, error) {
	b := make([]byte, passwordBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating the registry password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// desiredConfig is old (which may be nil) updated to spec, keeping its
// credentials so that clients configured earlier keep working.
func desiredConfig(old *config, spec Spec) (*config, error) {
	c := &config{Version: configVersion, Host: spec.Host, Port: spec.Port, Listen: spec.Listen, Username: Username}
	ups, err := spec.upstreams()
	if err != nil {
		return nil, err
	}
	if len(ups) > 0 {
		c.Upstreams, c.UpstreamCA, c.UpstreamTagTTL = ups, spec.UpstreamCA, int64(spec.UpstreamTagTTL/time.Second)
	}
	if old != nil && old.Password != "" {
		c.Password = old.Password
		return c, nil
	}
	pw, err := newPassword()
	if err != nil {
		return nil, err
	}
	c.Password = pw
	return c, nil
}

// readConfig reads registry.json; it returns nil, nil when there is none.
func readConfig(l layout) (*config, error) {
	b, err := os.ReadFile(l.config())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", l.config(), err)
	}
	var c config
	if err := json.Unmarshal(b, &c); err != nil || c.Version != configVersion || c.Password == "" || c.Port == 0 {
		return nil, fmt.Errorf("%s is damaged or from an unknown version: remove the registry with state: absent and start it again", l.config())
	}
	return &c, nil
}

func writeConfig(l layout, c *config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(l.config(), append(b, '\n'), 0o600)
}

// caValidity is how long the CA, and so the server certificates it issues,
// are valid. A buildset registry lives for one buildset; a year, as
// upstream's self-signed certificate, leaves room for long-paused jobs.
const caValidity = 365 * 24 * time.Hour

// loadCA reads the root's CA; it returns nil, nil when there is none yet.
func loadCA(l layout) (*pki.CA, error) {
	_, errc := os.Stat(l.caCert())
	_, errk := os.Stat(l.caKey())
	if errors.Is(errc, fs.ErrNotExist) && errors.Is(errk, fs.ErrNotExist) {
		return nil, nil
	}
	ca, err := pki.LoadCA(l.caCert(), l.caKey())
	if err != nil {
		return nil, fmt.Errorf("%w: remove the registry with state: absent and start it again", err)
	}
	if time.Until(ca.Cert.NotAfter) < 24*time.Hour {
		return nil, fmt.Errorf("the registry's CA in %s expires at %s: remove the registry with state: absent and start it again", l.caCert(), ca.Cert.NotAfter.Format(time.RFC3339))
	}
	return ca, nil
}

// rootStatus describes what is at a root path.
type rootStatus int

const (
	rootMissing rootStatus = iota // nothing there
	rootEmpty                     // an empty directory
	rootOurs                      // a directory holding registry.json
)

// rootExists reports whether something is at the root path.
func rootExists(l layout) (bool, error) {
	_, err := os.Lstat(l.root())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, unusable(l, err)
	}
	return true, nil
}

// inspectRoot reports what is at l. A path that exists but is neither an
// empty directory nor a buildset registry root is ErrForeignRoot.
func inspectRoot(l layout) (rootStatus, error) {
	fi, err := os.Lstat(l.root())
	if errors.Is(err, fs.ErrNotExist) {
		return rootMissing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("buildset_registry_root %s: %w: %w", l.root(), ErrRootUnusable, err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("buildset_registry_root %s exists and is not a directory (%w): choose a new or empty directory", l.root(), ErrForeignRoot)
	}
	if _, err := os.Lstat(l.config()); err == nil {
		return rootOurs, nil
	}
	f, err := os.Open(l.root())
	if err != nil {
		return 0, fmt.Errorf("buildset_registry_root %s: %w: %w", l.root(), ErrRootUnusable, err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err == io.EOF {
		return rootEmpty, nil
	}
	return 0, fmt.Errorf("buildset_registry_root %s is a non-empty directory without registry.json (%w): choose a new or empty directory; imagegate does not take over or delete directories it did not create", l.root(), ErrForeignRoot)
}

func unusable(l layout, err error) error {
	return fmt.Errorf("buildset_registry_root %s: %w: %w; choose a directory the module's user can write", l.root(), ErrRootUnusable, err)
}

// mkdirRoot creates the root directory, mode 0700, unless it exists.
func mkdirRoot(l layout) error {
	if err := os.MkdirAll(filepath.Dir(l.root()), 0o755); err != nil {
		return unusable(l, err)
	}
	if err := os.Mkdir(l.root(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return unusable(l, err)
	}
	return nil
}

// prepareRoot makes an empty root directory mode 0700 and checks that it is
// writable. It runs under the root's lock, so no other Apply sees its probe
// file.
func prepareRoot(l layout) error {
	if err := os.Chmod(l.root(), 0o700); err != nil {
		return unusable(l, err)
	}
	// Permission bits do not stop root, so try a write: a read-only file
	// system, a full disk or an immutable directory show up here.
	f, err := os.CreateTemp(l.root(), ".probe*")
	if err != nil {
		return unusable(l, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return unusable(l, err)
	}
	return nil
}

// lockRoot locks the root directory itself (flock works on directories),
// exclusively to change it, shared to read it, so that concurrent Apply
// calls on one root see each other's work whole, and no lock file is left
// in a directory that turns out not to be ours. It waits until done.
func lockRoot(done <-chan struct{}, l layout, exclusive bool) (unlock func(), err error) {
	f, err := os.Open(l.root())
	if err != nil {
		return nil, unusable(l, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", l.root(), err)
		}
		select {
		case <-done:
			f.Close()
			return nil, fmt.Errorf("locking %s: another buildset_registry task on this root is still running", l.root())
		case <-tick.C:
		}
	}
}

// installExecutable puts src in the root's bin directory unless it is there
// already, and returns whether it wrote. It hard-links when src is on the
// same file system (Ansible's temporary directory usually is: a link
// survives Ansible deleting the module file, and costs nothing), and copies
// otherwise.
func installExecutable(l layout, src string) (bool, error) {
	if si, err := os.Stat(src); err == nil {
		if di, err := os.Stat(l.binary()); err == nil && os.SameFile(si, di) {
			return false, nil
		}
	}
	if same, err := sameContent(src, l.binary()); err == nil && same {
		return false, nil
	}
	if err := os.MkdirAll(l.binDir(), 0o700); err != nil {
		return false, fmt.Errorf("buildset_registry_root %s: %w: %w", l.root(), ErrRootUnusable, err)
	}
	// A running daemon keeps its old executable: rename replaces the name,
	// not the inode the kernel runs.
	tmpName := filepath.Join(l.binDir(), ".install-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Link(src, tmpName); err == nil {
		defer os.Remove(tmpName)
		if err := os.Rename(tmpName, l.binary()); err != nil {
			return false, fmt.Errorf("installing the registry executable in %s: %w", l.binDir(), err)
		}
		return true, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("reading the module executable: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(l.binDir(), ".install*")
	if err != nil {
		return false, fmt.Errorf("installing the registry executable: %w", err)
	}
	defer os.Remove(tmp.Name())
	// No fsync: a copy torn by a power loss differs from the module
	// executable, so the next start replaces it.
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o700)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), l.binary())
	}
	if err != nil {
		return false, fmt.Errorf("installing the registry executable in %s: %w", l.binDir(), err)
	}
	return true, nil
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	if sa.Size() != sb.Size() {
		return false, nil
	}
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra == io.EOF || erra == io.ErrUnexpectedEOF {
			return errb == erra, nil
		}
		if erra != nil {
			return false, erra
		}
		if errb != nil {
			return false, errb
		}
	}
}
