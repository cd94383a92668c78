package ansible_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/pkg/ansible"
)

type image struct {
	Context    string   `ansible:"context,required"`
	Repository string   `ansible:"repository,required"`
	Tags       []string `ansible:"tags" default:"latest"`
	BuildArgs  []string `ansible:"build_args"`
}

type params struct {
	Name     string            `ansible:"name,required"`
	Port     int               `ansible:"port" default:"5000"`
	Enabled  bool              `ansible:"enabled" default:"true"`
	State    string            `ansible:"state" default:"started" choices:"started,stopped,absent"`
	Images   []image           `ansible:"docker_images"`
	Labels   map[string]string `ansible:"labels"`
	Password string            `ansible:"password,no_log"`
	Zuul     map[string]any    `ansible:"zuul,raw"`
	Dir      string            `ansible:"dir,path"`
	Ratio    float64           `ansible:"ratio"`
	Items    []string          `ansible:"items" aliases:"item_list"`
}

func decodeJSON(t *testing.T, s string) (*params, []string, error) {
	t.Helper()
	var raw map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	var p params
	secrets, err := ansible.Decode(raw, &p)
	return &p, secrets, err
}

func TestDecodeConversions(t *testing.T) {
	t.Setenv("HOME", "/home/zuul")
	tests := []struct {
		name  string
		args  string
		check func(t *testing.T, p *params)
	}{
		{"defaults", `{"name":"a"}`, func(t *testing.T, p *params) {
			if p.Port != 5000 || !p.Enabled || p.State != "started" || p.Images != nil {
				t.Errorf("defaults not applied: %+v", p)
			}
		}},
		{"int from string", `{"name":"a","port":"6000"}`, func(t *testing.T, p *params) {
			if p.Port != 6000 {
				t.Errorf("port = %d", p.Port)
			}
		}},
		{"int from integral float", `{"name":"a","port":6000.0}`, func(t *testing.T, p *params) {
			if p.Port != 6000 {
				t.Errorf("port = %d", p.Port)
			}
		}},
		{"bool yes", `{"name":"a","enabled":"no"}`, func(t *testing.T, p *params) {
			if p.Enabled {
				t.Error("enabled should be false")
			}
		}},
		{"bool 1", `{"name":"a","enabled":"1"}`, func(t *testing.T, p *params) {
			if !p.Enabled {
				t.Error("enabled should be true")
			}
		}},
		{"bool True", `{"name":"a","enabled":"True"}`, func(t *testing.T, p *params) {
			if !p.Enabled {
				t.Error("enabled should be true")
			}
		}},
		{"str from number", `{"name":12}`, func(t *testing.T, p *params) {
			if p.Name != "12" {
				t.Errorf("name = %q", p.Name)
			}
		}},
		{"list from comma string", `{"name":"a","items":"a, b,c"}`, func(t *testing.T, p *params) {
			if !reflect.DeepEqual(p.Items, []string{"a", "b", "c"}) {
				t.Errorf("items = %q", p.Items)
			}
		}},
		{"list from JSON string", `{"name":"a","items":"[\"x\",\"y\"]"}`, func(t *testing.T, p *params) {
			if !reflect.DeepEqual(p.Items, []string{"x", "y"}) {
				t.Errorf("items = %q", p.Items)
			}
		}},
		{"list from scalar", `{"name":"a","items":7}`, func(t *testing.T, p *params) {
			if !reflect.DeepEqual(p.Items, []string{"7"}) {
				t.Errorf("items = %q", p.Items)
			}
		}},
		{"alias", `{"name":"a","item_list":["q"]}`, func(t *testing.T, p *params) {
			if !reflect.DeepEqual(p.Items, []string{"q"}) {
				t.Errorf("items = %q", p.Items)
			}
		}},
		{"nested defaults and coercion", `{"name":"a","docker_images":[{"context":"c","repository":"r","build_args":"A=1,B=2"}]}`, func(t *testing.T, p *params) {
			want := []image{{Context: "c", Repository: "r", Tags: []string{"latest"}, BuildArgs: []string{"A=1", "B=2"}}}
			if !reflect.DeepEqual(p.Images, want) {
				t.Errorf("images = %+v", p.Images)
			}
		}},
		{"dict from k=v", `{"name":"a","labels":"a=1 b=2"}`, func(t *testing.T, p *params) {
			if p.Labels["a"] != "1" || p.Labels["b"] != "2" {
				t.Errorf("labels = %v", p.Labels)
			}
		}},
		{"raw keeps unknown keys", `{"name":"a","zuul":{"change":"12","anything":{"x":1}}}`, func(t *testing.T, p *params) {
			if p.Zuul["change"] != "12" || p.Zuul["anything"] == nil {
				t.Errorf("zuul = %v", p.Zuul)
			}
		}},
		{"path expands home", `{"name":"a","dir":"~/buildset_registry"}`, func(t *testing.T, p *params) {
			if p.Dir != "/home/zuul/buildset_registry" {
				t.Errorf("dir = %q", p.Dir)
			}
		}},
		{"null means unset", `{"name":"a","port":null}`, func(t *testing.T, p *params) {
			if p.Port != 5000 {
				t.Errorf("port = %d", p.Port)
			}
		}},
		{"control keys ignored", `{"name":"a","_ansible_check_mode":true,"_ansible_verbosity":3}`, func(t *testing.T, p *params) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _, err := decodeJSON(t, tc.args)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tc.check(t, p)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args string
		want []string
	}{
		{"unknown", `{"name":"a","bogus":1,"alsobad":2}`, []string{"Unsupported parameters: alsobad, bogus.", "Supported parameters include: ", "docker_images", "name", "port"}},
		{"missing required", `{}`, []string{"parameter name: is required"}},
		{"bad int", `{"name":"a","port":"five"}`, []string{"parameter port: must be an integer", `"five"`}},
		{"bad bool", `{"name":"a","enabled":"maybe"}`, []string{"parameter enabled: must be a boolean", "maybe"}},
		{"bad choice", `{"name":"a","state":"running"}`, []string{"parameter state: must be one of: started, stopped, absent", "running"}},
		{"nested required", `{"name":"a","docker_images":[{"repository":"r"}]}`, []string{"parameter docker_images[0].context: is required"}},
		{"nested unknown", `{"name":"a","docker_images":[{"context":"c","repository":"r","tag":"x"}]}`, []string{"Unsupported parameters in docker_images[0]: tag.", "Supported parameters include: build_args, context, repository, tags."}},
		{"list of dicts from string", `{"name":"a","docker_images":"foo"}`, []string{"parameter docker_images: must be a list of dicts"}},
		{"dict wrong type", `{"name":"a","labels":[1]}`, []string{"parameter labels: must be a dict, not a list"}},
		{"nested null element", `{"name":"a","docker_images":[null]}`, []string{"parameter docker_images[0]: must not be null"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeJSON(t, tc.args)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeCollectsSecretsEvenOnError(t *testing.T) {
	t.Parallel()
	_, secrets, err := decodeJSON(t, `{"password":"hunter2-secret","port":"x"}`)
	if err == nil {
		t.Fatal("expected an error")
	}
	if len(secrets) != 1 || secrets[0] != "hunter2-secret" {
		t.Errorf("secrets = %q", secrets)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	opts, err := ansible.Options(reflect.TypeOf(params{}))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ansible.Option{}
	for _, o := range opts {
		byName[o.Name] = o
	}
	if o := byName["docker_images"]; o.Type != "list" || o.Elements != "dict" || len(o.Suboptions) != 4 {
		t.Errorf("docker_images = %+v", o)
	}
	if o := byName["password"]; !o.NoLog || o.Type != "str" {
		t.Errorf("password = %+v", o)
	}
	if o := byName["dir"]; o.Type != "path" {
		t.Errorf("dir = %+v", o)
	}
	if o := byName["zuul"]; o.Type != "dict" {
		t.Errorf("zuul = %+v", o)
	}
	type bad struct {
		A string `ansible:"a,bogus"`
	}
	if _, err := ansible.Options(reflect.TypeOf(bad{})); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestRunInProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	os.WriteFile(args, []byte(`{"name":"n","_ansible_check_mode":true,"_ansible_diff":false}`), 0o600)
	var out, errb bytes.Buffer
	code := ansible.Run(context.Background(), args, &out, &errb, func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		if !m.CheckMode {
			t.Error("check mode not seen")
		}
		r := &ansible.Result{Changed: true, Diff: []ansible.Diff{{Before: "a", After: "b"}}}
		r.Set("failed", "must be ignored").Set("value", 3)
		return r, nil
	})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	var res map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res["failed"] != false || res["changed"] != true || res["value"] != float64(3) {
		t.Errorf("result = %v", res)
	}
	if _, ok := res["diff"]; ok {
		t.Error("diff returned without _ansible_diff")
	}
}

func TestRunMalformedArgs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":      `name=x`,
		"array":         `[1,2]`,
		"trailing data": `{"name":"x"} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			args := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			os.WriteFile(args, []byte(content), 0o600)
			var out, errb bytes.Buffer
			code := ansible.Run(context.Background(), args, &out, &errb, func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
				t.Error("module body ran on malformed args")
				return nil, nil
			})
			var res map[string]any
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("output not JSON: %q", out.String())
			}
			if code == 0 || res["failed"] != true || !strings.Contains(res["msg"].(string), "reading module arguments") {
				t.Errorf("code %d result %v", code, res)
			}
		})
	}
	var out, errb bytes.Buffer
	ansible.Run(context.Background(), "", &out, &errb, func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		return nil, nil
	})
	if !strings.Contains(out.String(), "this is an Ansible module") {
		t.Errorf("no args file: %s", out.String())
	}
}

func TestRunRecoversPanic(t *testing.T) {
	t.Parallel()
	args := filepath.Join(t.TempDir(), "args")
	os.WriteFile(args, []byte(`{"name":"x","password":"panic-secret-1"}`), 0o600)
	var out, errb bytes.Buffer
	ansible.Run(context.Background(), args, &out, &errb, func(ctx context.Context, m *ansible.Module, p *params) (*ansible.Result, error) {
		panic("boom with " + p.Password)
	})
	if !strings.Contains(out.String(), `"failed":true`) || strings.Contains(out.String(), "panic-secret-1") {
		t.Errorf("result = %s", out.String())
	}
}

// The binary tests run a real module binary, as Ansible does.

func echoModule(t *testing.T) string {
	t.Helper()
	return ansibletest.BuildModule(t, "./testdata/echomod")
}

func TestBinaryStdoutGuard(t *testing.T) {
	bin := echoModule(t)
	o := ansibletest.RunBinary(t, bin, map[string]any{"name": "x", "stray": true})
	if o.Failed() {
		t.Fatalf("failed: %s", o.Msg())
	}
	for _, s := range []string{"fmt.Println", "os.Stdout", "child process"} {
		if bytes.Contains(o.Stdout, []byte(s)) {
			t.Errorf("stray output %q reached stdout", s)
		}
		if !bytes.Contains(o.Stderr, []byte(s)) {
			t.Errorf("stray output %q did not reach stderr", s)
		}
	}
}

func TestBinarySecretsNeverPrinted(t *testing.T) {
	bin := echoModule(t)
	const pw, token = `pw-"quoted"\-9f8e7d`, "tok-5a4b3c2d1e"
	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"success", map[string]any{"name": "x", "token": token, "docker_credentials": map[string]any{"username": "u", "password": pw}}},
		{"module failure", map[string]any{"name": "x", "fail": true, "token": token, "docker_credentials": map[string]any{"username": "u", "password": pw}}},
		{"bad parameter", map[string]any{"name": "x", "count": "many", "token": token, "docker_credentials": map[string]any{"username": "u", "password": pw}}},
		{"unknown parameter", map[string]any{"name": "x", "bogus": 1, "token": token, "docker_credentials": map[string]any{"username": "u", "password": pw}}},
		{"nested missing", map[string]any{"name": "x", "token": token, "docker_credentials": map[string]any{"password": pw}}},
		{"as string dict", map[string]any{"name": "x", "docker_credentials": `{"username":"u","password":"` + strings.ReplaceAll(strings.ReplaceAll(pw, `\`, `\\`), `"`, `\"`) + `"}`, "token": token}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ansibletest.RunBinary(t, bin, tc.args)
			esc, _ := json.Marshal(pw)
			for _, secret := range []string{pw, token, string(esc[1 : len(esc)-1])} {
				if bytes.Contains(o.Stdout, []byte(secret)) {
					t.Errorf("secret %q in stdout: %s", secret, o.Stdout)
				}
				if bytes.Contains(o.Stderr, []byte(secret)) {
					t.Errorf("secret %q in stderr: %s", secret, o.Stderr)
				}
			}
		})
	}
}

func TestBinaryFailureShape(t *testing.T) {
	bin := echoModule(t)
	o := ansibletest.RunBinary(t, bin, map[string]any{"name": "x", "fail": true})
	if !o.Failed() || o.Exit == 0 || !strings.Contains(o.Msg(), "failing with") {
		t.Errorf("result %v exit %d", o.Result, o.Exit)
	}
	o = ansibletest.RunBinary(t, bin, map[string]any{"name": "x", "_ansible_check_mode": true, "_ansible_diff": true})
	if o.Failed() || o.Changed() || o.Result["check_mode"] != true || o.Result["diff"] == nil {
		t.Errorf("check mode result %v", o.Result)
	}
}

// keyedParams has a dict keyed by names the user chooses, whose values are
// dicts of options (container_registry_credentials' shape).
type keyedParams struct {
	Creds map[string]struct {
		Username string `ansible:"username"`
		Password string `ansible:"password,no_log"`
	} `ansible:"creds"`
}

// TestDecodeKeyedDict: each value of a keyed dict is decoded with the
// value's options (an unknown key is refused, naming the entry), and its
// no_log values are secrets, also when the dict arrives as a JSON string or
// decoding fails.
func TestDecodeKeyedDict(t *testing.T) {
	t.Parallel()
	opts, err := ansible.Options(reflect.TypeOf(keyedParams{}))
	if err != nil {
		t.Fatal(err)
	}
	if o := opts[0]; o.Type != "dict" || !o.Keyed || len(o.Suboptions) != 2 {
		t.Errorf("creds = %+v", o)
	}
	var p keyedParams
	secrets, err := ansible.Decode(map[string]any{"creds": map[string]any{
		"quay.io":           map[string]any{"username": "u1", "password": "pw-one"},
		"registry.test:443": map[string]any{"username": "u2", "password": "pw-two"}}}, &p)
	if err != nil {
		t.Fatal(err)
	}
	if p.Creds["quay.io"].Password != "pw-one" || p.Creds["registry.test:443"].Username != "u2" {
		t.Errorf("decoded %+v", p)
	}
	slices.Sort(secrets)
	if !slices.Equal(secrets, []string{"pw-one", "pw-two"}) {
		t.Errorf("secrets = %q", secrets)
	}
	secrets, err = ansible.Decode(map[string]any{"creds": `{"quay.io": {"username": "u", "password": "pw-three", "token": "x"}}`}, &p)
	if err == nil || !strings.Contains(err.Error(), "creds.quay.io") || !strings.Contains(err.Error(), "token") {
		t.Errorf("unknown key in an entry: %v", err)
	}
	if !slices.Equal(secrets, []string{"pw-three"}) {
		t.Errorf("secrets of a failed decode = %q", secrets)
	}
}
