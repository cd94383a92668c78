package hubtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/hubtest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/oci"
)

// distributionHub starts Debian's docker-registry with the emulation in
// front of it.
func distributionHub(t *testing.T, opts ...hubtest.Option) (*testenv.Distribution, *hubtest.Server) {
	t.Helper()
	reg := testenv.StartDistribution(t, testenv.DistributionOptions{})
	hub := hubtest.New(t, hubtest.Backend{Host: reg.Host, CA: reg.TLS.CA.CertPEM, Username: reg.Username, Password: reg.Password}, opts...)
	return reg, hub
}

// pushThrough pushes img as repo:tag through the emulation's registry
// proxy, as a client of Docker Hub would.
func pushThrough(t *testing.T, hub *hubtest.Server, user, pass, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(hub.RegistryHost + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass}),
		remote.WithTransport(hub.Client().Transport)); err != nil {
		t.Fatalf("pushing %s through the proxy: %v", ref, err)
	}
}

func hubClient(t *testing.T, hub *hubtest.Server, user, pass string, opts ...dockerhub.Option) *dockerhub.Client {
	t.Helper()
	c, err := dockerhub.New(user, pass, append([]dockerhub.Option{dockerhub.WithURL(hub.URL), dockerhub.WithTransport(hub.Client().Transport)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoginListingAndPushTimes(t *testing.T) {
	t.Parallel()
	reg, hub := distributionHub(t)
	ctx := context.Background()
	img := testenv.BusyboxImage(t, testenv.FileLayer("a.txt", []byte("a\n")))
	digest, _ := img.Digest()
	before := time.Now().Add(-time.Second)
	for i := 0; i < 23; i++ {
		pushThrough(t, hub, reg.Username, reg.Password, fmt.Sprintf("myorg/app:t%02d", i), img)
	}
	after := time.Now().Add(time.Second)
	old := time.Now().Add(-48 * time.Hour).Truncate(time.Microsecond)
	hub.SetLastUpdated("myorg/app", "t05", old)

	if err := hubClient(t, hub, reg.Username, "not-the-password").Login(ctx); !errors.Is(err, oci.ErrUnauthorized) ||
		!strings.Contains(err.Error(), "Incorrect authentication credentials") {
		t.Fatalf("wrong password: %v", err)
	}
	hub.ResetRequests()
	c := hubClient(t, hub, reg.Username, reg.Password, dockerhub.WithPageSize(10))
	tags, err := c.Tags(ctx, "docker.io/myorg/app")
	if err != nil {
		t.Fatal(err)
	}
	if n := hub.Requests().Hub; n != 4 {
		t.Errorf("web API requests = %d, want 4 (login and three pages of 10)", n)
	}
	if len(tags) != 23 {
		t.Fatalf("listed %d tags, want 23", len(tags))
	}
	for i, tg := range tags {
		if tg.Digest != digest.String() {
			t.Errorf("%s digest %s, want %s", tg.Name, tg.Digest, digest)
		}
		if tg.Name == "t05" {
			if !tg.LastUpdated.Equal(old) || i != len(tags)-1 {
				t.Errorf("t05 last_updated %s at position %d; want %s, last (newest first)", tg.LastUpdated, i, old)
			}
			continue
		}
		if tg.LastUpdated.Before(before) || tg.LastUpdated.After(after) {
			t.Errorf("%s last_updated %s not within the push", tg.Name, tg.LastUpdated)
		}
	}
}

func TestAuthenticationRequired(t *testing.T) {
	t.Parallel()
	reg, hub := distributionHub(t)
	pushThrough(t, hub, reg.Username, reg.Password, "myorg/app:latest", testenv.BusyboxImage(t))
	hc := hub.Client()
	get := func(auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, hub.URL+"/v2/repositories/myorg/app/tags/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(""); code != http.StatusUnauthorized || !strings.Contains(body, "not provided") {
		t.Errorf("anonymous listing: %d %s", code, body)
	}
	if code, body := get("Bearer not.a.token"); code != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Errorf("forged token: %d %s", code, body)
	}
	// Login as upstream's role does it (GET with a body) is refused; POST works.
	resp, err := hc.Get(hub.URL + "/v2/users/login/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET login: %d", resp.StatusCode)
	}
	resp, err = hc.Post(hub.URL+"/v2/users/login/", "application/json", strings.NewReader(`{"username":"`+reg.Username+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "password") {
		t.Errorf("login without password: %d %s", resp.StatusCode, b)
	}
	resp, err = hc.Post(hub.URL+"/v2/users/login/", "application/json", strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, reg.Username, reg.Password)))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	// zuul-jobs sends "Authorization: JWT <token>"; Docker documents Bearer.
	for _, scheme := range []string{"JWT ", "Bearer "} {
		if code, body := get(scheme + tok.Token); code != http.StatusOK || !strings.Contains(body, `"name":"latest"`) {
			t.Errorf("%slisting: %d %s", scheme, code, body)
		}
	}
}

func TestExpiredTokenAndForbiddenNamespace(t *testing.T) {
	t.Parallel()
	reg, hub := distributionHub(t, hubtest.WithTokenTTL(-time.Second), hubtest.WithNamespaces("myorg"))
	pushThrough(t, hub, reg.Username, reg.Password, "myorg/app:latest", testenv.BusyboxImage(t))
	c := hubClient(t, hub, reg.Username, reg.Password)
	if _, err := c.Tags(context.Background(), "myorg/app"); !errors.Is(err, oci.ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}

	reg2, hub2 := distributionHub(t, hubtest.WithNamespaces("myorg"))
	pushThrough(t, hub2, reg2.Username, reg2.Password, "otherorg/app:change_1_latest", testenv.BusyboxImage(t))
	c2 := hubClient(t, hub2, reg2.Username, reg2.Password)
	if err := c2.DeleteTag(context.Background(), "otherorg/app", "change_1_latest"); !errors.Is(err, oci.ErrForbidden) {
		t.Errorf("delete outside the account's namespaces: %v", err)
	}
	if err := c2.DeleteTag(context.Background(), "myorg/app", "nope"); !errors.Is(err, oci.ErrNotFound) || !strings.Contains(err.Error(), "tag 'nope' not found") {
		t.Errorf("delete of a missing tag: %v", err)
	}
}

// TestRegistryProxyRefusesManifestDelete: like Docker Hub's registry
// endpoint, the proxy does not delete manifests; tags go through the web
// API.
func TestRegistryProxyRefusesManifestDelete(t *testing.T) {
	t.Parallel()
	reg, hub := distributionHub(t)
	pushThrough(t, hub, reg.Username, reg.Password, "myorg/app:change_1_latest", testenv.BusyboxImage(t))
	ref, _ := name.ParseReference(hub.RegistryHost + "/myorg/app:change_1_latest")
	err := remote.Delete(ref, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(hub.Client().Transport))
	if err == nil || !strings.Contains(err.Error(), "UNSUPPORTED") {
		t.Fatalf("manifest DELETE through the proxy: %v", err)
	}
	if _, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(hub.Client().Transport)); err != nil {
		t.Errorf("tag gone after a refused delete: %v", err)
	}
}

