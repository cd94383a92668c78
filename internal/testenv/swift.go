package testenv

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
	"github.com/imagegate/imagegate/pkg/pki"
)

// Swift is an all-in-one OpenStack Swift started for a test from Debian's
// packages (swift-proxy, swift-account, swift-container, swift-object):
// memcached, one account, container and object server on plain HTTP on
// loopback, with rings of one device and one replica on a directory of the
// test, and a proxy serving TLS with a CA of the test. The proxy
// authenticates with tempauth (Swift's v1 auth), or with a real Keystone
// (python3-keystone, on SQLite) through keystonemiddleware's authtoken and
// Swift's keystoneauth when SwiftOptions.Keystone is set. Every server is
// stopped at the end of the test.
type Swift struct {
	// Endpoint is the proxy's base URL: https://127.0.0.1:<port>.
	Endpoint string
	// Port is the proxy's TCP port.
	Port int
	// AuthURL is tempauth's v1 auth URL (<Endpoint>/auth/v1.0); empty
	// with Keystone.
	AuthURL string
	// User and Key are tempauth's account administrator
	// (<account>:<user>, .admin).
	User, Key string
	// Account is the tempauth account (AUTH_<name>).
	Account string
	// LimitedUser and LimitedKey are a tempauth user of the same account
	// without rights of its own: it reaches a container only through the
	// container's ACLs.
	LimitedUser, LimitedKey string
	// Keystone is the identity service, when started with it.
	Keystone *Keystone
	// CAFile is the PEM of the CA that signed the proxy's certificate.
	CAFile string
	// CAPEM is CAFile's content.
	CAPEM []byte
	// Dir is the private directory (rings, configuration, data, logs).
	Dir string

	t     testing.TB
	proxy *daemon.Process
	cmd   func() *exec.Cmd
	// others are memcached and the account, container and object servers.
	others []*daemon.Process
}

// SwiftFullEnv is the environment variable that turns on the full Swift
// suite: IMAGEGATE_SWIFT_FULL=1, as make test-swift sets it.
const SwiftFullEnv = "IMAGEGATE_SWIFT_FULL"

// RequireSwiftFull skips a test of the full Swift suite unless
// IMAGEGATE_SWIFT_FULL=1 (make test-swift). Each such test starts its own
// Swift, and together they take about 15 minutes on 2 cores, so make
// test runs a smoke test of Swift instead: the storage conformance suite,
// bad settings, an outage during a push, and zuul-registry's
// configuration behind Keystone.
func RequireSwiftFull(t testing.TB) {
	t.Helper()
	if os.Getenv(SwiftFullEnv) != "1" {
		t.Skip("part of the full Swift suite: make test-swift (" + SwiftFullEnv + "=1)")
	}
}

// SwiftOptions configure StartSwift.
type SwiftOptions struct {
	// Keystone authenticates through a real Keystone instead of tempauth.
	Keystone bool
}

