package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
)

// SSHD is an OpenSSH server started for a test (StartSSHD).
type SSHD struct {
	*daemon.Process
	// Addr is 127.0.0.1, the only address it listens on; Port its port.
	Addr string
	Port int
	// User is the user running the test, the only one who can log in.
	User string
	// ClientKey is the private key the server accepts (no passphrase).
	ClientKey string
	// HostKey is the server's public host key ("ssh-ed25519 AAAA...").
	HostKey string
	// KnownHosts is a known_hosts file holding HostKey for [Addr]:Port.
	KnownHosts string
	// Home is HOME and the working directory of every session: "~" on the
	// server is a temporary directory, never the user's real home.
	Home string
	// Dir holds the configuration, keys and log.
	Dir string
}

// StartSSHD starts /usr/sbin/sshd (or $SSHD) in the foreground on
// 127.0.0.1 at a free port, with a temporary ed25519 host key, public-key
// authentication only (no PAM, no passwords) for a temporary client key,
// and a private home directory for the sessions; it waits until the server
// answers. The server and the sessions still open are stopped at the end of
// the test.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	bin, err := filepath.Abs(Tool(t, "SSHD", "/usr/sbin/sshd")) // sshd re-executes itself: absolute path
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := ShortTempDir(t)
	s := &SSHD{Addr: "127.0.0.1", Port: FreePort(t), User: u.Username, Dir: dir,
		Home: filepath.Join(dir, "home"), KnownHosts: filepath.Join(dir, "known_hosts")}
	if err := os.Mkdir(s.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	_, hostPub := SSHKeyPair(t, dir, "host_ed25519")
	clientKey, clientPub := SSHKeyPair(t, dir, "client_ed25519")
	s.ClientKey, s.HostKey = clientKey, hostPub
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(clientPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.KnownHosts, []byte(s.KnownHostsLine(hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	// StrictModes would refuse authorized_keys below /tmp (world
	// writable). ForceCommand starts every command, and the sftp server,
	// in Home, as sshd starts them in the home directory of a real node.
	cfg := fmt.Sprintf(`ListenAddress %[1]s
Port %[2]d
HostKey %[3]s/host_ed25519
PidFile %[3]s/pid
AuthorizedKeysFile %[3]s/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers %[4]s
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
SetEnv HOME=%[5]s
ForceCommand cd "$HOME" && exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
LogLevel VERBOSE
`, s.Addr, s.Port, dir, s.User, s.Home)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root needs its privilege separation directory,
		// which the ssh service creates at boot (tmpfiles.d).
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bin, "-t", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v: %s", err, out)
	}
	s.Process = StartProcess(t, "sshd", exec.Command(bin, "-D", "-e", "-f", cfgPath, "-p", strconv.Itoa(s.Port)), dir)
	// Registered after StartProcess's stop, so it runs first: the sessions
	// are processes of their own session (setsid) that the listener's stop
	// does not reach.
	t.Cleanup(func() {
		for _, pid := range s.Sessions() {
			daemon.StopPid(pid)
		}
	})
	WaitFor(t, "sshd", 10*time.Second, s.Process, s.banner)
	return s
}

// banner checks that an SSH server answers on the port.
func (s *SSHD) banner() error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(s.Addr, strconv.Itoa(s.Port)), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("not an SSH server: %q", line)
	}
	return nil
}

// KnownHostsLine is the known_hosts line of a host key (public key text)
// for the server's address and port.
func (s *SSHD) KnownHostsLine(pub string) string {
	f := strings.Fields(pub)
	if len(f) < 2 {
		return ""
	}
	return fmt.Sprintf("[%s]:%d %s %s\n", s.Addr, s.Port, f[0], f[1])
}

// Sessions returns the process ids of the server's connections (the
// children of the listening sshd).
func (s *SSHD) Sessions() []int {
	listener := s.Cmd.Process.Pid
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(listener) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// SSHKeyPair makes an ed25519 key pair without passphrase,
// <dir>/<name> and <dir>/<name>.pub, and returns the private key's path and
// the public key's text.
func SSHKeyPair(t testing.TB, dir, name string) (key, pub string) {
	t.Helper()
	key = filepath.Join(dir, name)
	Run(t, nil, Tool(t, "SSH_KEYGEN", "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "imagegate-test-"+name, "-f", key)
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return key, strings.TrimSpace(string(b))
}
