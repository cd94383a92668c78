package server

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

// TestZuulConfig maps zuul-registry's registry.yaml (as its docs and the
// Zuul operator write it) onto the server's settings, placeholders from
// the environment included.
func TestZuulConfig(t *testing.T) {
	vars := map[string]string{"ZUUL_REGISTRY_secret": "42", "ZUUL_REGISTRY_username": "zuul", "ZUUL_REGISTRY_password": `p@ss: "x" # y`}
	cfg, err := ParseConfig([]byte(`
registry:
  address: '0.0.0.0'
  port: 9000
  public-url: https://registry.example.org:9000
  tls-cert: /etc/zuul-registry/tls.crt
  tls-key: /etc/zuul-registry/tls.key
  secret: "%(ZUUL_REGISTRY_secret)"
  storage:
    driver: swift
    cloud: registry
    container: zuul-registry
    expiration: 86400
  users:
    - name: "%(ZUUL_REGISTRY_username)"
      pass: "%(ZUUL_REGISTRY_password)s"
      access: write
    - name: reader
      pass: readpass
      access: read
`), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	key := sha256.Sum256([]byte("42"))
	if cfg.Schema != "zuul-registry" || len(cfg.Listen) != 1 || cfg.Listen[0] != "0.0.0.0:9000" ||
		cfg.PublicURL != "https://registry.example.org:9000" || cfg.TLS.Cert != "/etc/zuul-registry/tls.crt" ||
		cfg.TLS.Key != "/etc/zuul-registry/tls.key" || cfg.TokenKey != string(key[:]) || !*cfg.AnonymousRead {
		t.Errorf("registry settings: %+v", cfg)
	}
	if len(cfg.Users) != 2 || cfg.Users[0].Name != "zuul" || cfg.Users[0].Password != vars["ZUUL_REGISTRY_password"] ||
		cfg.Users[0].Access != "write" || cfg.Users[1].Access != "read" {
		t.Errorf("users: %+v", cfg.Users)
	}
	if s := cfg.Storage; s.Driver != "swift" || s.Swift.Cloud != "registry" || s.Swift.Container != "zuul-registry" ||
		time.Duration(cfg.Prune.Expiration) != 24*time.Hour || cfg.Prune.Schedule != 0 {
		t.Errorf("storage and prune: %+v %+v", s, cfg.Prune)
	}
	fs, err := ParseConfig([]byte("registry:\n  storage:\n    driver: filesystem\n    root: /storage\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if fs.Storage.Driver != "filesystem" || fs.Storage.Filesystem.Root != "/storage" || fs.Listen[0] != ":5000" || fs.TokenKey != "" {
		t.Errorf("filesystem: %+v", fs)
	}
}

// TestZuulConfigRefuses checks that zuul-registry configurations the
// server cannot honour are refused, naming the key.
func TestZuulConfigRefuses(t *testing.T) {
	base := "registry:\n  storage:\n    driver: filesystem\n    root: /storage\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", base + "  namespaces: true\n", []string{`unknown setting "registry.namespaces"`, "public-url"}},
		{"unknown storage key", "registry:\n  storage:\n    driver: swift\n    cloud: c\n    container: x\n    region: r\n", []string{`"registry.storage.region"`}},
		{"unknown user key", base + "  users:\n    - name: a\n      password: x\n      access: write\n", []string{`"registry.users[0].password"`}},
		{"unset placeholder", base + "  secret: \"%(ZUUL_UNSET)\"\n", []string{"ZUUL_UNSET", "not set"}},
		{"no driver", "registry:\n  port: 9000\n", []string{"registry.storage.driver"}},
		{"s3 driver", "registry:\n  storage:\n    driver: s3\n", []string{`"s3"`, "filesystem or swift"}},
		{"swift without container", "registry:\n  storage:\n    driver: swift\n    cloud: c\n", []string{"cloud", "container"}},
		{"filesystem without root", "registry:\n  storage:\n    driver: filesystem\n", []string{"registry.storage.root"}},
		{"user without pass", base + "  users:\n    - name: a\n      access: write\n", []string{"registry.users[0] (a)", "pass"}},
		{"bad access", base + "  users:\n    - name: a\n      pass: x\n      access: admin\n", []string{"admin", "read or write"}},
		{"bad expiration", base + "    expiration: -1\n", []string{"registry.storage.expiration"}},
		{"http public url", base + "  public-url: http://x\n", []string{"public_url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), env(nil))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestParseConfigSwift checks the Swift settings of imagegate's schema.
func TestParseConfigSwift(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal+`storage:
  driver: swift
  swift:
    container: images
    auth_url: https://swift.example.org/auth/v1.0
    user: "acct:user"
    key_env: SWIFT_KEY
    redirect: true
    temp_url_key: ${TUK}
    segment_size: 256MiB
`), env(map[string]string{"SWIFT_KEY": "k", "TUK": "t"}))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Storage.Swift
	if s.Key != "k" || s.TempURLKey != "t" || s.SegmentSize != 256<<20 || time.Duration(s.RedirectExpiry) != 20*time.Minute {
		t.Errorf("swift: %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"storage:\n  driver: swift\n  swift:\n    cloud: c\n", "storage.swift.container"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    cloud: c\n    auth_url: https://x\n", "both set"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    auth_url: https://x\n", "storage.swift.user"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    user: u\n", "storage.swift.auth_url"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    segment_size: 1KiB\n", "storage.swift.segment_size"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    interface: private\n", "storage.swift.interface"},
		{"storage:\n  driver: swift\n  swift:\n    container: c\n    redirect_expiry: 8d\n", "storage.swift.redirect_expiry"},
	} {
		if _, err := ParseConfig([]byte(minimal+tc.yaml), env(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
