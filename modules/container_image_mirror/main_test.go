package main

import (
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
)

var lib ansibletest.Library

func TestMain(m *testing.M) { ansibletest.Main(m, &lib, "container_image_mirror") }

func moduleBin() string { return lib.Bin("container_image_mirror") }

func TestDocs(t *testing.T) {
	t.Parallel()
	ansibletest.CheckDocs(t, "container_image_mirror.yml", params{})
	ansibletest.CheckReturn(t, "container_image_mirror.yml", run)
}

// TestAnsibleDoc renders the sidecar documentation with the real
// ansible-doc.
func TestAnsibleDoc(t *testing.T) {
	t.Parallel()
	ansibletest.CheckAnsibleDoc(t, lib, "container_image_mirror", "container_registry_credentials", "EXAMPLES", "RETURN VALUES")
}

const password = `pw-"quoted"\-5a1b`

// TestBadInput: each bad input fails, naming the image and what to fix,
// and the password never shows.
func TestBadInput(t *testing.T) {
	t.Parallel()
	base := func() map[string]any {
		return map[string]any{
			"mirror_container_images_images": []any{map[string]any{"src_repository": "registry.invalid/library/app", "src_tag": "1",
				"dest_repository": "quay.io/myorg/app", "dest_tag": "1", "dest_registry": "quay.io"}},
			"container_registry_credentials": map[string]any{
				"quay.io": map[string]any{"username": "u", "password": password, "repository": "^quay.io/myorg/"}},
		}
	}
	image := func(a map[string]any) map[string]any {
		return a["mirror_container_images_images"].([]any)[0].(map[string]any)
	}
	tests := []struct {
		name   string
		modify func(a map[string]any)
		want   string
	}{
		{"no credentials", func(a map[string]any) { delete(a, "container_registry_credentials") }, "container_registry_credentials: is required"},
		{"missing key", func(a map[string]any) { delete(image(a), "dest_registry") }, "dest_registry"},
		{"no entry for the destination", func(a map[string]any) { image(a)["dest_registry"] = "ghcr.io" },
			`mirror_container_images_images[0] (quay.io/myorg/app): container_registry_credentials has no entry for registry "ghcr.io"`},
		{"destination outside the regex", func(a map[string]any) { image(a)["dest_repository"] = "quay.io/other/app" },
			`mirror_container_images_images[0]: quay.io/other/app not permitted by container_registry_credentials["quay.io"].repository`},
		{"regex that does not compile", func(a map[string]any) {
			a["container_registry_credentials"].(map[string]any)["quay.io"].(map[string]any)["repository"] = "^quay.io/(myorg"
		}, `container_registry_credentials["quay.io"].repository "^quay.io/(myorg" is not a valid regular expression`},
		{"source without registry", func(a map[string]any) { image(a)["src_repository"] = "library/app" }, "must include its registry"},
		{"unreachable source", func(a map[string]any) {}, "registry.invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := base()
			tc.modify(args)
			o := ansibletest.RunBinary(t, moduleBin(), args)
			o.CheckFailure(t, tc.want)
			o.CheckNoSecrets(t, password)
		})
	}
}
