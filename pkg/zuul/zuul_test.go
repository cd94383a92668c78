package zuul

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
		"artifacts": [{"name": "n", "url": "docker://h:5000/r:b_t", "change": 41, "patchset": "2", "project": {"odd": 1}, "job": "build", "metadata": {"type": "container_image", "repository": "r", "tag": "t"}}]}`), &v)
	if err != nil {
		t.Fatal(err)
	}
	if a := v.Artifacts[0]; a.Change != "41" || a.Patchset != "2" || a.Project != "" || a.Job != "build" {
		t.Errorf("artifact = %+v", a)
	}
	if v.Change != "42" || v.Patchset != "3" || v.Project.SrcDir != "src/x" || v.Artifacts[0].Name != "n" {
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

func TestResolveBuildsetRegistry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "results.json")
	vars := &Vars{Executor: Executor{ResultDataFile: f}}
	cert := "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\nDgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow\nEjEQMA4GA1UEChMHQWNtZSBDbzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABD0d\n7VNhbWvZLWPuj/RtHFjvtJBEwOkhbN/BnnE8rnZR8+sbwnc/KhCk3FhnpHZnQz7B\n5aETbbIgmuvewdjvSBSjYzBhMA4GA1UdDwEB/wQEAwICpDATBgNVHSUEDDAKBggr\nBgEFBQcDATAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDmxvY2FsaG9zdDo1\nNDUzgg4xMjcuMC4wLjE6NTQ1MzAKBggqhkjOPQQDAgNIADBFAiEA2zpJEPQyz6/l\nWf86aX6PepsntZv2GYlA5UpabfT2EZICICpJ5h/iI+i341gBmLiAFQOyTDT+/wQc\n6MF9+Yw1Yy0t\n-----END CERTIFICATE-----\n"
	good := map[string]any{"host": "10.0.0.5", "port": 5000, "username": "zuul", "password": "pw-from-file", "cert": cert}
	write := func(t *testing.T, content string) {
		t.Helper()
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := func(br any) string {
		b, _ := json.Marshal(map[string]any{"data": map[string]any{}, "secret_data": map[string]any{"buildset_registry": br}})
		return string(b)
	}
	tests := []struct {
		name    string
		vars    *Vars
		content string // "" leaves no file
		unknown bool
		want    string // a failure naming this; "" for success
	}{
		{"no vars", nil, "", true, "zuul.executor.result_data_file is empty"},
		{"no file named", &Vars{}, "", true, "zuul.executor.result_data_file is empty"},
		{"file missing", vars, "", true, f + " holds no secret_data.buildset_registry"},
		{"empty file", vars, " ", true, f + " holds no secret_data.buildset_registry"},
		{"no entry", vars, `{"data":{},"secret_data":{"other":1}}`, true, f + " holds no secret_data.buildset_registry"},
		{"corrupt file", vars, `{"secret_data":`, false, f},
		{"entry not a mapping", vars, doc("registry"), false, "secret_data.buildset_registry in " + f},
		{"entry without a cert", vars, doc(map[string]any{"host": "h", "port": 5000, "password": "pw-from-file"}), false, "secret_data.buildset_registry in " + f + ": buildset_registry.cert"},
		{"entry with a bad port", vars, doc(map[string]any{"host": "h", "port": 0, "password": "pw-from-file", "cert": cert}), false, "buildset_registry.port 0"},
		{"good", vars, doc(good), false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(f)
			if tc.content != "" {
				write(t, tc.content)
			}
			var secrets []string
			br, err := ResolveBuildsetRegistry(nil, tc.vars, func(s string) { secrets = append(secrets, s) })
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if br.Location() != "zuul-jobs.buildset-registry:5000" || br.Address() != "10.0.0.5:5000" || br.Password != "pw-from-file" {
					t.Errorf("location %s address %s", br.Location(), br.Address())
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
			if errors.Is(err, ErrNoBuildsetRegistry) != tc.unknown {
				t.Errorf("errors.Is(ErrNoBuildsetRegistry) = %v, want %v", !tc.unknown, tc.unknown)
			}
			if strings.Contains(tc.content, "pw-from-file") && !slices.Contains(secrets, "pw-from-file") {
				t.Errorf("the password read from the file was not given to redact (%v)", secrets)
			}
		})
	}
	// The parameter wins over the file, and is checked.
	write(t, doc(good))
	param := &BuildsetRegistry{Host: "registry.example.org", Port: 5000, Username: "zuul", Password: "pw-param", Cert: cert}
	br, err := ResolveBuildsetRegistry(param, vars, nil)
	if err != nil || br != param || br.Location() != "registry.example.org:5000" {
		t.Errorf("parameter: %v %v", br, err)
	}
	param.Cert = "not a certificate"
	if _, err := ResolveBuildsetRegistry(param, vars, nil); err == nil || !strings.Contains(err.Error(), "buildset_registry.cert") || errors.Is(err, ErrNoBuildsetRegistry) {
		t.Errorf("bad parameter: %v", err)
	}
}
