package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "quay_repository") }

func moduleBin() string { return lib.Bin("quay_repository") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "quay_repository.yml", params{})
	ansibletest.CheckReturn(t, "quay_repository.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "quay_repository", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}

const token = "tok-4e7a0c91"

// TestBadInput: each bad input fails, naming the entry and what to fix,
// and the token never shows.
func TestBadInput(t *testing.T) {
	t.Parallel()
	base := func() map[string]any {
		return map[string]any{
			"container_images": []any{map[string]any{"context": ".", "registry": "quay.io", "repository": "quay.io/myorg/app",
				"namespace": "myorg", "repo_shortname": "app", "tags": []any{"latest"}}},
			"container_registry_credentials": map[string]any{
				"quay.io": map[string]any{"api_token": token, "repository": "^quay.io/myorg/", "api_url": "https://quay.invalid"}},
		}
	}
	image := func(a map[string]any) map[string]any { return a["container_images"].([]any)[0].(map[string]any) }
	tests := []struct {
		name   string
		modify func(a map[string]any)
		want   string
	}{
		{"no credentials entry", func(a map[string]any) { image(a)["registry"] = "quay.example.org" },
			`container_images[0]: container_registry_credentials has no entry for registry "quay.example.org"`},
		{"outside the regex", func(a map[string]any) { image(a)["namespace"], image(a)["repository"] = "other", "quay.io/other/app" },
			`quay.io/other/app not permitted by container_registry_credentials["quay.io"].repository`},
		{"bad visibility", func(a map[string]any) { image(a)["visibility"] = "internal" }, "must be one of: public, private"},
		{"unknown key", func(a map[string]any) { image(a)["repo_name"] = "x" }, "repo_name"},
		{"unreachable quay", func(a map[string]any) {}, "quay.invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := base()
			tc.modify(args)
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, token)
		})
	}
}
