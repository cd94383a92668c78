package publish

import (
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/hubtest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
)

// hubBehind is emulated Docker Hub with a fault-injecting proxy in front of
// its registry endpoint and one in front of its web API.
type hubBehind struct {
	hub                *hubtest.Server
	direct             registry // the registry endpoint, without faults
	regProxy, apiProxy *faultproxy.Proxy
	// registryHost and apiURL are the proxies; cert trusts both.
	registryHost, apiURL, cert string
}

func newHubBehind(t *testing.T, regCfg, apiCfg faultproxy.Config) *hubBehind {
	t.Helper()
	backend := registrytest.New(t)
	hub := hubtest.New(t, hubtest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	h := &hubBehind{hub: hub, direct: registry{Host: hub.RegistryHost, Username: backend.Username, Password: backend.Password, CA: hub.CACert}}
	api, _ := url.Parse(hub.URL)
	regP, regVia := transfertest.Proxy(t, transfertest.Registry{Host: hub.RegistryHost, CA: hub.CACert}, "", regCfg)
	apiP, apiVia := transfertest.Proxy(t, transfertest.Registry{Host: api.Host, CA: hub.CACert}, "", apiCfg)
	h.regProxy, h.apiProxy = regP, apiP
	h.registryHost, h.apiURL = regVia.Host, "https://"+apiVia.Host
	h.cert = string(regVia.CA) + string(apiVia.CA)
	return h
}

func (h *hubBehind) args(images []any, zuulVars map[string]any) map[string]any {
	return map[string]any{
		"docker_images":        images,
		"docker_credentials":   map[string]any{"username": h.direct.Username, "password": h.direct.Password},
		"docker_registry":      "docker.io",
		"docker_registry_url":  "https://" + h.registryHost,
		"docker_hub_url":       h.apiURL,
		"docker_registry_cert": h.cert,
		"zuul":                 zuulVars,
	}
}

// everyNth matches every n-th request a proxy sees. With faults only there,
// no request, and no blob transfer (a few requests), can fail as many
// times in a row as the retry policy tries (5): the test is deterministic
// in outcome, whatever order parallel requests arrive in.
func everyNth(n int64) func(*http.Request) bool {
	var seen atomic.Int64
	return func(*http.Request) bool { return seen.Add(1)%n == 0 }
}

// faultsEvery injects a fault into every n-th request: a reset, a 500/502/503
// before or after the registry did the work, a 429 with Retry-After, or a
// response cut short.
func faultsEvery(seed uint64, n int64) faultproxy.Config {
	return faultproxy.Config{Seed: seed, Reset: 0.25, Error: 0.3, Throttle: 0.15, Truncate: 0.3,
		RetryAfter: time.Second, Match: everyNth(n)}
}

// TestFaultyNetwork uploads and promotes through proxies that reset
// connections, answer 500/502/503 (before and after doing the work), throttle
// with 429 and Retry-After, and cut responses short, between the modules and
// every registry and API (one request in six): both finish, with the right
// digests.
func TestFaultyNetwork(t *testing.T) {
	t.Parallel()
	brs := registrytest.New(t)
	brDirect := registry{Host: brs.Host, Username: brs.Username, Password: brs.Password, CA: brs.CAPEM}
	brProxy, brVia := transfertest.Proxy(t, transfertest.Registry{Host: brs.Host, Username: brs.Username, Password: brs.Password, CA: brs.CAPEM}, "", faultsEvery(1, 6))
	h := newHubBehind(t, faultsEvery(2, 6), faultsEvery(3, 4))

	var images []any
	want := map[string]string{}
	for i, repo := range []string{"myorg/app", "myorg/lib", "myorg/tool"} {
		tags := []any{"latest", "1.0"}
		var d string
		if i == 1 {
			idx := index(t, "42", repo)
			brDirect.Push(t, repo+":latest", idx)
			brDirect.Push(t, repo+":1.0", idx)
			d = testenv.DigestOf(t, idx)
		} else {
			img := image(t, "42", repo, time.Now())
			brDirect.Push(t, repo+":latest", img)
			brDirect.Push(t, repo+":1.0", img)
			d = testenv.DigestOf(t, img)
		}
		for _, tag := range tags {
			want[repo+":"+tag.(string)] = d
		}
		images = append(images, map[string]any{"context": ".", "repository": repo, "tags": tags})
	}
	brHost, brPort, _ := strings.Cut(brVia.Host, ":")
	args := h.args(images, map[string]any{"change": "42", "pipeline": "gate"})
	delete(args, "docker_hub_url")
	args["buildset_registry"] = map[string]any{"host": brHost, "port": brPort, "username": brs.Username, "password": brs.Password, "cert": string(brVia.CA)}
	runModule(t, "docker_image_upload", args)
	for ref, d := range want {
		repo, tag, _ := strings.Cut(ref, ":")
		if got := h.direct.Digest(t, repo+":change_42_"+tag); got != d {
			t.Errorf("staged %s = %q, want %s", ref, got, d)
		}
	}

	args = h.args(images, map[string]any{"change": "42", "pipeline": "promote"})
	res := runModule(t, "docker_image_promote", args)
	for ref, d := range want {
		repo, tag, _ := strings.Cut(ref, ":")
		if got := h.direct.Digest(t, ref); got != d {
			t.Errorf("promoted %s = %q, want %s", ref, got, d)
		}
		if got := h.direct.Digest(t, repo+":change_42_"+tag); got != "" {
			t.Errorf("staging tag of %s still there", ref)
		}
	}
	if w, ok := res["warnings"]; ok {
		t.Errorf("warnings: %v", w)
	}
	for name, p := range map[string]*faultproxy.Proxy{"buildset registry": brProxy, "registry": h.regProxy, "web API": h.apiProxy} {
		s := p.Stats()
		t.Logf("%s proxy: %d requests, %d resets, %d errors, %d throttles, %d truncations", name, s.Requests, s.Resets, s.Errors, s.Throttles, s.Truncations)
		if s.Faults() == 0 {
			t.Errorf("no fault was injected in front of the %s: the test proves nothing", name)
		}
	}
}

// TestRegistryDown: a web API that answers 503 to everything fails the
// promote with a message saying where, after the retries, and changes
// nothing.
func TestRegistryDown(t *testing.T) {
	t.Parallel()
	h := newHubBehind(t, faultproxy.Config{}, faultproxy.Config{FailAll: http.StatusServiceUnavailable})
	img := image(t, "42", "app", time.Now())
	h.direct.Push(t, "myorg/app:change_42_latest", img)
	args := h.args([]any{map[string]any{"context": ".", "repository": "myorg/app"}}, map[string]any{"change": "42", "pipeline": "promote"})
	_, _, err := runModuleErr(t, "docker_image_promote", args)
	if err == nil || !strings.Contains(err.Error(), "logging in to Docker Hub") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v", err)
	}
	if h.direct.Digest(t, "myorg/app:latest") != "" {
		t.Error("promoted although the web API is down")
	}
	if n := h.apiProxy.Stats().Requests; n < 2 {
		t.Errorf("%d login attempts: no retry", n)
	}
}

