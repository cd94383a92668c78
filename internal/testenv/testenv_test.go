package testenv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestDaemons starts every daemon and checks each one does real work: an
// image pushed to docker-registry is pulled and run by dockerd, pulled by
// containerd, and listed by buildkitd's workers; ssh runs a command through
// sshd, in the sessions' private home, checking the host key strictly;
// Swift stores and serves an object to its tempauth user, and to a
// Keystone user's token and application credential when it runs behind
// Keystone, refusing requests without a valid token.
func TestDaemons(t *testing.T) {
	t.Parallel()
	reg := StartDistribution(t, DistributionOptions{})
	img := BusyboxImage(t, FileLayer("hello.txt", []byte("hello from testenv\n")))
	ref, err := name.ParseReference(reg.Host + "/testenv/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: reg.TLS.Client().Transport.(*http.Transport).TLSClientConfig}
	auth := &authn.Basic{Username: reg.Username, Password: reg.Password}
	if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithTransport(tr), remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing to docker-registry: %v", err)
	}
	digest, _ := img.Digest()
	TrustCA(t, reg.Host, reg.TLS.CA.CertPEM)

	t.Run("dockerd", func(t *testing.T) {
		t.Parallel()
		d := StartDockerd(t, DockerdOptions{})
		d.Login(reg.Host, reg.Username, reg.Password)
		out := d.Docker("pull", ref.String())
		if !strings.Contains(out, digest.String()) {
			t.Errorf("pull did not report digest %s: %s", digest, out)
		}
		if got := d.Docker("run", "--rm", "--network", "none", ref.String(), "cat", "/hello.txt"); got != "hello from testenv\n" {
			t.Errorf("container printed %q", got)
		}
	})
	t.Run("containerd", func(t *testing.T) {
		t.Parallel()
		c := StartContainerd(t)
		// ctr speaks plain HTTP to 127.0.0.1; use the machine's address.
		ipRef := strings.Replace(ref.String(), "127.0.0.1", LocalIP(), 1)
		c.Ctr(t, "images", "pull", "--tlscacert", reg.TLS.CAFile, "--user", reg.Username+":"+reg.Password, ipRef)
		if list := c.Ctr(t, "images", "ls", "-q"); !strings.Contains(list, ipRef) {
			t.Errorf("image not listed: %s", list)
		}
	})
	t.Run("buildkitd", func(t *testing.T) {
		t.Parallel()
		b := StartBuildkitd(t, "")
		out := Run(t, nil, Tool(t, "BUILDCTL", "buildctl"), "--addr", b.Addr, "debug", "workers")
		if !strings.Contains(out, "linux/amd64") {
			t.Errorf("workers: %s", out)
		}
	})
	t.Run("sshd", func(t *testing.T) {
		t.Parallel()
		s := StartSSHD(t)
		ssh := func(knownHosts string) []string {
			return []string{"-F", "/dev/null", "-i", s.ClientKey, "-p", strconv.Itoa(s.Port),
				"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
				s.User + "@" + s.Addr, "pwd; echo $HOME"}
		}
		sshBin := Tool(t, "SSH", "ssh")
		out := Run(t, nil, sshBin, ssh(s.KnownHosts)...)
		if want := s.Home + "\n" + s.Home + "\n"; out != want {
			t.Errorf("the session's directory and HOME: %q, want %q", out, want)
		}
		other := filepath.Join(s.Dir, "other_known_hosts")
		_, otherPub := SSHKeyPair(t, s.Dir, "other_ed25519")
		if err := os.WriteFile(other, []byte(s.KnownHostsLine(otherPub)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := RunFails(t, nil, sshBin, ssh(other)...); !strings.Contains(out, "Host key verification failed") {
			t.Errorf("ssh refused a host key its known_hosts does not hold, but not for that: %s", out)
		}
	})
	t.Run("podman", func(t *testing.T) {
		t.Parallel()
		dir := ShortTempDir(t)
		Podman(t, dir, "", "login", "-u", reg.Username, "-p", reg.Password, reg.Host)
		out := Podman(t, dir, "", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", ref.String(), "cat", "/hello.txt")
		if out != "hello from testenv\n" {
			t.Errorf("podman run printed %q", out)
		}
	})
	t.Run("swift", func(t *testing.T) {
		t.Parallel()
		s := StartSwift(t, SwiftOptions{})
		url, token := s.Token(t)
		container := checkSwift(t, s, url, token)
		// The limited user has no rights of its own in the account.
		limitedURL, limitedToken, err := s.v1Auth(s.LimitedUser, s.LimitedKey)
		if err != nil {
			t.Fatal(err)
		}
		if status := swiftRequest(t, s, http.MethodPut, limitedURL+"/"+container+"/other", limitedToken, []byte("x")); status != http.StatusForbidden {
			t.Errorf("the limited user's PUT into the administrator's container: %d, want 403", status)
		}
		if _, _, err := s.v1Auth(s.User, "wrong"+s.Key); err == nil {
			t.Error("tempauth accepted a wrong key")
		}
	})
	t.Run("swift with keystone", func(t *testing.T) {
		// make test starts Keystone once, for the server's test of
		// zuul-registry's configuration; this check of the starter runs
		// in make test-swift.
		RequireSwiftFull(t)
		t.Parallel()
		s := StartSwift(t, SwiftOptions{Keystone: true})
		k := s.Keystone
		url, token := s.Token(t)
		if want := s.Endpoint + "/v1/AUTH_" + k.ProjectID; url != want {
			t.Errorf("storage URL %s, want %s", url, want)
		}
		checkSwift(t, s, url, token)
		// The application credential's token, and the object store in
		// the token's catalog.
		appToken, body, err := k.issue(map[string]any{"methods": []string{"application_credential"},
			"application_credential": map[string]any{"id": k.AppCredID, "secret": k.AppCredSecret}}, nil)
		if err != nil {
			t.Fatalf("application credential: %v", err)
		}
		if !strings.Contains(string(body), `"object-store"`) || !strings.Contains(string(body), strconv.Quote(url)) {
			t.Errorf("the token's catalog does not list the object store at %s: %.2000s", url, body)
		}
		checkSwift(t, s, url, appToken)
		if _, _, err := k.issue(map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": k.User, "domain": map[string]string{"id": "default"}, "password": "wrong" + k.Password}}},
			nil); err == nil {
			t.Error("keystone issued a token for a wrong password")
		}
	})
}

// checkSwift creates a container in the account at url with token, stores
// an object and reads it back, and checks that requests without a token
// or with a forged one are refused. It returns the container.
func checkSwift(t *testing.T, s *Swift, url, token string) string {
	t.Helper()
	container := s.NewContainerName(t)
	if status := swiftRequest(t, s, http.MethodPut, url+"/"+container, token, nil); status != http.StatusCreated {
		t.Fatalf("PUT container: %d", status)
	}
	content := []byte("stored in swift " + RandomString(t, 8))
	obj := url + "/" + container + "/dir/object"
	if status := swiftRequest(t, s, http.MethodPut, obj, token, content); status != http.StatusCreated {
		t.Fatalf("PUT object: %d", status)
	}
	req, _ := http.NewRequest(http.MethodGet, obj, nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("GET object: %d %q (%v), want %q", resp.StatusCode, got, err, content)
	}
	for _, tok := range []string{"", "forged" + RandomString(t, 16)} {
		if status := swiftRequest(t, s, http.MethodGet, obj, tok, nil); status != http.StatusUnauthorized {
			t.Errorf("GET object with token %q: %d, want 401", tok, status)
		}
	}
	return container
}

// swiftRequest sends a request to Swift with token (none when empty) and
// returns the status.
func swiftRequest(t *testing.T, s *Swift, method, url, token string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
