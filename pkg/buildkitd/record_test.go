package buildkitd

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReferencedFiles(t *testing.T) {
	t.Parallel()
	cfg := `
debug = true
[grpc]
  address = ["unix:///run/buildkit/buildkitd.sock"]
  [grpc.tls]
    cert = "/etc/buildkit/tls.crt"
    key = "/etc/buildkit/tls.key"
    ca = "/etc/buildkit/tlsca.crt"
[registry."docker.io"]
  mirrors = ["zuul-jobs.buildset-registry:5000"]
[registry."zuul-jobs.buildset-registry:5000"]
  http = false
  ca = ["/etc/buildkit/certs.d/zuul-jobs.buildset-registry:5000/ca.crt", "site-ca.crt"]
  [[registry."zuul-jobs.buildset-registry:5000".keypair]]
    key = "/etc/buildkit/client.key"
    cert = "/etc/buildkit/client.crt"
`
	got, err := referencedFiles([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	want := []fileRef{
		{"/etc/buildkit/certs.d/zuul-jobs.buildset-registry:5000/ca.crt", `registry."zuul-jobs.buildset-registry:5000".ca[0]`},
		{"site-ca.crt", `registry."zuul-jobs.buildset-registry:5000".ca[1]`},
		{"/etc/buildkit/client.key", `registry."zuul-jobs.buildset-registry:5000".keypair[0].key`},
		{"/etc/buildkit/client.crt", `registry."zuul-jobs.buildset-registry:5000".keypair[0].cert`},
		{"/etc/buildkit/tls.crt", "grpc.tls.cert"},
		{"/etc/buildkit/tls.key", "grpc.tls.key"},
		{"/etc/buildkit/tlsca.crt", "grpc.tls.ca"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("referencedFiles:\n got %v\nwant %v", got, want)
	}
	if _, err := referencedFiles([]byte("[registry.\"x\"]\n  ca = [1]\n")); err == nil || !strings.Contains(err.Error(), `registry."x".ca[0] must be a string`) {
		t.Errorf("a CA that is not a string: %v", err)
	}
	if _, err := referencedFiles([]byte("[registry\n")); err == nil || !strings.Contains(err.Error(), "not valid TOML at line 1") {
		t.Errorf("invalid TOML: %v", err)
	}
}

// TestDesiredAndSameAs: the record covers the binary, the configuration
// and the files it names (relative to the configuration's directory), and
// says which of them changed.
func TestDesiredAndSameAs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "buildkitd")
	cfg := filepath.Join(dir, "buildkitd.toml")
	ca := filepath.Join(dir, "ca.crt")
	for p, c := range map[string]string{bin: "binary v1", ca: "ca v1", cfg: "[registry.\"r:5000\"]\n  ca = [\"ca.crt\"]\n"} {
		if err := os.WriteFile(p, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := Spec{Binary: bin, Config: cfg, Address: "unix://" + filepath.Join(dir, "bk.sock"), Root: filepath.Join(dir, "root"),
		Manager: Process, Pidfile: filepath.Join(dir, "pid"), LogFile: filepath.Join(dir, "log"), Unit: "u", StartTimeout: time.Second}
	r1, err := desired(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.Files) != 3 || r1.Files[ca] == "" {
		t.Fatalf("record files %v", r1.Files)
	}
	same := func(what string, want bool, reason string) {
		t.Helper()
		r2, err := desired(s)
		if err != nil {
			t.Fatal(err)
		}
		ok, why := r1.sameAs(r2)
		if ok != want || !strings.Contains(why, reason) {
			t.Errorf("%s: sameAs = %v, %q; want %v, %q", what, ok, why, want, reason)
		}
	}
	same("nothing changed", true, "")
	os.WriteFile(ca, []byte("ca v2"), 0o644)
	same("the CA changed", false, ca+" changed since it started")
	os.WriteFile(ca, []byte("ca v1"), 0o644)
	s.Group = "builders"
	same("the command line changed", false, "command line changed")
	s.Group = ""
	os.WriteFile(cfg, nil, 0o644)
	same("the configuration no longer names the CA", false, "changed since it started")
	os.Remove(ca)
	os.WriteFile(cfg, []byte("[registry.\"r:5000\"]\n  ca = [\"ca.crt\"]\n"), 0o644)
	if _, err := desired(s); err == nil || !strings.Contains(err.Error(), "names ca.crt") {
		t.Errorf("a missing CA: %v", err)
	}
}
