// Package cosigntest runs the real cosign CLI (tests/setup/deps.sh builds
// it as COSIGN) against test registries, as the peer that checks
// imagegate's signatures and attestations and makes its own.
package cosigntest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/pki"
)

// Password encrypts the keys KeyPair makes; cosign reads it from
// COSIGN_PASSWORD.
const Password = "cosign-test-password"

// Cosign is the cosign CLI set up for some registries. go-containerregistry,
// which cosign is built on, speaks plain http to 127.0.0.1, so cosign runs
// in a sandbox whose /etc/hosts maps the buildset alias (in every test
// certificate) to 127.0.0.1, trusting the registries' CAs (SSL_CERT_FILE)
// and logged in through a private DOCKER_CONFIG.
type Cosign struct {
	bin string
	env []string
	dir string
}

// New sets cosign up for regs.
func New(t *testing.T, regs ...transfertest.Registry) *Cosign {
	t.Helper()
	real := testenv.Tool(t, "COSIGN", "cosign")
	sb := testenv.NewSandbox(t, "/etc/hosts")
	f, err := os.OpenFile(sb.Path("/etc/hosts"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n127.0.0.1 " + pki.BuildsetAlias + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dir := t.TempDir()
	auths := map[string]any{}
	var cas []byte
	for _, r := range regs {
		auths[Alias(r)] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}
		cas = append(cas, r.CA...)
	}
	cfg, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), cas, 0o600); err != nil {
		t.Fatal(err)
	}
	return &Cosign{bin: sb.Wrap(t, real), dir: dir,
		env: []string{"DOCKER_CONFIG=" + dir, "SSL_CERT_FILE=" + filepath.Join(dir, "ca.pem"), "HOME=" + dir,
			"COSIGN_PASSWORD=" + Password, "TUF_ROOT=" + filepath.Join(dir, "tuf")}}
}

// Alias is the registry's address as cosign reaches it, through the
// sandbox's alias.
func Alias(r transfertest.Registry) string {
	return pki.BuildsetAlias + ":" + r.Host[strings.LastIndex(r.Host, ":")+1:]
}

// Run runs cosign with args (and extra environment), failing t if it fails;
// it returns the output.
func (c *Cosign) Run(t *testing.T, extra []string, args ...string) string {
	t.Helper()
	return testenv.Run(t, append(c.env, extra...), c.bin, args...)
}

// Fails runs cosign with args, failing t unless it fails; it returns the
// output.
func (c *Cosign) Fails(t *testing.T, args ...string) string {
	t.Helper()
	return testenv.RunFails(t, c.env, c.bin, args...)
}

// KeyPair makes a key pair with cosign generate-key-pair and returns the
// paths of <name>.key (encrypted with Password) and <name>.pub.
func (c *Cosign) KeyPair(t *testing.T, name string) (string, string) {
	t.Helper()
	prefix := filepath.Join(c.dir, name)
	c.Run(t, nil, "generate-key-pair", "--output-key-prefix", prefix)
	return prefix + ".key", prefix + ".pub"
}

// Read returns a file's contents (a key KeyPair wrote).
func Read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
