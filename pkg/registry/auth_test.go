package registry_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// token asks the token endpoint for scope with optional basic credentials
// and returns the status and token.
func token(t *testing.T, reg *registrytest.Registry, user, pass string, scopes ...string) (*http.Response, string) {
	t.Helper()
	q := url.Values{"service": {"imagegate"}}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	req, _ := http.NewRequest("GET", reg.URL()+"/auth/token?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&tr)
	if resp.StatusCode == 200 && (tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn <= 0) {
		t.Fatalf("token response %+v", tr)
	}
	return resp, tr.Token
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	reader := registry.User{Name: "reader", Password: "reader-" + strings.Repeat("r", 20), Access: registry.AccessRead}
	reg := registrytest.New(t, registry.WithUsers(reader))
	pull := "repository:team/app:pull"
	push := "repository:team/app:pull,push"
	anon := anonymous(t, reg)

	// The version check asks for a bearer token at this host.
	resp, body := anon.do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	want := `Bearer realm="https://` + reg.Host + `/auth/token",service="imagegate"`
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge %q, want %q", got, want)
	}
	// Reads need no credentials; writes are challenged with their scope.
	resp, body = anon.do("GET", "/v2/team/app/manifests/latest", nil)
	expect(t, resp, body, 404, "MANIFEST_UNKNOWN")
	resp, body = anon.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `scope="`+push+`"`) {
		t.Fatalf("write challenge %q lacks the push scope", got)
	}

	for _, tc := range []struct {
		name       string
		user, pass string
		scopes     []string
		status     int
		canWrite   bool
	}{
		{"anonymous pull", "", "", []string{pull}, 200, false},
		{"anonymous push", "", "", []string{push}, 401, false},
		{"anonymous login check", "", "", nil, 200, false},
		{"wrong password pull (a mirror's Docker Hub credentials)", reg.Username, "wrong", []string{pull}, 200, false},
		{"wrong password push", reg.Username, "wrong", []string{push}, 401, false},
		{"wrong password login check", reg.Username, "wrong", nil, 401, false},
		{"unknown user login check", "nobody", reg.Password, nil, 401, false},
		{"writer push", reg.Username, reg.Password, []string{push}, 200, true},
		// A login check's token passes the version check and grants nothing.
		{"writer login check", reg.Username, reg.Password, nil, 200, false},
		{"writer mount scopes", reg.Username, reg.Password, []string{push + " repository:other/repo:pull"}, 200, true},
		{"reader pull", reader.Name, reader.Password, []string{pull}, 200, false},
		{"reader push", reader.Name, reader.Password, []string{push}, 403, false},
		{"reader delete", reader.Name, reader.Password, []string{"repository:team/app:delete"}, 403, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, tok := token(t, reg, tc.user, tc.pass, tc.scopes...)
			if resp.StatusCode != tc.status {
				t.Fatalf("token status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 from the token endpoint without a Basic challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.status != 200 {
				return
			}
			c := &client{t: t, reg: reg, http: reg.Client(), token: tok}
			resp, body := c.do("GET", "/v2/", nil)
			expect(t, resp, body, 200, "")
			resp, body = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
			if tc.canWrite {
				expect(t, resp, body, 202, "")
			} else {
				expect(t, resp, body, 401, "UNAUTHORIZED")
				if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
					t.Errorf("read token on a write: challenge %q", resp.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}

	// The OAuth2 password grant (containerd, BuildKit).
	form := url.Values{"grant_type": {"password"}, "username": {reg.Username}, "password": {reg.Password},
		"scope": {push}, "service": {"imagegate"}, "client_id": {"test"}}
	r2, err := reg.Client().PostForm(reg.URL()+"/auth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(r2.Body).Decode(&tr)
	r2.Body.Close()
	if r2.StatusCode != 200 || tr.AccessToken == "" {
		t.Fatalf("password grant: %d", r2.StatusCode)
	}
	c := &client{t: t, reg: reg, http: reg.Client(), token: tr.AccessToken}
	resp, body = c.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	form.Set("password", "wrong")
	r2, _ = reg.Client().PostForm(reg.URL()+"/auth/token", form)
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("password grant with a wrong password: %d", r2.StatusCode)
	}

	// Basic credentials on API requests.
	w := newClient(t, reg)
	resp, body = w.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	rd := &client{t: t, reg: reg, http: reg.Client(), user: reader.Name, pass: reader.Password}
	resp, body = rd.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 403, "DENIED")
	bad := &client{t: t, reg: reg, http: reg.Client(), user: reg.Username, pass: "wrong"}
	resp, body = bad.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	resp, body = bad.do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	resp, body = bad.do("GET", "/v2/team/app/tags/list", nil) // reads anonymously: 404, not 401
	expect(t, resp, body, 404, "NAME_UNKNOWN")

	// A token signed by another registry (another key) is refused.
	other := registrytest.New(t)
	_, foreign := token(t, other, other.Username, other.Password, push)
	fc := &client{t: t, reg: reg, http: reg.Client(), token: foreign}
	resp, body = fc.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("foreign token: challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	fc.token = foreign[:len(foreign)-2] + "AA"
	resp, body = fc.do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
}

// TestTokenScopes: a token grants exactly the repositories and actions
// asked for (and allowed), as distribution's tokens do. A writer's token
// for repository:a:pull does not write a or any other repository; a token
// for a:pull,push writes a only; a cross-repository mount also needs pull
// on its source. Anonymous reads stay open whatever a token says.
func TestTokenScopes(t *testing.T) {
	t.Parallel()
	for _, anonRead := range []bool{true, false} {
		t.Run(fmt.Sprintf("anonymous read %v", anonRead), func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t, registry.WithAnonymousRead(anonRead))
			w := newClient(t, reg)
			w.putManifest("team/a", "v1", w.image("team/a"))
			w.putManifest("team/c", "v1", w.image("team/c"))
			blob := w.pushBlob("team/c", []byte("a layer of team/c"))
			with := func(scopes ...string) *client {
				t.Helper()
				resp, tok := token(t, reg, reg.Username, reg.Password, scopes...)
				if resp.StatusCode != 200 {
					t.Fatalf("token for %v: %d", scopes, resp.StatusCode)
				}
				return &client{t: t, reg: reg, http: reg.Client(), token: tok}
			}
			insufficient := func(what string, resp *http.Response, body []byte, scope string) {
				t.Helper()
				expect(t, resp, body, 401, "UNAUTHORIZED")
				ch := resp.Header.Get("WWW-Authenticate")
				if !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="`+scope+`"`) {
					t.Errorf("%s: challenge %q, want insufficient_scope for %q", what, ch, scope)
				}
			}

			pullA := with("repository:team/a:pull")
			resp, body := pullA.do("GET", "/v2/team/a/manifests/v1", nil)
			expect(t, resp, body, 200, "")
			resp, body = pullA.do("POST", "/v2/team/a/blobs/uploads/", nil)
			insufficient("push to a with a pull token", resp, body, "repository:team/a:pull,push")
			resp, body = pullA.do("POST", "/v2/team/b/blobs/uploads/", nil)
			insufficient("push to b with a's pull token", resp, body, "repository:team/b:pull,push")
			resp, body = pullA.do("DELETE", "/v2/team/a/manifests/v1", nil)
			insufficient("delete in a with a pull token", resp, body, "repository:team/a:pull,delete")
			resp, body = pullA.do("GET", "/v2/team/c/manifests/v1", nil)
			if anonRead {
				expect(t, resp, body, 200, "") // anyone reads
			} else {
				insufficient("read c with a's token", resp, body, "repository:team/c:pull")
			}

			pushA := with("repository:team/a:pull,push")
			resp, body = pushA.do("POST", "/v2/team/a/blobs/uploads/", nil)
			expect(t, resp, body, 202, "")
			resp, body = pushA.do("POST", "/v2/team/b/blobs/uploads/", nil)
			insufficient("push to b with a's push token", resp, body, "repository:team/b:pull,push")

			// Mount from c into a: the source needs pull too, unless anyone
			// may read.
			mount := "/v2/team/a/blobs/uploads/?mount=" + blob.String() + "&from=team/c"
			resp, body = pushA.do("POST", mount, nil)
			if anonRead {
				expect(t, resp, body, 201, "")
			} else {
				insufficient("mount from c without pull on c", resp, body, "repository:team/a:pull,push repository:team/c:pull")
				resp, body = with("repository:team/a:pull,push", "repository:team/c:pull").do("POST", mount, nil)
				expect(t, resp, body, 201, "")
			}

			// Deleting needs push (or delete) on that repository.
			resp, body = with("repository:team/a:delete").do("DELETE", "/v2/team/a/manifests/v1", nil)
			expect(t, resp, body, 202, "")
		})
	}
}

func TestAnonymousReadDisabled(t *testing.T) {
	t.Parallel()
	reader := registry.User{Name: "reader", Password: registrytest.RandomPassword(t), Access: registry.AccessRead}
	reg := registrytest.New(t, registry.WithUsers(reader), registry.WithAnonymousRead(false))
	w := newClient(t, reg)
	w.putManifest("team/app", "v1", w.image("team/app"))
	anon := anonymous(t, reg)
	for _, path := range []string{"/v2/team/app/manifests/v1", "/v2/team/app/tags/list", "/v2/_catalog"} {
		resp, body := anon.do("GET", path, nil)
		expect(t, resp, body, 401, "UNAUTHORIZED")
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("%s: challenge %q", path, resp.Header.Get("WWW-Authenticate"))
		}
	}
	if resp, _ := token(t, reg, "", "", "repository:team/app:pull"); resp.StatusCode != 401 {
		t.Fatalf("anonymous pull token: %d", resp.StatusCode)
	}
	if resp, _ := token(t, reg, reg.Username, "wrong", "repository:team/app:pull"); resp.StatusCode != 401 {
		t.Fatalf("wrong-password pull token: %d", resp.StatusCode)
	}
	_, tok := token(t, reg, reader.Name, reader.Password, "repository:team/app:pull")
	rc := &client{t: t, reg: reg, http: reg.Client(), token: tok}
	resp, body := rc.do("GET", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 200, "")
	bc := &client{t: t, reg: reg, http: reg.Client(), user: reader.Name, pass: reader.Password}
	resp, body = bc.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
}

// TestNoSecretsInLogs drives logins, tokens and pushes with right and wrong
// passwords and checks that no password or token reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	wrong := "wrong-" + registrytest.RandomPassword(t)
	_, tok := token(t, reg, reg.Username, reg.Password, "repository:team/app:pull,push")
	token(t, reg, reg.Username, wrong, "repository:team/app:pull,push")
	token(t, reg, reg.Username, wrong)
	c := &client{t: t, reg: reg, http: reg.Client(), token: tok}
	c.putManifest("team/app", "v1", c.image("team/app"))
	bad := &client{t: t, reg: reg, http: reg.Client(), user: reg.Username, pass: wrong}
	bad.do("POST", "/v2/team/app/blobs/uploads/", nil)
	bad.do("GET", "/v2/", nil)
	logs := reg.Logs()
	if !strings.Contains(logs, "/v2/team/app/manifests/v1") {
		t.Fatalf("the log does not show requests: %q", logs)
	}
	for name, secret := range map[string]string{"password": reg.Password, "wrong password": wrong, "token": tok, "token signature": tok[strings.LastIndex(tok, ".")+1:]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the log", name)
		}
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	drv, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ok := registry.User{Name: "zuul", Password: "secret", Access: registry.AccessWrite}
	for _, tc := range []struct {
		name string
		opts []registry.Option
		want string
	}{
		{"no password", []registry.Option{registry.WithUsers(registry.User{Name: "zuul", Access: registry.AccessWrite})}, `user "zuul" has no password`},
		{"no name", []registry.Option{registry.WithUsers(registry.User{Password: "x", Access: registry.AccessRead})}, "has no name"},
		{"bad access", []registry.Option{registry.WithUsers(registry.User{Name: "zuul", Password: "x", Access: "admin"})}, `access "admin"`},
		{"colon in name", []registry.Option{registry.WithUsers(registry.User{Name: "a:b", Password: "x", Access: registry.AccessRead})}, "contains ':'"},
		{"duplicate", []registry.Option{registry.WithUsers(ok, ok)}, "configured twice"},
		{"short key", []registry.Option{registry.WithUsers(ok), registry.WithTokenKey([]byte("short"))}, "needs at least 32"},
		{"manifest limit", []registry.Option{registry.WithUsers(ok), registry.WithMaxManifestSize(0)}, "not positive"},
		{"token ttl", []registry.Option{registry.WithUsers(ok), registry.WithTokenTTL(-1)}, "not positive"},
		{"nobody", []registry.Option{registry.WithAnonymousRead(false)}, "nobody could use"},
		{"realm", []registry.Option{registry.WithRealm("ftp://x")}, "not an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registry.New(drv, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := registry.New(nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	if _, err := registry.New(drv); err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
}

func TestAccessText(t *testing.T) {
	t.Parallel()
	var a registry.Access
	if err := a.UnmarshalText([]byte("write")); err != nil || a != registry.AccessWrite {
		t.Fatalf("UnmarshalText(write) = %q, %v", a, err)
	}
	if err := a.UnmarshalText([]byte("admin")); err == nil {
		t.Fatal("UnmarshalText(admin) succeeded")
	}
	if b, err := registry.AccessRead.MarshalText(); err != nil || string(b) != "read" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
	if _, err := registry.Access("x").MarshalText(); err == nil {
		t.Fatal("MarshalText of an unknown access succeeded")
	}
}
