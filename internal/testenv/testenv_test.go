package testenv

import (
	"context"
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
// sshd, in the sessions' private home, checking the host key strictly.
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
}
