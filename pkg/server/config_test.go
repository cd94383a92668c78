package server

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const minimal = `
users:
  - name: zuul
    password: secret
    access: write
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listen) != 1 || cfg.Listen[0] != DefaultListen || cfg.StateDir != DefaultStateDir ||
		cfg.Storage.Driver != "filesystem" || cfg.Storage.Filesystem.Root != DefaultStateDir+"/storage" ||
		!*cfg.AnonymousRead || time.Duration(cfg.Prune.GracePeriod) != time.Hour ||
		time.Duration(cfg.Prune.UploadMaxAge) != time.Hour || cfg.Prune.Expiration != 0 ||
		time.Duration(cfg.ShutdownTimeout) != DefaultShutdownTimeout {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestParseConfigS3Defaults checks the S3 settings left out: blob redirects
// off, their expiry the driver's default (20m).
func TestParseConfigS3Defaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal+"storage:\n  driver: s3\n  s3:\n    bucket: b\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Storage.S3
	if s.Redirect || time.Duration(s.RedirectExpiry) != 20*time.Minute || s.PathStyle || s.ConsistentListing {
		t.Fatalf("s3 defaults: %+v", s)
	}
}

func TestParseConfigEnvironment(t *testing.T) {
	vars := map[string]string{
		"ZUUL_PASSWORD": `p@ss: "quoted" # not a comment`,
		"READER":        "reader-password",
		"S3_KEY":        "AKIA",
		"S3_SECRET":     "s3cr3t",
		"PATH_STYLE":    "true",
		"TOKEN":         strings.Repeat("k", 32),
	}
	cfg, err := ParseConfig([]byte(`
listen: ["127.0.0.1:5000", "[::1]:5000"]
state_dir: /srv/ir
public_url: https://registry.example.org/
token_key_env: TOKEN
anonymous_read: false
users:
  - name: zuul
    password: ${ZUUL_PASSWORD}
    access: write
  - name: reader
    password_env: READER
    access: read
storage:
  driver: s3
  s3:
    bucket: images
    endpoint: https://s3.example.org
    region: eu-west-1
    path_style: ${PATH_STYLE}
    access_key_id: ${S3_KEY}
    secret_access_key_env: S3_SECRET
    part_size: 16MiB
    prefix: ir/$${literal}
    redirect: true
    redirect_expiry: 1h
prune:
  expiration: 30d
  grace_period: 2h
  schedule: 6h
shutdown_timeout: 45s
shutdown_delay: 10s
`), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Users[0].Password != vars["ZUUL_PASSWORD"] || cfg.Users[1].Password != "reader-password" {
		t.Errorf("passwords %q, %q", cfg.Users[0].Password, cfg.Users[1].Password)
	}
	s := cfg.Storage.S3
	if s.AccessKeyID != "AKIA" || s.SecretAccessKey != "s3cr3t" || !s.PathStyle || s.PartSize != 16<<20 || s.Prefix != "ir/${literal}" ||
		!s.Redirect || time.Duration(s.RedirectExpiry) != time.Hour {
		t.Errorf("s3: %+v", s)
	}
	if time.Duration(cfg.Prune.Expiration) != 30*24*time.Hour || time.Duration(cfg.Prune.Schedule) != 6*time.Hour ||
		time.Duration(cfg.Prune.GracePeriod) != 2*time.Hour || time.Duration(cfg.ShutdownTimeout) != 45*time.Second ||
		time.Duration(cfg.ShutdownDelay) != 10*time.Second {
		t.Errorf("durations: %+v, %v, %v", cfg.Prune, cfg.ShutdownTimeout, cfg.ShutdownDelay)
	}
	if cfg.PublicURL != "https://registry.example.org" || cfg.TokenKey != vars["TOKEN"] || *cfg.AnonymousRead {
		t.Errorf("%q %q %v", cfg.PublicURL, cfg.TokenKey, *cfg.AnonymousRead)
	}
}