// TestDeleteTag deletes through the web API on imagegate's registry, which
// deletes single tags: the tag is gone from the registry and the listing,
// another tag of the same manifest stays.
func TestDeleteTag(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	hub := hubtest.New(t, hubtest.Backend{Host: reg.Host, CA: reg.CAPEM, Username: reg.Username, Password: reg.Password})
	img := testenv.BusyboxImage(t)
	pushThrough(t, hub, reg.Username, reg.Password, "myorg/app:change_1_latest", img)
	pushThrough(t, hub, reg.Username, reg.Password, "myorg/app:latest", img)
	ctx := context.Background()
	c := hubClient(t, hub, reg.Username, reg.Password)
	if err := c.DeleteTag(ctx, "myorg/app", "change_1_latest"); err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(reg.Transport())}
	gone, _ := name.ParseReference(reg.Host + "/myorg/app:change_1_latest")
	if _, err := remote.Head(gone, opts...); err == nil {
		t.Error("the tag is still in the registry")
	}
	kept, _ := name.ParseReference(reg.Host + "/myorg/app:latest")
	if _, err := remote.Head(kept, opts...); err != nil {
		t.Errorf("the other tag of the manifest went too: %v", err)
	}
	tags, err := c.Tags(ctx, "myorg/app")
	if err != nil || len(tags) != 1 || tags[0].Name != "latest" {
		t.Errorf("listing after delete: %+v %v", tags, err)
	}
	if err := c.DeleteTag(ctx, "myorg/app", "change_1_latest"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	calls := strings.Join(hub.Calls(), "\n")
	if !strings.Contains(calls, "DELETE /v2/repositories/myorg/app/tags/change_1_latest/ 204") ||
		!strings.Contains(calls, "DELETE /v2/repositories/myorg/app/tags/change_1_latest/ 404") {
		t.Errorf("calls:\n%s", calls)
	}
}
