package zuul

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStagingTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		vars Vars
		want string
		err  bool
	}{
		{Vars{Change: "123", Pipeline: "gate"}, "change_123_latest", false},
		{Vars{Pipeline: "periodic"}, "periodic_latest", false},
		{Vars{}, "", true},
	}
	for _, tc := range tests {
		got, err := tc.vars.StagingTag("latest")
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%+v: got %q, %v", tc.vars, got, err)
		}
	}
}

func TestIsStagingTag(t *testing.T) {
	t.Parallel()
	for tag, want := range map[string]bool{
		"change_12_latest": true, "change_x_latest": false, "latest": false,
		"periodic_latest": true, "v1.0": false, "changes_1_x": false,
	} {
		if got := IsStagingTag(tag, "periodic"); got != want {
			t.Errorf("IsStagingTag(%q) = %v", tag, got)
		}
	}
}

func TestVarsLenient(t *testing.T) {
	t.Parallel()
	var v Vars
	err := json.Unmarshal([]byte(`{"change": 42, "patchset": "3", "build": "abc", "pipeline": "gate",
		"project": {"src_dir": "src/x"}, "unknown": {"a": 1},
		"artifacts": [{"name": "n", "url": "docker://h:5000/r:b_t", "change": 41, "metadata": {"type": "container_image", "repository": "r", "tag": "t"}}]}`), &v)
	if err != nil {
		t.Fatal(err)
	}
	if v.Change != "42" || v.Patchset != "3" || v.Project.SrcDir != "src/x" || v.Artifacts[0].Change != "41" {
		t.Errorf("vars = %+v", v)
	}
	img, ok, err := v.Artifacts[0].ContainerImage()
	if !ok || err != nil || img.Ref != "h:5000/r:b_t" || img.Repository != "r" || img.Tag != "t" {
		t.Errorf("image = %+v %v %v", img, ok, err)
	}
}

func TestContainerImageArtifacts(t *testing.T) {
	t.Parallel()
	a := NewContainerImageArtifact("2001:db8::5", 5000, "myorg/app", "latest", "b1c2_latest")
	if a.URL != "docker://[2001:db8::5]:5000/myorg/app:b1c2_latest" || a.Name != "myorg/app:latest" {
		t.Errorf("artifact = %+v", a)
	}
	for _, tc := range []struct {
		a      Artifact
		ok     bool
		errSub string
	}{
		{Artifact{Name: "docs"}, false, ""},
		{Artifact{Name: "x", Metadata: map[string]any{"type": "zuul_manifest"}}, false, ""},
		{Artifact{Name: "bad", URL: "http://x/y", Metadata: map[string]any{"type": "container_image", "repository": "r", "tag": "t"}}, true, `artifact "bad": url`},
		{Artifact{Name: "nometa", URL: "docker://x/y:z", Metadata: map[string]any{"type": "container_image"}}, true, "metadata.repository"},
	} {
		_, ok, err := tc.a.ContainerImage()
		if ok != tc.ok || (tc.errSub == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errSub)) {
			t.Errorf("%+v: ok=%v err=%v", tc.a, ok, err)
		}
	}
}

func TestStripDockerIO(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"docker.io/myorg/app": "myorg/app", "myorg/app": "myorg/app",
		"quay.io/myorg/app": "quay.io/myorg/app", "index.docker.io/library/x": "library/x",
	} {
		if got := StripDockerIO(in); got != want {
			t.Errorf("StripDockerIO(%q) = %q", in, got)
		}
	}
}

func TestLoadBuildsetRegistry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "results.json")
	if _, err := LoadBuildsetRegistry(f); err == nil || !strings.Contains(err.Error(), "no secret_data.buildset_registry") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(f, []byte(""), 0o600)
	if _, err := LoadBuildsetRegistry(f); err == nil {
		t.Error("empty file accepted")
	}
	cert := "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\nDgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow\nEjEQMA4GA1UEChMHQWNtZSBDbzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABD0d\n7VNhbWvZLWPuj/RtHFjvtJBEwOkhbN/BnnE8rnZR8+sbwnc/KhCk3FhnpHZnQz7B\n5aETbbIgmuvewdjvSBSjYzBhMA4GA1UdDwEB/wQEAwICpDATBgNVHSUEDDAKBggr\nBgEFBQcDATAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDmxvY2FsaG9zdDo1\nNDUzgg4xMjcuMC4wLjE6NTQ1MzAKBggqhkjOPQQDAgNIADBFAiEA2zpJEPQyz6/l\nWf86aX6PepsntZv2GYlA5UpabfT2EZICICpJ5h/iI+i341gBmLiAFQOyTDT+/wQc\n6MF9+Yw1Yy0t\n-----END CERTIFICATE-----\n"
	doc := map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": map[string]any{
		"host": "10.0.0.5", "port": 5000, "username": "zuul", "password": "pw", "cert": cert}}}
	b, _ := json.Marshal(doc)
	os.WriteFile(f, b, 0o600)
	br, err := LoadBuildsetRegistry(f)
	if err != nil {
		t.Fatal(err)
	}
	if br.Location() != "zuul-jobs.buildset-registry:5000" || br.Address() != "10.0.0.5:5000" {
		t.Errorf("location %s address %s", br.Location(), br.Address())
	}
	br.Host = "registry.example.org"
	if br.Location() != "registry.example.org:5000" {
		t.Errorf("location %s", br.Location())
	}
}
