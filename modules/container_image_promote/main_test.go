package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "container_image_promote") }

func moduleBin() string { return lib.Bin("container_image_promote") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "container_image_promote.yml", params{})
	ansibletest.CheckReturn(t, "container_image_promote.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "container_image_promote",
		"container_registry_credentials", "promote_container_image_method", "EXAMPLES", "RETURN VALUES")
}

const password = `pw-"quoted"\-7c3e1f`
const token = "tok-9d2b77a1e0"

func baseArgs() map[string]any {
	return map[string]any{
		"container_images": []any{map[string]any{"context": ".", "registry": "registry.invalid:5000",
			"repository": "registry.invalid:5000/myorg/app", "tags": []any{"latest"}}},
		"container_registry_credentials": map[string]any{"registry.invalid:5000": map[string]any{
			"username": "zuul", "password": password, "api_token": token, "repository": "^registry.invalid:5000/myorg/"}},
		"zuul": map[string]any{"change": "12", "patchset": "1", "pipeline": "promote"},
	}
}

// TestBadInput: each bad input fails, naming the parameter or the image
// and what to fix, and neither the password nor the token shows.
func TestBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(a map[string]any)
		want   string
	}{
		{"no credentials", func(a map[string]any) { delete(a, "container_registry_credentials") }, "parameter container_registry_credentials: is required"},
		{"no entry for the registry", func(a map[string]any) {
			a["container_images"].([]any)[0].(map[string]any)["registry"] = "quay.io"
		}, `container_images[0] (registry.invalid:5000/myorg/app): container_registry_credentials has no entry for registry "quay.io"`},
		{"not permitted", func(a map[string]any) {
			a["container_images"].([]any)[0].(map[string]any)["repository"] = "registry.invalid:5000/other/app"
		}, `container_images[0]: registry.invalid:5000/other/app not permitted by container_registry_credentials["registry.invalid:5000"].repository`},
		{"bad type", func(a map[string]any) {
			a["container_registry_credentials"].(map[string]any)["registry.invalid:5000"].(map[string]any)["type"] = "ghcr"
		}, `container_registry_credentials.registry.invalid:5000.type: must be one of: docker, quay, generic`},
		{"unknown key", func(a map[string]any) {
			a["container_registry_credentials"].(map[string]any)["registry.invalid:5000"].(map[string]any)["passwd"] = "x"
		}, `Unsupported parameters in container_registry_credentials.registry.invalid:5000: passwd`},
		{"bad method", func(a map[string]any) { a["promote_container_image_method"] = "copy" }, "promote_container_image_method: must be one of: tag, intermediate-registry"},
		{"intermediate without api", func(a map[string]any) { a["promote_container_image_method"] = "intermediate-registry" }, "promote_container_image_api is required"},
		{"plain http api", func(a map[string]any) {
			a["promote_container_image_method"] = "intermediate-registry"
			a["promote_container_image_api"] = "http://zuul.invalid/api/tenant/t"
			a["promote_container_image_pipeline"], a["promote_container_image_job"] = "gate", "upload"
		}, "promote_container_image_api \"http://zuul.invalid/api/tenant/t\": must be https://"},
		{"insecure registry with a scheme", func(a map[string]any) { a["insecure_registries"] = []any{"http://registry.invalid:5000"} },
			`insecure_registries: insecure registry "http://registry.invalid:5000"`},
		{"unreachable registry", func(a map[string]any) {}, "reaching the registry registry.invalid:5000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := baseArgs()
			tc.modify(args)
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, password, token)
		})
	}
}
