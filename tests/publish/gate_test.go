package publish

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/hubtest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
)

// TestGateAndPromote runs the gate and promote steps of one change through
// ansible-playbook: upload from the buildset registry, promote, and a
// stale staging tag of an older change swept, on emulated Docker Hub and
// on Debian's docker-registry (which cannot delete a tag: the promote
// warns and leaves the staging tags).
func TestGateAndPromote(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"docker hub", "docker-registry"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			brs := registrytest.New(t)
			br := registry{Host: brs.Host, Username: brs.Username, Password: brs.Password, CA: brs.CAPEM}
			app := image(t, "42", "app of change 42", time.Now())
			multi := index(t, "42", "multi of change 42")
			br.Push(t, "myorg/app:latest", app)
			br.Push(t, "myorg/app:1.0", app)
			br.Push(t, "myorg/multi:latest", multi)

			vars := map[string]any{
				"images": []any{
					map[string]any{"context": ".", "repository": "myorg/app", "tags": []any{"latest", "1.0"}},
					map[string]any{"context": "images/multi", "repository": "myorg/multi", "arch": []any{"linux/amd64", "linux/arm64"}},
				},
				"br":            map[string]any{"host": "127.0.0.1", "port": brs.Port, "username": brs.Username, "password": brs.Password, "cert": string(brs.CAPEM)},
				"zuul_gate":     map[string]any{"change": "42", "patchset": "3", "pipeline": "gate", "project": map[string]any{"short_name": "app"}},
				"zuul_promote":  map[string]any{"change": "42", "patchset": "3", "pipeline": "promote", "project": map[string]any{"short_name": "app"}},
				"upload_count":  3,
				"out":           filepath.Join(t.TempDir(), "results.json"),
				"registry_cert": "",
			}
			var tgt registry
			var hub *hubtest.Server
			stale := image(t, "7", "app of change 7", time.Now().Add(-30*time.Hour))
			switch target {
			case "docker hub":
				backend := registrytest.New(t)
				hub = hubtest.New(t, hubtest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
				tgt = registry{Host: hub.RegistryHost, Username: backend.Username, Password: backend.Password, CA: hub.CACert}
				vars["registry"], vars["registry_url"], vars["hub_url"] = "docker.io", "https://"+hub.RegistryHost, hub.URL
				tgt.Push(t, "myorg/app:change_7_latest", stale)
				hub.SetLastUpdated("myorg/app", "change_7_latest", time.Now().Add(-30*time.Hour))
			case "docker-registry":
				d := testenv.StartDistribution(t, testenv.DistributionOptions{})
				tgt = registry{Host: d.Host, Username: d.Username, Password: d.Password, CA: d.TLS.CA.CertPEM}
				vars["registry"] = d.Host
				tgt.Push(t, "myorg/app:change_7_latest", stale)
			}
			vars["registry_cert"] = string(tgt.CA)
			vars["credentials"] = map[string]any{"username": tgt.Username, "password": tgt.Password, "repository": "^myorg/"}

			out := playbook(t, "gate_and_promote.yaml", vars)
			for _, secret := range []string{tgt.Password, brs.Password} {
				if strings.Contains(out, secret) {
					t.Errorf("a password is in the ansible-playbook output")
				}
			}
			b, err := os.ReadFile(vars["out"].(string))
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Upload struct {
					Uploads []struct{ Reference, Digest string }
				}
				Promote struct {
					Promoted []struct{ Reference, Digest string }
					Deleted  []struct {
						Reference, Reason string
						Deleted           bool
					}
					Warnings []string
				}
				PromoteCheck struct {
					Diff []struct{ Before, After string }
				} `json:"promote_check"`
			}
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"myorg/app:latest": testenv.DigestOf(t, app), "myorg/app:1.0": testenv.DigestOf(t, app), "myorg/multi:latest": testenv.DigestOf(t, multi)}
			for ref, d := range want {
				if got := tgt.Digest(t, ref); got != d {
					t.Errorf("%s = %q, want %s", ref, got, d)
				}
			}
			for _, u := range res.Upload.Uploads {
				if !strings.Contains(u.Reference, ":change_42_") || u.Digest == "" {
					t.Errorf("upload %+v", u)
				}
			}
			if len(res.PromoteCheck.Diff) != 1 || !strings.Contains(res.PromoteCheck.Diff[0].After, "myorg/multi:latest -> "+testenv.DigestOf(t, multi)) {
				t.Errorf("check mode diff: %+v", res.PromoteCheck.Diff)
			}
			staging := []string{"myorg/app:change_42_latest", "myorg/app:change_42_1.0", "myorg/multi:change_42_latest", "myorg/app:change_7_latest"}
			switch target {
			case "docker hub":
				for _, ref := range staging {
					if d := tgt.Digest(t, ref); d != "" {
						t.Errorf("%s still there", ref)
					}
				}
				calls := strings.Join(hub.Calls(), "\n")
				for _, c := range []string{"DELETE /v2/repositories/myorg/app/tags/change_42_1.0/ 204", "DELETE /v2/repositories/myorg/app/tags/change_7_latest/ 204"} {
					if !strings.Contains(calls, c) {
						t.Errorf("no %q in the web API calls:\n%s", c, calls)
					}
				}
			case "docker-registry":
				for _, ref := range staging {
					if d := tgt.Digest(t, ref); d == "" {
						t.Errorf("%s deleted on a registry that cannot delete tags (by digest?)", ref)
					}
				}
				if !strings.Contains(out, "cannot delete a single tag") {
					t.Error("no warning about tag deletion in the ansible-playbook output")
				}
			}
		})
	}
}
