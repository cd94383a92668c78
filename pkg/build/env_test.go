package build

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// env is a buildset registry (Debian's docker-registry with TLS and
// htpasswd) and a buildkitd configured to use it as mirror, as the
// ensure-buildkit role configures a node.
type env struct {
	reg      registryInfo
	bk       *testenv.Buildkitd
	br       *zuul.BuildsetRegistry
	home     string
	workDir  string
	remoteOp []remote.Option
}

// registryInfo is what the tests need of a registry.
type registryInfo struct {
	Host, Username, Password string
	Port                     int
	CAPEM                    []byte
	CAFile                   string
	TLS                      *tls.Config
}

// newEnv uses Debian's docker-registry (htpasswd, basic auth) as buildset
// registry.
func newEnv(t *testing.T) *env {
	t.Helper()
	d := testenv.StartDistribution(t, testenv.DistributionOptions{})
	return newEnvWith(t, registryInfo{Host: d.Host, Port: d.Port, Username: d.Username, Password: d.Password,
		CAPEM: d.TLS.CA.CertPEM, CAFile: d.TLS.CAFile, TLS: d.TLS.Client().Transport.(*http.Transport).TLSClientConfig})
}

// newImagegateEnv uses imagegate's own registry (bearer tokens) as
// buildset registry.
func newImagegateEnv(t *testing.T) *env {
	t.Helper()
	r := registrytest.New(t)
	return newEnvWith(t, registryInfo{Host: r.Host, Port: r.Port, Username: r.Username, Password: r.Password,
		CAPEM: r.CAPEM, CAFile: r.CAFile, TLS: r.TLSConfig()})
}

func newEnvWith(t *testing.T, reg registryInfo) *env {
	t.Helper()
	cfg := mirrorConfig(reg.Host, reg.CAFile)
	bk := testenv.StartBuildkitd(t, cfg)
	home := t.TempDir()
	work := filepath.Join(home, "src", "opendev.org", "org", "project")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: reg.TLS}
	return &env{
		reg: reg, bk: bk, home: home, workDir: work,
		br: &zuul.BuildsetRegistry{Host: "127.0.0.1", Port: reg.Port, Username: reg.Username,
			Password: reg.Password, Cert: string(reg.CAPEM)},
		remoteOp: []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
			remote.WithTransport(tr), remote.WithContext(context.Background())},
	}
}

// mirrorConfig is the buildkitd.toml the ensure-buildkit role writes: the
// buildset registry as first mirror of every namespace, trusted with its CA.
func mirrorConfig(host, caFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[registry.%q]\n  mirrors = [%q]\n", "docker.io", host)
	for _, ns := range []string{"quay.io", "gcr.io", "registry.k8s.io"} {
		fmt.Fprintf(&b, "[registry.%q]\n  mirrors = [%q]\n", ns, host+"/"+ns)
	}
	fmt.Fprintf(&b, "[registry.%q]\n  http = false\n  ca = [%q]\n", host, caFile)
	return b.String()
}

func (e *env) write(t *testing.T, rel, content string) {
	t.Helper()
	p := filepath.Join(e.workDir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) request(images ...zuul.Image) *Request {
	return &Request{
		BuildkitAddr: e.bk.Addr,
		Images:       images,
		Zuul:         zuul.Vars{Change: "42", Pipeline: "check", ChangeURL: "https://review.example.org/42"},
		WorkDir:      e.workDir,
		Home:         e.home,
		Registry:     e.br,
		DockerHost:   "none",
	}
}

// pushBase puts an image into the buildset registry, as
// pull-from-intermediate-registry does.
func (e *env) pushBase(t *testing.T, repo string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(e.reg.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, e.remoteOp...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func (e *env) digest(t *testing.T, repoTag string) string {
	t.Helper()
	ref, err := name.ParseReference(e.reg.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(ref, e.remoteOp...)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}

func (e *env) image(t *testing.T, repoTag string) v1.Image {
	t.Helper()
	ref, err := name.ParseReference(e.reg.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, e.remoteOp...)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return img
}

// absent fails t when the registry has repoTag.
func (e *env) absent(t *testing.T, repoTag string) {
	t.Helper()
	ref, err := name.ParseReference(e.reg.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := remote.Head(ref, e.remoteOp...); err == nil {
		t.Errorf("%s was pushed (%s)", repoTag, d.Digest)
	}
}
