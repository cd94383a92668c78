package quay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/quaytest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/quay"
)

// TestClient runs the client against quay emulated in front of imagegate's
// registry: every page of a listing with last_modified times, tag delete,
// repository create and visibility, and each call refused for a token
// without its scope (403) or no valid token (401).
func TestClient(t *testing.T) {
	t.Parallel()
	backend := registrytest.New(t)
	q := quaytest.New(t, quaytest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	q.WithToken("rw", quaytest.ScopeRead, quaytest.ScopeWrite)
	q.WithToken("ro", quaytest.ScopeRead)
	q.WithToken("admin", quaytest.ScopeAdmin, quaytest.ScopeCreate)
	reg := transfertest.Registry{Host: q.RegistryHost, Username: backend.Username, Password: backend.Password, CA: q.CACert}
	img := testenv.ChangeImage(t, "1", "amd64", time.Now(), testenv.FileLayer("f", []byte("x\n")))
	var want []string
	for _, tag := range []string{"a", "b", "c", "d", "e"} {
		reg.Push(t, "myorg/app:"+tag, img)
		want = append(want, tag)
	}
	old := time.Date(2020, 3, 4, 5, 6, 7, 0, time.UTC)
	q.SetLastModified("myorg/app", "c", old)
	pool, err := pki.CertPool(q.CACert)
	if err != nil {
		t.Fatal(err)
	}
	client := func(token string) *quay.Client {
		c, err := quay.New(q.URL, token, quay.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}), quay.WithPageSize(2))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	rw := client("rw")
	tags, err := rw.Tags(ctx, "quay.io/myorg/app")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range tags {
		names = append(names, tg.Name)
		if tg.Name == "c" && !tg.LastModified.Equal(old) {
			t.Errorf("c last_modified = %s, want %s", tg.LastModified, old)
		}
		if tg.Digest != testenv.DigestOf(t, img) {
			t.Errorf("%s digest %s", tg.Name, tg.Digest)
		}
	}
	sort.Strings(names)
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("tags over three pages: %v", names)
	}
	if err := client("ro").DeleteTag(ctx, "myorg/app", "a"); !errors.Is(err, oci.ErrForbidden) || !strings.Contains(err.Error(), "insufficient_scope") {
		t.Errorf("delete with a read-only token: %v", err)
	}
	if err := client("nope").DeleteTag(ctx, "myorg/app", "a"); !errors.Is(err, oci.ErrUnauthorized) {
		t.Errorf("delete with an unknown token: %v", err)
	}
	if err := rw.DeleteTag(ctx, "myorg/app", "a"); err != nil {
		t.Fatal(err)
	}
	if reg.Digest(t, "myorg/app:a") != "" || reg.Digest(t, "myorg/app:b") == "" {
		t.Error("delete removed the wrong tags")
	}
	if err := rw.DeleteTag(ctx, "myorg/app", "a"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("deleting a missing tag: %v", err)
	}

	admin := client("admin")
	if _, err := admin.GetRepository(ctx, "myorg/new"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("get of a missing repository: %v", err)
	}
	if err := rw.CreateRepository(ctx, "myorg/new", quay.Public, "d"); !errors.Is(err, oci.ErrForbidden) {
		t.Errorf("create without repo:create: %v", err)
	}
	if err := admin.CreateRepository(ctx, "quay.io/myorg/new", quay.Public, "the new one"); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateRepository(ctx, "myorg/new", quay.Public, ""); !errors.Is(err, quay.ErrExists) {
		t.Errorf("creating it again: %v", err)
	}
	r, err := admin.GetRepository(ctx, "myorg/new")
	if err != nil || r.Visibility() != quay.Public || r.Description != "the new one" {
		t.Fatalf("repository: %+v %v", r, err)
	}
	if err := admin.SetVisibility(ctx, "myorg/new", quay.Private); err != nil {
		t.Fatal(err)
	}
	if v, _ := q.Visibility("myorg/new"); v != "private" {
		t.Errorf("visibility %s", v)
	}
	if _, err := quay.New("http://quay.invalid", "t"); err == nil {
		t.Error("plain http accepted")
	}
	if _, _, err := quay.SplitRepository("quay.io/a/b/c"); err == nil {
		t.Error("a three-level repository accepted")
	}
}