// TestParseConfigRefuses checks that every bad configuration is refused
// with a message naming the setting (and never echoing a secret).
func TestParseConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty", ``, []string{"empty"}},
		{"unknown top-level key", minimal + "listne: [':5000']\n", []string{`unknown setting "listne"`, "line 6", "listen"}},
		{"unknown nested key", minimal + "storage:\n  s3:\n    bucket: b\n    acess_key_id: x\n", []string{`unknown setting "storage.s3.acess_key_id"`, "line 9"}},
		{"unknown user key", "users:\n  - name: a\n    passwd: x\n    access: write\n", []string{`unknown setting "users[0].passwd"`}},
		{"user without password", "users:\n  - name: zuul\n    access: write\n", []string{"users[0] (zuul)", "no password", "password_env"}},
		{"user with empty password env", "users:\n  - name: zuul\n    password_env: NOPE\n    access: write\n", []string{"users[0] (zuul)", "NOPE", "not set"}},
		{"user password twice", "users:\n  - name: zuul\n    password: a\n    password_env: SET\n    access: write\n", []string{"users[0] (zuul)", "both set"}},
		{"user without name", "users:\n  - password: x\n    access: write\n", []string{"users[0]", "name"}},
		{"user twice", minimal + "  - name: zuul\n    password: y\n    access: read\n", []string{"users[1] (zuul)", "twice"}},
		{"bad access", "users:\n  - name: a\n    password: x\n    access: admin\n", []string{"admin", "read", "write"}},
		{"no access", "users:\n  - name: a\n    password: x\n", []string{"users[0] (a)", "access"}},
		{"nobody", "anonymous_read: false\n", []string{"users is empty", "anonymous_read"}},
		{"unset variable", "users:\n  - name: a\n    password: ${UNSET_VAR}\n    access: write\n", []string{"UNSET_VAR", "line 3"}},
		{"s3 without bucket", minimal + "storage:\n  driver: s3\n", []string{"storage.s3.bucket"}},
		{"s3 half credentials", minimal + "storage:\n  driver: s3\n  s3:\n    bucket: b\n    access_key_id: a\n", []string{"storage.s3.access_key_id and storage.s3.secret_access_key"}},
		{"s3 bad endpoint", minimal + "storage:\n  driver: s3\n  s3:\n    bucket: b\n    endpoint: s3.example.org\n", []string{"storage.s3.endpoint"}},
		{"s3 redirect expiry too long", minimal + "storage:\n  driver: s3\n  s3:\n    bucket: b\n    redirect: true\n    redirect_expiry: 8d\n", []string{"storage.s3.redirect_expiry", "7d"}},
		{"s3 redirect expiry too short", minimal + "storage:\n  driver: s3\n  s3:\n    bucket: b\n    redirect_expiry: 10ms\n", []string{"storage.s3.redirect_expiry", "1s"}},
		{"s3 redirect not a boolean", minimal + "storage:\n  driver: s3\n  s3:\n    bucket: b\n    redirect: sometimes\n", []string{"sometimes", "bool"}},
		{"bad driver", minimal + "storage:\n  driver: gcs\n", []string{"storage.driver", "gcs"}},
		{"half tls", minimal + "tls:\n  cert: /c.pem\n", []string{"tls.cert and tls.key"}},
		{"short token key", minimal + "token_key: short\n", []string{"token_key", "32"}},
		{"bad listen", minimal + "listen: [5000]\n", []string{"listen[0]"}},
		{"bad duration", minimal + "prune:\n  expiration: soon\n", []string{"soon"}},
		{"bad size", minimal + "storage:\n  s3:\n    part_size: big\n", []string{"big"}},
		{"http public url", minimal + "public_url: http://x\n", []string{"public_url"}},
		{"bad log level", minimal + "log:\n  level: loud\n", []string{"log.level"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), env(map[string]string{"NOPE": "", "SET": "x"}))
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
