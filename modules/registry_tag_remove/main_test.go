package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "registry_tag_remove") }

func moduleBin() string { return lib.Bin("registry_tag_remove") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "registry_tag_remove.yml", params{})
	ansibletest.CheckReturn(t, "registry_tag_remove.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "registry_tag_remove", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}

const password = `pw-"quoted"\-7c3e1f`
const token = "tok-9d2b77a1e0"

// TestBadInput: each bad input fails, naming the parameter and what to
// fix, and neither the password nor the token shows.
func TestBadInput(t *testing.T) {
	t.Parallel()
	base := func() map[string]any {
		return map[string]any{
			"remove_registry_tag_repository": "quay.io/myorg/app",
			"container_registry_credentials": map[string]any{
				"quay.io":          map[string]any{"api_token": token, "repository": "^quay.io/myorg/"},
				"registry.invalid": map[string]any{"username": "u", "password": password},
			},
			"zuul": map[string]any{"pipeline": "promote"},
		}
	}
	tests := []struct {
		name   string
		modify func(a map[string]any)
		want   string
	}{
		{"no repository", func(a map[string]any) { delete(a, "remove_registry_tag_repository") }, "remove_registry_tag_repository: is required"},
		{"repository without a slash", func(a map[string]any) { a["remove_registry_tag_repository"] = "app" },
			`remove_registry_tag_repository "app" must be the full repository`},
		{"no credentials entry", func(a map[string]any) { a["remove_registry_tag_repository"] = "ghcr.io/myorg/app" },
			`container_registry_credentials has no entry for registry "ghcr.io"`},
		{"regex that does not compile", func(a map[string]any) { a["remove_registry_tag_regex"] = "^change_[" },
			`remove_registry_tag_regex "^change_[" is not a valid regular expression`},
		{"outside the entry's repository", func(a map[string]any) { a["remove_registry_tag_repository"] = "quay.io/other/app" },
			`quay.io/other/app not permitted by container_registry_credentials["quay.io"].repository`},
		{"bad type", func(a map[string]any) {
			a["container_registry_credentials"].(map[string]any)["quay.io"].(map[string]any)["type"] = "ghcr"
		}, "must be one of: docker, quay, generic"},
		{"age not a number", func(a map[string]any) { a["remove_registry_tag_age"] = "a day" }, "remove_registry_tag_age"},
		{"unreachable quay", func(a map[string]any) {
			a["container_registry_credentials"].(map[string]any)["quay.io"].(map[string]any)["api_url"] = "https://quay.invalid"
		}, "quay.invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := base()
			tc.modify(args)
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, password, token)
		})
	}
}
