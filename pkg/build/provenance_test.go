package build

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestContextDigest: the digest follows what the context sends (content,
// modes, links) and not what .dockerignore excludes, nor times.
func TestContextDigest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM scratch\nCOPY . /\n", 0o644)
	write("src/app.sh", "echo hi\n", 0o755)
	write(".dockerignore", "build/\n", 0o644)
	digest := func() string {
		t.Helper()
		d, err := ContextDigest(ctx, dir, filepath.Join(dir, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	steps := []struct {
		name    string
		do      func()
		changes bool
	}{
		{"the same tree again", func() {}, false},
		{"a file .dockerignore excludes", func() { write("build/out.o", "object", 0o644) }, false},
		{"a new modification time", func() {
			old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
			if err := os.Chtimes(filepath.Join(dir, "src/app.sh"), old, old); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a file's content", func() { write("src/app.sh", "echo bye\n", 0o755) }, true},
		{"a file's mode", func() { write("src/app.sh", "echo bye\n", 0o644) }, true},
		{"a symbolic link", func() {
			if err := os.Symlink("src/app.sh", filepath.Join(dir, "run")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"Dockerfile's own ignore file", func() { write("Dockerfile.dockerignore", "src/\n", 0o644) }, true},
	}
	prev := digest()
	for _, s := range steps {
		s.do()
		got := digest()
		if (got != prev) != s.changes {
			t.Errorf("%s: digest %s after %s; changed %v, want %v", s.name, got, prev, got != prev, s.changes)
		}
		prev = got
	}
}

// TestProvenancePlan: provenance (on for an image that asks) adds the
// labels naming the Zuul build and the frontend attribute, for a push or
// an OCI export only.
func TestProvenancePlan(t *testing.T) {
	t.Parallel()
	z := zuul.Vars{Change: "42", Patchset: "3", Pipeline: "gate", Build: "b1", Job: "j", Project: zuul.Project{Name: "org/app"}}
	want := map[string]string{"org.zuul-ci.change": "42", "org.zuul-ci.patchset": "3", "org.zuul-ci.pipeline": "gate",
		"org.zuul-ci.build": "b1", "org.zuul-ci.project": "org/app", "org.zuul-ci.job": "j"}
	if got := z.ProvenanceLabels(); len(got) != len(want) {
		t.Fatalf("labels %v, want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("label %s = %q, want %q", k, got[k], v)
			}
		}
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		spec Spec
		want bool
	}{
		{"push", Spec{Provenance: true, Push: []string{"r/a:1"}}, true},
		{"dockerd only", Spec{Provenance: true, DockerNames: []string{"a:1"}}, false},
		{"off", Spec{Push: []string{"r/a:1"}}, false},
	} {
		tc.spec.ContextDir, tc.spec.DockerfileDir, tc.spec.Dockerfile = dir, dir, "Dockerfile"
		opt, err := tc.spec.solveOpt(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := opt.FrontendAttrs[attrProvenance]; ok != tc.want || (ok && got != ProvenanceMode) {
			t.Errorf("%s: attest:provenance = %q (%v), want %v", tc.name, got, ok, tc.want)
		}
	}
}