// StartSwift starts Swift (and Keystone, with o.Keystone) and waits until
// the proxy serves an authenticated account request.
func StartSwift(t testing.TB, o SwiftOptions) *Swift {
	t.Helper()
	dir := ShortTempDir(t)
	checkXattrs(t, dir)
	for _, d := range []string{"srv/d1", "cache", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tl := NewTLS(t, dir)
	s := &Swift{Dir: dir, t: t, CAFile: tl.CAFile, CAPEM: tl.CA.CertPEM, Port: FreePort(t)}
	s.Endpoint = "https://127.0.0.1:" + strconv.Itoa(s.Port)
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("swift.conf", fmt.Sprintf("[swift-hash]\nswift_hash_path_suffix = %s\nswift_hash_path_prefix = %s\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n",
		RandomString(t, 8), RandomString(t, 8)))

	// The servers switch to this user (default: swift) once bound.
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	runUser := u.Username
	ringBuilder := Tool(t, "", "swift-ring-builder")
	ports := map[string]int{"account": FreePort(t), "container": FreePort(t), "object": FreePort(t)}
	for _, kind := range []string{"account", "container", "object"} {
		builder := filepath.Join(dir, kind+".builder")
		// 2^6 partitions, one replica, one device: the smallest ring.
		Run(t, nil, ringBuilder, builder, "create", "6", "1", "1")
		Run(t, nil, ringBuilder, builder, "add", fmt.Sprintf("r1z1-127.0.0.1:%d/d1", ports[kind]), "100")
		Run(t, nil, ringBuilder, builder, "rebalance")
		write(kind+"-server.conf", fmt.Sprintf(`[DEFAULT]
bind_ip = 127.0.0.1
bind_port = %d
devices = %s
mount_check = false
swift_dir = %s
user = %s
workers = 0
log_level = INFO

[pipeline:main]
pipeline = %s-server

[app:%s-server]
use = egg:swift#%s
`, ports[kind], filepath.Join(dir, "srv"), dir, runUser, kind, kind, kind))
	}

	mcPort := FreePort(t)
	mcArgs := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(mcPort), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		mcArgs = append(mcArgs, "-u", "root")
	}
	memcached := StartProcess(t, "memcached", exec.Command(Tool(t, "", "memcached"), mcArgs...), dir)
	// The servers start in parallel: each takes seconds to import.
	servers := map[string]*daemon.Process{}
	s.others = append(s.others, memcached)
	for _, kind := range []string{"account", "container", "object"} {
		servers[kind] = StartProcess(t, "swift-"+kind, exec.Command(Tool(t, "", "swift-"+kind+"-server"), filepath.Join(dir, kind+"-server.conf"), "-v"), dir)
		s.others = append(s.others, servers[kind])
	}

	auth := ""
	if o.Keystone {
		s.Keystone = startKeystone(t, dir, s.Endpoint)
		k := s.Keystone
		auth = fmt.Sprintf(`pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl authtoken keystoneauth copy slo dlo proxy-logging proxy-server

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = %[1]s
auth_url = %[1]s
auth_type = password
username = admin
password = %[2]s
project_name = admin
user_domain_id = default
project_domain_id = default
delay_auth_decision = True
memcached_servers = 127.0.0.1:%[3]d
service_token_roles_required = True

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_prefix = AUTH_
`, strings.TrimSuffix(k.URL, "/v3"), k.AdminPassword, mcPort)
	} else {
		s.User, s.Key = "imagegate:admin", RandomString(t, 12)
		s.LimitedUser, s.LimitedKey = "imagegate:limited", RandomString(t, 12)
		s.Account = "AUTH_imagegate"
		s.AuthURL = s.Endpoint + "/auth/v1.0"
		auth = fmt.Sprintf(`pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl tempauth copy slo dlo proxy-logging proxy-server

[filter:tempauth]
use = egg:swift#tempauth
user_imagegate_admin = %s .admin
user_imagegate_limited = %s
`, s.Key, s.LimitedKey)
	}
	write("proxy-server.conf", fmt.Sprintf(`[DEFAULT]
bind_ip = 127.0.0.1
bind_port = %d
cert_file = %s
key_file = %s
swift_dir = %s
user = %s
workers = 2
log_level = INFO

[pipeline:main]
%s
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:%d

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
`, s.Port, tl.CertFile, tl.KeyFile, dir, runUser, auth, mcPort))
	proxyBin := Tool(t, "", "swift-proxy-server")
	s.cmd = func() *exec.Cmd { return exec.Command(proxyBin, filepath.Join(dir, "proxy-server.conf"), "-v") }
	s.proxy = StartProcess(t, "swift-proxy", s.cmd(), dir)
	for kind, p := range servers {
		s.waitPort(p, ports[kind])
	}
	WaitFor(t, "memcached", time.Minute, memcached, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(mcPort))
		if err == nil {
			c.Close()
		}
		return err
	})
	s.waitReady()
	return s
}

// checkXattrs fails the test when dir's filesystem has no user extended
// attributes: Swift's object server keeps an object's metadata in them.
func checkXattrs(t testing.TB, dir string) {
	t.Helper()
	probe := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	if err := syscall.Setxattr(probe, "user.swift.probe", []byte("1"), 0); err != nil {
		t.Fatalf("Swift needs user extended attributes on %s's filesystem: %v", dir, err)
	}
}

