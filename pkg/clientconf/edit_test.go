package clientconf

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

const loc = "zuul-jobs.buildset-registry:5000"

func TestEditHosts(t *testing.T) {
	cases := []struct {
		name, before, want string
	}{
		{"empty", "", "192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"appends", "127.0.0.1 localhost\n", "127.0.0.1 localhost\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"no final newline", "127.0.0.1 localhost", "127.0.0.1 localhost\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"present", "# c\n192.0.2.7\tzuul-jobs.buildset-registry\n", "# c\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"present among names", "192.0.2.7 a zuul-jobs.buildset-registry b\n", "192.0.2.7 a zuul-jobs.buildset-registry b\n"},
		{"stale line dropped", "127.0.0.1 localhost\n10.0.0.1\tzuul-jobs.buildset-registry\n",
			"127.0.0.1 localhost\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"stale alias removed from shared line", "10.0.0.1 x zuul-jobs.buildset-registry # old\n",
			"10.0.0.1\tx # old\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
		{"commented mapping ignored", "#192.0.2.7 zuul-jobs.buildset-registry\n",
			"#192.0.2.7 zuul-jobs.buildset-registry\n192.0.2.7\tzuul-jobs.buildset-registry\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(editHosts([]byte(tc.before), "192.0.2.7", "zuul-jobs.buildset-registry"))
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if again := string(editHosts([]byte(got), "192.0.2.7", "zuul-jobs.buildset-registry")); again != got {
				t.Errorf("second edit changed %q to %q", got, again)
			}
		})
	}
	t.Run("ipv6", func(t *testing.T) {
		got := string(editHosts([]byte("fd00:0::2 zuul-jobs.buildset-registry\n"), "fd00::2", "zuul-jobs.buildset-registry"))
		if got != "fd00:0::2 zuul-jobs.buildset-registry\n" {
			t.Errorf("an equal IPv6 address in another spelling was not accepted: %q", got)
		}
	})
}

func TestEditDaemonJSON(t *testing.T) {
	mirror := "https://" + loc + "/"
	cases := []struct {
		name, before string
		want         []string
		keys         []string
		unchanged    bool
	}{
		{name: "absent", before: "", want: []string{mirror}, keys: []string{"registry-mirrors"}},
		{name: "keeps other keys in order", before: `{"debug": true, "log-opts": {"max-size": "10m"}, "storage-driver": "overlay2"}`,
			want: []string{mirror}, keys: []string{"debug", "log-opts", "storage-driver", "registry-mirrors"}},
		{name: "existing mirrors kept after ours", before: `{"registry-mirrors": ["https://mirror.example.com"], "debug": false}`,
			want: []string{mirror, "https://mirror.example.com"}, keys: []string{"registry-mirrors", "debug"}},
		{name: "ours moved to the front", before: `{"registry-mirrors": ["https://m.example.com/", "https://` + loc + `"]}`,
			want: []string{mirror, "https://m.example.com/"}, keys: []string{"registry-mirrors"}},
		{name: "already first", before: `{"registry-mirrors": ["` + mirror + `", "https://m.example.com"]}`,
			want: []string{mirror, "https://m.example.com"}, unchanged: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			after, mirrors, err := editDaemonJSON([]byte(tc.before), mirror)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(mirrors, tc.want) {
				t.Errorf("mirrors %q, want %q", mirrors, tc.want)
			}
			if tc.unchanged {
				if string(after) != tc.before {
					t.Errorf("file rewritten although nothing changed: %s", after)
				}
				return
			}
			var doc map[string]any
			if err := json.Unmarshal(after, &doc); err != nil {
				t.Fatalf("result is not JSON: %v\n%s", err, after)
			}
			ms, _ := parseObject(after)
			var keys []string
			for _, m := range ms {
				keys = append(keys, m.key)
			}
			if !reflect.DeepEqual(keys, tc.keys) {
				t.Errorf("keys %q, want %q", keys, tc.keys)
			}
			if tc.name == "keeps other keys in order" && doc["log-opts"].(map[string]any)["max-size"] != "10m" {
				t.Errorf("nested value lost: %s", after)
			}
			again, _, err := editDaemonJSON(after, mirror)
			if err != nil || string(again) != string(after) {
				t.Errorf("second edit changed the file: %v\n%s\n%s", err, after, again)
			}
		})
	}
	for _, bad := range []string{`{"registry-mirrors": "x"}`, `{"a": 1`, `[1]`, `{"a":1} {}`, `{"a":1,"a":2}`, `{"a": tru}`} {
		if _, _, err := editDaemonJSON([]byte(bad), mirror); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func decodeTOML(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		t.Fatalf("not TOML: %v\n%s", err, b)
	}
	return m
}

func mirrorLocations(t *testing.T, doc map[string]any, prefix string) []string {
	t.Helper()
	for _, r := range doc["registry"].([]any) {
		r := r.(map[string]any)
		if r["prefix"] == prefix {
			var out []string
			for _, m := range r["mirror"].([]any) {
				out = append(out, m.(map[string]any)["location"].(string))
			}
			return out
		}
	}
	t.Fatalf("no [[registry]] for %s", prefix)
	return nil
}

func TestEditRegistriesConf(t *testing.T) {
	nss := []Namespace{{"docker.io", "https://registry-1.docker.io"}, {"quay.io", "https://quay.io"}}
	before := `# site configuration
unqualified-search-registries = ["example.com"]
short-name-mode = "enforcing"

[[registry]]
prefix = "quay.io"
location = "quay.io"
mirror-by-digest-only = false

[[registry.mirror]]
location = "mirror.example.com:5000/quay"
insecure = true

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/foo"
blocked = false

[aliases]
"busybox" = "docker.io/library/busybox"
`
	after, warns, err := editRegistriesConf([]byte(before), loc, nss, []string{"docker.io", "quay.io"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %q", warns)
	}
	doc := decodeTOML(t, after)
	if got := mirrorLocations(t, doc, "quay.io"); !reflect.DeepEqual(got, []string{loc + "/quay.io", "mirror.example.com:5000/quay"}) {
		t.Errorf("quay.io mirrors %q", got)
	}
	if got := mirrorLocations(t, doc, "docker.io"); !reflect.DeepEqual(got, []string{loc, "docker.io"}) {
		t.Errorf("docker.io mirrors %q", got)
	}
	if !reflect.DeepEqual(doc["unqualified-search-registries"], []any{"docker.io", "quay.io"}) {
		t.Errorf("unqualified-search-registries %v", doc["unqualified-search-registries"])
	}
	if doc["short-name-mode"] != "enforcing" || doc["aliases"].(map[string]any)["busybox"] != "docker.io/library/busybox" {
		t.Errorf("unrelated keys lost:\n%s", after)
	}
	regs := doc["registry"].([]any)
	if len(regs) != 3 || regs[1].(map[string]any)["location"] != "internal.example.com/foo" {
		t.Errorf("unrelated [[registry]] lost or reordered:\n%s", after)
	}
	if m := regs[0].(map[string]any)["mirror"].([]any)[1].(map[string]any); m["insecure"] != true {
		t.Errorf("existing mirror settings lost: %v", m)
	}
	again, _, err := editRegistriesConf(after, loc, nss, []string{"docker.io", "quay.io"})
	if err != nil || string(again) != string(after) {
		t.Errorf("second edit changed the file: %v\n%s", err, again)
	}

	t.Run("location without prefix matches", func(t *testing.T) {
		after, _, err := editRegistriesConf([]byte("[[registry]]\nlocation = \"quay.io\"\n"), loc, nss[1:], nil)
		if err != nil {
			t.Fatal(err)
		}
		regs := decodeTOML(t, after)["registry"].([]any)
		if len(regs) != 1 {
			t.Fatalf("a second table was added:\n%s", after)
		}
	})
	t.Run("digest-only warns", func(t *testing.T) {
		_, warns, err := editRegistriesConf([]byte("[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\nmirror-by-digest-only = true\n"), loc, nss[:1], nil)
		if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "mirror-by-digest-only") {
			t.Errorf("warnings %q, err %v", warns, err)
		}
	})
	t.Run("unchanged file kept byte for byte", func(t *testing.T) {
		in := []byte("# keep me\nunqualified-search-registries = ['docker.io']\n\n[[registry]]\nprefix = 'docker.io'\nlocation = 'docker.io'\n[[registry.mirror]]\nlocation = '" + loc + "'\n")
		out, _, err := editRegistriesConf(in, loc, nss[:1], []string{"docker.io"})
		if err != nil || string(out) != string(in) {
			t.Errorf("rewritten: %v\n%s", err, out)
		}
	})
	for name, bad := range map[string]string{
		"syntax":       "[[registry]\nprefix = 1",
		"v1":           "[registries.search]\nregistries = ['docker.io']\n",
		"registry map": "[registry]\nprefix = 'x'\n",
		"mirror type":  "[[registry]]\nprefix = 'docker.io'\nmirror = 'x'\n",
	} {
		t.Run("bad "+name, func(t *testing.T) {
			if _, _, err := editRegistriesConf([]byte(bad), loc, nss, nil); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestEditBuildkitdTOML(t *testing.T) {
	nss := []Namespace{{"docker.io", "https://registry-1.docker.io"}, {"quay.io", "https://quay.io"}}
	before := `debug = true
[worker.oci]
  gc = false
[registry."docker.io"]
  mirrors = ["mirror.gcr.io"]
[registry."` + loc + `"]
  ca = ["/etc/site-ca.pem"]
  http = true
`
	after, err := editBuildkitdTOML([]byte(before), loc, []string{loc, "192.0.2.7:5000"}, "/ca/ca.crt", nss)
	if err != nil {
		t.Fatal(err)
	}
	doc := decodeTOML(t, after)
	regs := doc["registry"].(map[string]any)
	if got := regs["docker.io"].(map[string]any)["mirrors"]; !reflect.DeepEqual(got, []any{loc, "mirror.gcr.io"}) {
		t.Errorf("docker.io mirrors %v", got)
	}
	if got := regs["quay.io"].(map[string]any)["mirrors"]; !reflect.DeepEqual(got, []any{loc + "/quay.io"}) {
		t.Errorf("quay.io mirrors %v", got)
	}
	own := regs[loc].(map[string]any)
	if !reflect.DeepEqual(own["ca"], []any{"/etc/site-ca.pem", "/ca/ca.crt"}) || own["http"] != false {
		t.Errorf("mirror section %v", own)
	}
	// The address, where docker_image_build pushes when the alias does not
	// resolve, is trusted too.
	if addr := regs["192.0.2.7:5000"].(map[string]any); !reflect.DeepEqual(addr["ca"], []any{"/ca/ca.crt"}) || addr["http"] != false {
		t.Errorf("address section %v", addr)
	}
	if doc["debug"] != true || doc["worker"].(map[string]any)["oci"].(map[string]any)["gc"] != false {
		t.Errorf("unrelated settings lost:\n%s", after)
	}
	again, err := editBuildkitdTOML(after, loc, []string{loc, "192.0.2.7:5000"}, "/ca/ca.crt", nss)
	if err != nil || string(again) != string(after) {
		t.Errorf("second edit changed the file: %v\n%s", err, again)
	}
	for _, bad := range []string{"registry = 1", "[registry]\n'docker.io' = 2", "[registry.'docker.io']\nmirrors = 'x'", "debug = "} {
		if _, err := editBuildkitdTOML([]byte(bad), loc, []string{loc}, "/ca", nss); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestEditHostsTOML(t *testing.T) {
	ns := Namespace{"quay.io", "https://quay.io"}
	url := MirrorURL(loc, "quay.io")
	if url != "https://"+loc+"/v2/quay.io" || MirrorURL(loc, "docker.io") != "https://"+loc+"/v2" {
		t.Fatalf("MirrorURL: %s", url)
	}
	t.Run("new", func(t *testing.T) {
		after, err := editHostsTOML(nil, ns, url, "/c/ca.crt")
		if err != nil {
			t.Fatal(err)
		}
		doc := decodeTOML(t, after)
		h := doc["host"].(map[string]any)[url].(map[string]any)
		if doc["server"] != "https://quay.io" || h["override_path"] != true || h["ca"] != "/c/ca.crt" ||
			!reflect.DeepEqual(h["capabilities"], []any{"pull", "resolve"}) {
			t.Errorf("got:\n%s", after)
		}
	})
	t.Run("ours first, others kept in order", func(t *testing.T) {
		before := `server = "https://site-quay.example.com"

[host."https://a-mirror.example.com"]
  capabilities = ["pull"]
  [host."https://a-mirror.example.com".header]
    x-token = "t"

[host."https://b-mirror.example.com"]
  skip_verify = true
`
		after, err := editHostsTOML([]byte(before), ns, url, "/c/ca.crt")
		if err != nil {
			t.Fatal(err)
		}
		order, err := hostOrder(after)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{url, "https://a-mirror.example.com", "https://b-mirror.example.com"}; !reflect.DeepEqual(order, want) {
			t.Errorf("host order %q, want %q\n%s", order, want, after)
		}
		doc := decodeTOML(t, after)
		if doc["server"] != "https://site-quay.example.com" {
			t.Errorf("existing server replaced:\n%s", after)
		}
		a := doc["host"].(map[string]any)["https://a-mirror.example.com"].(map[string]any)
		if a["header"].(map[string]any)["x-token"] != "t" {
			t.Errorf("nested header lost:\n%s", after)
		}
		again, err := editHostsTOML(after, ns, url, "/c/ca.crt")
		if err != nil || string(again) != string(after) {
			t.Errorf("second edit changed the file: %v\n%s", err, again)
		}
	})
	t.Run("ours moved to the front", func(t *testing.T) {
		before := "server = 'https://quay.io'\n[host.'https://x.example.com']\n[host.'" + url + "']\ncapabilities = ['pull', 'resolve']\nca = '/c/ca.crt'\noverride_path = true\n"
		after, err := editHostsTOML([]byte(before), ns, url, "/c/ca.crt")
		if err != nil {
			t.Fatal(err)
		}
		if order, _ := hostOrder(after); order[0] != url {
			t.Errorf("order %q", order)
		}
	})
	if _, err := editHostsTOML([]byte("host = 3"), ns, url, "/c"); err == nil {
		t.Error("host = 3: no error")
	}
	if _, err := editHostsTOML([]byte("[host.'x'"), ns, url, "/c"); err == nil {
		t.Error("bad syntax: no error")
	}
}

func TestParseNamespaces(t *testing.T) {
	got, err := ParseNamespaces([][]string{{"docker.io", "https://registry-1.docker.io"}, {" ghcr.io ", "https://ghcr.io"}, {"registry.example.com:5000", "http://registry.example.com:5000"}})
	if err != nil {
		t.Fatal(err)
	}
	if got[1].Host != "ghcr.io" || len(got) != 3 {
		t.Errorf("%v", got)
	}
	for _, tc := range []struct {
		in   [][]string
		want string
	}{
		{[][]string{{"docker.io", "https://registry-1.docker.io"}, {"quay.io"}}, "buildset_registry_namespaces[1]: must be a [registry-host, upstream-url] pair"},
		{[][]string{{"quay.io", "https://quay.io", "x"}}, "buildset_registry_namespaces[0]: must be a [registry-host, upstream-url] pair"},
		{[][]string{{"https://quay.io", "https://quay.io"}}, "buildset_registry_namespaces[0]: registry host: \"https://quay.io\" must be a registry name"},
		{[][]string{{"quay.io/org", "https://quay.io"}}, "buildset_registry_namespaces[0]: registry host"},
		{[][]string{{"quay.io", "quay.io"}}, "buildset_registry_namespaces[0]: upstream \"quay.io\" for quay.io is not an http(s) URL"},
		{[][]string{{"", "https://x"}}, "buildset_registry_namespaces[0]: registry host: is empty"},
	} {
		_, err := ParseNamespaces(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}
