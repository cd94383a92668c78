package server_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/server"
)

// swiftStorage is the storage section of a configuration for a container
// of sw, with v1 auth (tempauth); the key comes from TEST_SWIFT_KEY.
func swiftStorage(sw *testenv.Swift, container string) string {
	return fmt.Sprintf(`storage:
  driver: swift
  swift:
    container: %s
    auth_url: %s
    user: "%s"
    key_env: TEST_SWIFT_KEY
    ca_file: %s
    segment_size: 4MiB
`, container, sw.AuthURL, sw.User, sw.CAFile)
}

// TestConformanceSwift runs the OCI distribution-spec conformance suite
// against the registry service on a real Swift (tempauth), with segments
// of 4 MiB so that the suite's larger blobs are static large objects.
func TestConformanceSwift(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	r := start(t, t.TempDir(), swiftStorage(sw, sw.NewContainerName(t)), map[string]string{"TEST_SWIFT_KEY": sw.Key})
	runConformance(t, r)
}

// TestReplicasShareAContainer runs two servers on one Swift container.
func TestReplicasShareAContainer(t *testing.T) {
	testenv.RequireSwiftFull(t)
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	testReplicas(t, swiftStorage(sw, sw.NewContainerName(t)), map[string]string{"TEST_SWIFT_KEY": sw.Key}, "")
}

// TestZuulRegistryConfigKeystone runs the server from zuul-registry's
// registry.yaml on Swift behind a real Keystone, the cloud read from
// clouds.yaml (OS_CLIENT_CONFIG_FILE) as zuul-registry reads it: with a
// password and with an application credential an image is pushed and
// pulled back; a wrong password and a missing cloud refuse the start,
// naming the cause, and no error or debug log carries a secret.
func TestZuulRegistryConfigKeystone(t *testing.T) {
	sw := testenv.StartSwift(t, testenv.SwiftOptions{Keystone: true})
	k := sw.Keystone
	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(clouds, []byte(fmt.Sprintf(`clouds:
  password:
    auth:
      auth_url: %[1]s
      username: %[2]s
      password: %[3]s
      project_name: %[4]s
      user_domain_name: Default
      project_domain_name: Default
    region_name: %[5]s
    cacert: %[6]s
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: %[1]s
      application_credential_id: %[7]s
      application_credential_secret: %[8]s
    region_name: %[5]s
    cacert: %[6]s
  wrong:
    auth:
      auth_url: %[1]s
      username: %[2]s
      password: wrong-%[3]s
      project_name: %[4]s
      user_domain_name: Default
      project_domain_name: Default
    region_name: %[5]s
    cacert: %[6]s
`, k.URL, k.User, k.Password, k.Project, k.Region, sw.CAFile, k.AppCredID, k.AppCredSecret)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", clouds)
	secrets := []string{k.Password, k.AppCredSecret, k.AdminPassword}
	zuulConfig := func(cloud string) string {
		return fmt.Sprintf(`registry:
  address: 127.0.0.1
  port: 0
  secret: "%%(ZUUL_REGISTRY_SECRET)"
  users:
    - name: zuul
      pass: "%%(ZUUL_REGISTRY_PASSWORD)"
      access: write
  storage:
    driver: swift
    cloud: %s
    container: %s
    expiration: 3600
`, cloud, sw.NewContainerName(t))
	}
	password := registrytest.RandomPassword(t)
	vars := map[string]string{"ZUUL_REGISTRY_SECRET": "s3cret", "ZUUL_REGISTRY_PASSWORD": password}
	getenv := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for _, cloud := range []string{"password", "appcred"} {
		t.Run(cloud, func(t *testing.T) {
			cfg, err := server.ParseConfig([]byte(zuulConfig(cloud)), getenv)
			if err != nil {
				t.Fatal(err)
			}
			cfg.StateDir = t.TempDir()
			logs := &testenv.SyncBuffer{}
			r := startConfig(t, cfg, "zuul", password, logs)
			img, err := random.Image(6<<20, 2)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := name.ParseReference(r.host + "/zuul/app:v1")
			if err := remote.Write(ref, img, r.remoteOpts()...); err != nil {
				t.Fatalf("push: %v", err)
			}
			// Anonymous pull, as zuul-registry allows.
			got, err := remote.Image(ref, remote.WithAuth(authn.Anonymous), remote.WithTransport(r.client.Transport))
			if err != nil {
				t.Fatalf("anonymous pull: %v", err)
			}
			if a, b := testenv.DigestOf(t, got), testenv.DigestOf(t, img); a != b {
				t.Fatalf("pulled %s, want %s", a, b)
			}
			layers, _ := got.Layers()
			for _, l := range layers {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ioCopyDiscard(rc); err != nil {
					t.Fatalf("layer: %v", err)
				}
			}
			for _, s := range secrets {
				if strings.Contains(logs.String(), s) {
					t.Error("the log carries a Keystone secret")
				}
			}
		})
	}
	for _, tc := range []struct{ cloud, want string }{
		{"wrong", "refused the credentials"},
		{"nope", `cloud "nope" not found`},
	} {
		t.Run(tc.cloud, func(t *testing.T) {
			cfg, err := server.ParseConfig([]byte(zuulConfig(tc.cloud)), getenv)
			if err != nil {
				t.Fatal(err)
			}
			cfg.StateDir = t.TempDir()
			logs := &testenv.SyncBuffer{}
			_, err = server.New(t.Context(), cfg, server.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "storage.swift") {
				t.Fatalf("server.New: %v, want an error naming storage.swift and %q", err, tc.want)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q carries a secret", err)
				}
				if strings.Contains(logs.String(), s) {
					t.Error("the debug log carries a secret")
				}
			}
		})
	}
}
