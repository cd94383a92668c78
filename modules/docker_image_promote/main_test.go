package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

// lib holds the module, built once as `make build` builds it, beside its
// documentation.
var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "docker_image_promote") }

// moduleBin returns the path of the module binary.
func moduleBin() string { return lib.Bin("docker_image_promote") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "docker_image_promote.yml", params{})
	ansibletest.CheckReturn(t, "docker_image_promote.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "docker_image_promote",
		"docker_credentials", "stale_tag_age", "docker_hub_url", "EXAMPLES", "RETURN VALUES", "already_promoted")
}

const password = `pw-"quoted"\-7c3e1f`

func baseArgs() map[string]any {
	return map[string]any{
		"docker_images":      []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest"}}},
		"docker_credentials": map[string]any{"username": "zuul", "password": password},
		"docker_registry":    "registry.invalid:5000",
		"zuul":               map[string]any{"change": "12", "pipeline": "promote"},
	}
}

// TestBadInput: each bad input fails, with a message naming the parameter
// (or the image and tag) and what to fix, and the password nowhere.
func TestBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(a map[string]any)
		want   string
	}{
		{"no credentials", func(a map[string]any) { delete(a, "docker_credentials") }, "parameter docker_credentials: is required"},
		{"no password", func(a map[string]any) { a["docker_credentials"] = map[string]any{"username": "zuul"} }, "docker_credentials.password: is required"},
		{"no zuul", func(a map[string]any) { delete(a, "zuul") }, "parameter zuul: is required"},
		{"no change, no pipeline", func(a map[string]any) { a["zuul"] = map[string]any{"project": map[string]any{}} }, "zuul.change and zuul.pipeline are both empty"},
		{"malformed regex", func(a map[string]any) {
			a["docker_credentials"] = map[string]any{"username": "zuul", "password": password, "repository": "^myorg/[app"}
		}, `docker_credentials.repository "^myorg/[app" is not a valid regular expression`},
		{"not permitted", func(a map[string]any) {
			a["docker_credentials"] = map[string]any{"username": "zuul", "password": password, "repository": "^otherorg/"}
		}, `docker_images[0] (myorg/app): repository myorg/app not permitted by docker_credentials.repository "^otherorg/"`},
		{"duplicate tags", func(a map[string]any) {
			a["docker_images"] = []any{map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "latest"}}}
		}, `docker_images[0] (myorg/app): tag "latest" is listed twice`},
		{"registry with a scheme", func(a map[string]any) { a["docker_registry"] = "https://quay.io" }, `docker_registry "https://quay.io": give the registry as host[:port]`},
		{"unknown registry", func(a map[string]any) {}, "reaching the registry registry.invalid:5000"},
		{"image without repository", func(a map[string]any) {
			a["docker_images"] = []any{map[string]any{"context": "."}}
		}, "docker_images[0].repository: is required"},
		{"bad jobs", func(a map[string]any) { a["jobs"] = 0 }, "jobs must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := baseArgs()
			tc.modify(args)
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, password)
		})
	}
}
