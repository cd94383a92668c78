package ocilayout

import (
	"archive/tar"
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// tarball is an OCI layout tarball with one manifest blob named in its
// index.json, and (bad) a blob whose name is not its digest.
func tarball(t *testing.T, manifest string, bad bool) ([]byte, digest.Digest) {
	t.Helper()
	d := digest.FromString(manifest)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name, content string) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write([]byte(content))
	}
	add("oci-layout", layoutVersion)
	body := manifest
	if bad {
		body = manifest + "x"
	}
	add("blobs/sha256/"+d.Encoded(), body)
	add("index.json", `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+d.String()+`","size":`+
		strconv.Itoa(len(manifest))+`}]}`)
	tw.Close()
	return buf.Bytes(), d
}

func TestImportResolve(t *testing.T) {
	t.Parallel()
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tb, d := tarball(t, `{"a":1}`, false)
	desc, before, err := l.Import(bytes.NewReader(tb), []string{"org/app:1", "org/app:latest"})
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != d || before["org/app:1"] != "" {
		t.Errorf("imported %v, before %v", desc, before)
	}
	tb2, d2 := tarball(t, `{"a":2}`, false)
	if _, before, err = l.Import(bytes.NewReader(tb2), []string{"org/app:latest"}); err != nil || before["org/app:latest"] != d {
		t.Fatalf("second import: %v, before %v", err, before)
	}
	for name, want := range map[string]digest.Digest{"org/app:1": d, "org/app:latest": d2} {
		got, err := l.Resolve(name)
		if err != nil || got.Digest != want {
			t.Errorf("%s: %v (%v), want %s", name, got.Digest, err, want)
		}
	}
	if _, err := l.Resolve("org/app:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("absent name: %v", err)
	}
	f, err := l.OpenBlob(d2)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Open(l.Dir()); err != nil {
		t.Error(err)
	}
}

func TestImportRefusesCorruptBlob(t *testing.T) {
	t.Parallel()
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tb, d := tarball(t, `{"a":1}`, true)
	if _, _, err := l.Import(bytes.NewReader(tb), []string{"org/app:1"}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("corrupt blob: %v", err)
	}
	if _, err := l.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("a corrupt blob was kept: %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Error("a directory without oci-layout opened")
	}
}
