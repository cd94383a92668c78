package ansible_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
)

// spec stands for a package's spec type: the parameters a module passes on
// as they are.
type spec struct {
	Name  string `ansible:"name,required"`
	Count int    `ansible:"count" default:"2"`
	Token string `ansible:"token,no_log"`
}

// moduleParams is a module's parameter struct: the spec inline, and the
// module's own timeout in seconds.
type moduleParams struct {
	spec
	Timeout time.Duration `ansible:"timeout,seconds" default:"90"`
}

// outcome stands for a package function's result.
type outcome struct {
	ansible.Outcome
	Items  []string `json:"items"`
	Count  int      `json:"count"`
	Hidden string   `json:"-"`
	nested
}

type nested struct {
	Extra bool `json:"extra"`
}

func runModule[R any](t *testing.T, args string, fn ansible.Func[moduleParams, R]) map[string]any {
	t.Helper()
	path := filepath.Join(t.TempDir(), "args")
	if err := os.WriteFile(path, []byte(args), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	ansible.Run(context.Background(), path, &out, &errb, fn)
	var res map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output not JSON: %q", out.String())
	}
	return res
}

// TestInlineSpecAndSeconds: an embedded spec's options are the module's
// options, in order, and a seconds duration is an int to Ansible.
func TestInlineSpecAndSeconds(t *testing.T) {
	t.Parallel()
	opts, err := ansible.Options(reflect.TypeFor[moduleParams]())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range opts {
		names = append(names, o.Name+":"+o.Type)
	}
	if want := []string{"name:str", "count:int", "token:str", "timeout:int"}; !slices.Equal(names, want) {
		t.Errorf("options %v, want %v", names, want)
	}
	var got moduleParams
	res := runModule(t, `{"name":"n","token":"tok-secret-1","timeout":"30"}`, func(ctx context.Context, m *ansible.Module, p *moduleParams) (*ansible.Result, error) {
		got = *p
		return &ansible.Result{}, nil
	})
	if got.Name != "n" || got.Count != 2 || got.Token != "tok-secret-1" || got.Timeout != 30*time.Second {
		t.Errorf("decoded %+v", got)
	}
	inv := res["invocation"].(map[string]any)["module_args"].(map[string]any)
	if inv["count"] != float64(2) || inv["timeout"] != "30" || inv["token"] != "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" {
		t.Errorf("module_args %v", inv)
	}
	res = runModule(t, `{"name":"n"}`, func(ctx context.Context, m *ansible.Module, p *moduleParams) (*ansible.Result, error) {
		got = *p
		return &ansible.Result{}, nil
	})
	if inv := res["invocation"].(map[string]any)["module_args"].(map[string]any); got.Timeout != 90*time.Second || inv["timeout"] != float64(90) {
		t.Errorf("default timeout %s, shown as %v", got.Timeout, inv["timeout"])
	}
	res = runModule(t, `{"name":"n","timeout":"soon"}`, func(ctx context.Context, m *ansible.Module, p *moduleParams) (*ansible.Result, error) {
		t.Error("ran with a bad timeout")
		return nil, nil
	})
	if res["failed"] != true || !strings.Contains(res["msg"].(string), "parameter timeout: must be an integer") {
		t.Errorf("bad timeout: %v", res)
	}
	type wrong struct {
		D int `ansible:"d,seconds"`
	}
	if _, err := ansible.Options(reflect.TypeFor[wrong]()); err == nil {
		t.Error("seconds accepted on an int")
	}
}

// TestOutcomeResult: a package result embedding Outcome becomes the
// module's result; its json fields are the keys.
func TestOutcomeResult(t *testing.T) {
	t.Parallel()
	body := func(ctx context.Context, m *ansible.Module, p *moduleParams) (*outcome, error) {
		r := &outcome{Items: []string{}, Count: 3, Hidden: "not returned", nested: nested{Extra: true}}
		r.Changed, r.Msg = true, "did it"
		r.Warn("careful with %s", p.Name)
		r.Diff = []ansible.Diff{{Before: "a", After: "b"}}
		return r, nil
	}
	res := runModule(t, `{"name":"n","_ansible_diff":true}`, body)
	if res["changed"] != true || res["msg"] != "did it" || res["count"] != float64(3) || res["extra"] != true ||
		res["items"] == nil || res["Hidden"] != nil || res["Outcome"] != nil || res["diff"] == nil {
		t.Errorf("result %v", res)
	}
	if w, _ := res["warnings"].([]any); len(w) != 1 || w[0] != "careful with n" {
		t.Errorf("warnings %v", res["warnings"])
	}
	// A failure with no result, as most package functions return.
	res = runModule(t, `{"name":"n"}`, func(ctx context.Context, m *ansible.Module, p *moduleParams) (*outcome, error) {
		return nil, errors.New("it broke")
	})
	if res["failed"] != true || res["changed"] != false || res["msg"] != "it broke" {
		t.Errorf("failure %v", res)
	}
	keys, err := ansible.ResultKeys(reflect.TypeFor[*outcome]())
	if err != nil || !slices.Equal(keys, []string{"items", "count", "extra"}) {
		t.Errorf("ResultKeys = %v, %v", keys, err)
	}
	if _, err := ansible.ResultKeys(reflect.TypeFor[nested]()); err == nil {
		t.Error("ResultKeys accepted a type without Outcome")
	}
	// A type that is neither is an internal error, not a silent success.
	res = runModule(t, `{"name":"n"}`, func(ctx context.Context, m *ansible.Module, p *moduleParams) (*nested, error) {
		return &nested{}, nil
	})
	if res["failed"] != true || !strings.Contains(res["msg"].(string), "internal error") {
		t.Errorf("unknown result type %v", res)
	}
}

func TestApplyDefaults(t *testing.T) {
	t.Parallel()
	type paths struct {
		Hosts   string        `ansible:"hosts_file,path" default:"/etc/hosts"`
		Extra   []string      `ansible:"extra" default:"a,b"`
		Reload  bool          `ansible:"reload" default:"true"`
		Wait    time.Duration `ansible:"wait,seconds" default:"30"`
		NoValue string        `ansible:"no_value"`
	}
	p := paths{Extra: []string{}}
	if err := ansible.ApplyDefaults(&p); err != nil {
		t.Fatal(err)
	}
	if p.Hosts != "/etc/hosts" || p.Extra == nil || len(p.Extra) != 0 || p.Reload || p.Wait != 30*time.Second || p.NoValue != "" {
		t.Errorf("defaults applied: %+v", p)
	}
	p = paths{Hosts: "/tmp/hosts"}
	if err := ansible.ApplyDefaults(&p); err != nil || p.Hosts != "/tmp/hosts" || !slices.Equal(p.Extra, []string{"a", "b"}) {
		t.Errorf("defaults over given values: %+v %v", p, err)
	}
	p = paths{}
	if err := ansible.ApplyDefaults(&p, "wait"); err != nil || p.Hosts != "" || p.Wait != 30*time.Second {
		t.Errorf("defaults of the named options only: %+v %v", p, err)
	}
	if err := ansible.ApplyDefaults(p); err == nil {
		t.Error("ApplyDefaults accepted a struct value")
	}
}