// TestPromoteKilled kills the promote module (SIGKILL) in the middle of
// writing the final tags, and in the middle of deleting the staging tags,
// then runs it again: it finishes, every final tag at the staged digest and
// every staging tag gone.
func TestPromoteKilled(t *testing.T) {
	t.Parallel()
	for _, phase := range []string{"writing final tags", "deleting staging tags"} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			// The second request of the phase hangs, so the kill lands
			// with the first done and the rest not.
			var seen atomic.Int32
			hang := faultproxy.Config{Slow: 1, Delay: 10 * time.Minute}
			var regCfg, apiCfg faultproxy.Config
			if phase == "writing final tags" {
				hang.Match = func(r *http.Request) bool {
					return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && seen.Add(1) > 1
				}
				regCfg = hang
			} else {
				hang.Match = func(r *http.Request) bool {
					return r.Method == http.MethodDelete && seen.Add(1) > 1
				}
				apiCfg = hang
			}
			h := newHubBehind(t, regCfg, apiCfg)
			var images []any
			want := map[string]string{}
			for _, repo := range []string{"myorg/app", "myorg/lib"} {
				img := image(t, "42", repo, time.Now())
				for _, tag := range []string{"latest", "1", "1.0"} {
					h.direct.Push(t, repo+":change_42_"+tag, img)
					want[repo+":"+tag] = testenv.DigestOf(t, img)
				}
				images = append(images, map[string]any{"context": ".", "repository": repo, "tags": []any{"latest", "1", "1.0"}})
			}
			args := h.args(images, map[string]any{"change": "42", "pipeline": "promote"})
			args["jobs"] = 1

			cmd, _ := moduleCommand(t, "docker_image_promote", args)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, "the promote to reach the hanging request", time.Minute, nil, func() error {
				if seen.Load() < 2 {
					return errNotYet
				}
				return nil
			})
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()

			finals, stagings := 0, 0
			for ref := range want {
				repo, tag, _ := strings.Cut(ref, ":")
				if h.direct.Digest(t, ref) != "" {
					finals++
				}
				if h.direct.Digest(t, repo+":change_42_"+tag) != "" {
					stagings++
				}
			}
			switch phase {
			case "writing final tags":
				if finals != 1 || stagings != 6 {
					t.Fatalf("after the kill: %d final tags, %d staging tags; want 1 and 6", finals, stagings)
				}
			default:
				if finals != 6 || stagings != 5 {
					t.Fatalf("after the kill: %d final tags, %d staging tags; want 6 and 5", finals, stagings)
				}
			}

			if err := h.regProxy.SetConfig(faultproxy.Config{}); err != nil {
				t.Fatal(err)
			}
			if err := h.apiProxy.SetConfig(faultproxy.Config{}); err != nil {
				t.Fatal(err)
			}
			res := runModule(t, "docker_image_promote", args)
			if changed, _ := res["changed"].(bool); !changed {
				t.Error("the re-run reports no change, but it finished the promote")
			}
			for ref, d := range want {
				repo, tag, _ := strings.Cut(ref, ":")
				if got := h.direct.Digest(t, ref); got != d {
					t.Errorf("%s = %q, want %s", ref, got, d)
				}
				if h.direct.Digest(t, repo+":change_42_"+tag) != "" {
					t.Errorf("%s:change_42_%s still there", repo, tag)
				}
			}
			res = runModule(t, "docker_image_promote", args)
			if changed, _ := res["changed"].(bool); changed {
				t.Error("a third run changed something")
			}
		})
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