// waitPort waits until p accepts HTTP requests on port (any answer).
func (s *Swift) waitPort(p *daemon.Process, port int) {
	s.t.Helper()
	WaitFor(s.t, p.Name, time.Minute, p, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthcheck", port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// waitReady waits until the proxy serves an authenticated HEAD of the
// account (which needs every server).
func (s *Swift) waitReady() {
	s.t.Helper()
	WaitFor(s.t, "swift proxy", 2*time.Minute, s.proxy, func() error {
		url, token, err := s.tokenErr()
		if err != nil {
			return err
		}
		req, _ := http.NewRequest(http.MethodHead, url, nil)
		req.Header.Set("X-Auth-Token", token)
		resp, err := s.HTTPClient().Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("HEAD account: %s", resp.Status)
		}
		return nil
	})
}

// HTTPClient returns an HTTP client trusting the proxy's CA.
func (s *Swift) HTTPClient() *http.Client {
	pool, _ := pki.CertPool(s.CAPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr}
}

// Token returns the storage URL of the account and a token of its
// administrator (tempauth) or of the Keystone user.
func (s *Swift) Token(t testing.TB) (storageURL, token string) {
	t.Helper()
	u, tok, err := s.tokenErr()
	if err != nil {
		t.Fatal(err)
	}
	return u, tok
}

func (s *Swift) tokenErr() (string, string, error) {
	if s.Keystone != nil {
		tok, body, err := s.Keystone.issue(map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": s.Keystone.User, "domain": map[string]string{"id": "default"}, "password": s.Keystone.Password}}},
			map[string]any{"project": map[string]any{"name": s.Keystone.Project, "domain": map[string]string{"id": "default"}}})
		if err != nil {
			return "", "", err
		}
		_ = body
		return s.Endpoint + "/v1/AUTH_" + s.Keystone.ProjectID, tok, nil
	}
	return s.v1Auth(s.User, s.Key)
}

func (s *Swift) v1Auth(user, key string) (string, string, error) {
	req, _ := http.NewRequest(http.MethodGet, s.AuthURL, nil)
	req.Header.Set("X-Auth-User", user)
	req.Header.Set("X-Auth-Key", key)
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("tempauth: %s", resp.Status)
	}
	return resp.Header.Get("X-Storage-Url"), resp.Header.Get("X-Auth-Token"), nil
}

// Do sends an authenticated request to the account's URL plus path (""
// for the account, "/<container>", "/<container>/<object>") and returns
// the status, headers and body.
func (s *Swift) Do(t testing.TB, method, path string, header map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	url, token := s.Token(t)
	req, err := http.NewRequest(method, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// NewContainerName returns a random container name; the container does
// not exist yet.
func (s *Swift) NewContainerName(t testing.TB) string {
	return "ig-" + RandomString(t, 6)
}

// CreateContainer creates a container with the given headers (ACLs,
// metadata) and returns its name.
func (s *Swift) CreateContainer(t testing.TB, header map[string]string) string {
	t.Helper()
	name := s.NewContainerName(t)
	if status, _, b := s.Do(t, http.MethodPut, "/"+name, header, nil); status/100 != 2 {
		t.Fatalf("creating container %s: %d %s", name, status, b)
	}
	return name
}

// Pids returns the process IDs of the proxy (whose workers are its
// children), the account, container and object servers and memcached, for
// benchmarks measuring Swift's memory.
func (s *Swift) Pids() []int {
	pids := []int{s.proxy.Cmd.Process.Pid}
	for _, p := range s.others {
		pids = append(pids, p.Cmd.Process.Pid)
	}
	return pids
}

// StopProxy stops the proxy (an outage: the storage servers keep their
// data); RestartProxy starts it again on the same port.
func (s *Swift) StopProxy() { s.proxy.Stop() }

// RestartProxy starts the proxy again after StopProxy and waits until it
// answers.
func (s *Swift) RestartProxy() {
	s.t.Helper()
	s.proxy.Stop()
	s.proxy = StartProcess(s.t, "swift-proxy", s.cmd(), s.Dir)
	s.waitReady()
}
