package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/daemon"
)

// Keystone is a Keystone identity service (keystone-wsgi-public from
// python3-keystone) with a SQLite database, fernet tokens, an object-store
// endpoint for the Swift it was started with, and a user of a project with
// the member role and an application credential of that user.
type Keystone struct {
	*daemon.Process
	// URL is the v3 identity endpoint: http://127.0.0.1:<port>/v3.
	URL string
	// Region is the region of the catalog's endpoints.
	Region string
	// Project, User and Password: the user of Swift, with the member role
	// on Project, in the Default domain.
	Project, User, Password string
	// ProjectID is the project's ID (the account is AUTH_<ProjectID>).
	ProjectID string
	// AppCredID and AppCredSecret are an application credential of User.
	AppCredID, AppCredSecret string
	// AdminPassword is the password of admin (bootstrap).
	AdminPassword string
}

// startKeystone prepares Keystone's database (SQLite), fernet and
// credential keys and bootstrap admin under dir/keystone, starts
// keystone-wsgi-public on a free loopback port, and adds a project, a
// member user with an application credential; its catalog (a template)
// lists the object store at <swiftEndpoint>/v1/AUTH_<project id>.
func startKeystone(t testing.TB, dir, swiftEndpoint string) *Keystone {
	t.Helper()
	kdir := filepath.Join(dir, "keystone")
	for _, d := range []string{"fernet", "credential"} {
		if err := os.MkdirAll(filepath.Join(kdir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := FreePort(t)
	k := &Keystone{URL: fmt.Sprintf("http://127.0.0.1:%d/v3", port), Region: "RegionOne",
		Project: "imagegate", User: "imagegate", Password: RandomString(t, 12), AdminPassword: RandomString(t, 12)}
	conf := filepath.Join(kdir, "keystone.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`[DEFAULT]
log_dir = %[1]s
[database]
connection = sqlite:///%[1]s/keystone.db?timeout=60
[fernet_tokens]
key_repository = %[1]s/fernet
[credential]
key_repository = %[1]s/credential
[token]
provider = fernet
[catalog]
driver = templated
template_file = %[1]s/catalog.templates
`, kdir)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The catalog comes from a template (Keystone's templated backend):
	// identity and the object store.
	var tpl strings.Builder
	for _, iface := range []string{"publicURL", "internalURL"} {
		fmt.Fprintf(&tpl, "catalog.%s.identity.%s = %s\n", k.Region, iface, k.URL)
		fmt.Fprintf(&tpl, "catalog.%s.object-store.%s = %s/v1/AUTH_$(tenant_id)s\n", k.Region, iface, swiftEndpoint)
	}
	fmt.Fprintf(&tpl, "catalog.%s.identity.name = Identity Service\ncatalog.%s.object-store.name = Swift\n", k.Region, k.Region)
	if err := os.WriteFile(filepath.Join(kdir, "catalog.templates"), []byte(tpl.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	manage := Tool(t, "", "keystone-manage")
	user, group := strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	for _, args := range [][]string{
		{"db_sync"},
		{"fernet_setup", "--keystone-user", user, "--keystone-group", group},
		{"credential_setup", "--keystone-user", user, "--keystone-group", group},
		{"bootstrap", "--bootstrap-password", k.AdminPassword},
	} {
		Run(t, nil, manage, append([]string{"--config-file", conf}, args...)...)
	}
	cmd := exec.Command(Tool(t, "", "keystone-wsgi-public"), "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "OS_KEYSTONE_CONFIG_DIR="+kdir, "OS_KEYSTONE_CONFIG_FILES=keystone.conf")
	k.Process = StartProcess(t, "keystone", cmd, kdir)
	WaitFor(t, "keystone", 2*time.Minute, k.Process, func() error {
		resp, err := http.Get(k.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v3: %s", resp.Status)
		}
		return nil
	})

	admin, _, err := k.issue(map[string]any{"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{"name": "admin", "domain": map[string]string{"id": "default"}, "password": k.AdminPassword}}},
		map[string]any{"project": map[string]any{"name": "admin", "domain": map[string]string{"id": "default"}}})
	if err != nil {
		t.Fatal(err)
	}
	api := func(token, method, path string, body any, key string) string {
		t.Helper()
		var out map[string]map[string]any
		if err := k.call(token, method, path, body, &out); err != nil {
			t.Fatal(err)
		}
		if key == "" {
			return ""
		}
		id, _ := out[key]["id"].(string)
		if key == "application_credential" {
			secret, _ := out[key]["secret"].(string)
			return id + " " + secret
		}
		return id
	}
	k.ProjectID = api(admin, http.MethodPost, "/projects", map[string]any{"project": map[string]any{"name": k.Project, "domain_id": "default"}}, "project")
	userID := api(admin, http.MethodPost, "/users", map[string]any{"user": map[string]any{"name": k.User, "domain_id": "default", "password": k.Password, "default_project_id": k.ProjectID}}, "user")
	var roles struct {
		Roles []struct{ ID, Name string }
	}
	if err := k.call(admin, http.MethodGet, "/roles?name=member", nil, &roles); err != nil || len(roles.Roles) != 1 {
		t.Fatalf("looking up the member role: %v %+v", err, roles)
	}
	api(admin, http.MethodPut, "/projects/"+k.ProjectID+"/users/"+userID+"/roles/"+roles.Roles[0].ID, nil, "")
	userToken, _, err := k.issue(map[string]any{"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{"id": userID, "password": k.Password}}},
		map[string]any{"project": map[string]any{"id": k.ProjectID}})
	if err != nil {
		t.Fatal(err)
	}
	cred := api(userToken, http.MethodPost, "/users/"+userID+"/application_credentials",
		map[string]any{"application_credential": map[string]any{"name": "imagegate-" + RandomString(t, 4)}}, "application_credential")
	k.AppCredID, k.AppCredSecret, _ = strings.Cut(cred, " ")
	return k
}

// issue asks Keystone for a token (POST /v3/auth/tokens) and returns it
// (the X-Subject-Token header) with the response body. A nil scope asks
// for the token without one (an application credential carries its own).
func (k *Keystone) issue(identity, scope map[string]any) (string, []byte, error) {
	auth := map[string]any{"identity": identity}
	if scope != nil {
		auth["scope"] = scope
	}
	body := map[string]any{"auth": auth}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, k.URL+"/auth/tokens", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", nil, fmt.Errorf("keystone: issuing a token: %s", resp.Status)
	}
	return resp.Header.Get("X-Subject-Token"), out, nil
}

// call sends a request to Keystone's v3 API with token and decodes the
// JSON answer into out.
func (k *Keystone) call(token, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, k.URL+path, r)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("keystone: %s %s: %s %s", method, path, resp.Status, b)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}
