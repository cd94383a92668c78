package publish_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestPromoteImagegateRegistry promotes on imagegate's registry, which
// deletes single tags through the distribution API and keeps no tag times:
// the sweep ages tags by their image's creation time.
func TestPromoteImagegateRegistry(t *testing.T) {
	t.Parallel()
	reg := transfertest.Ours(t)
	now := time.Now()
	app := image(t, "12", "app change 12", now)
	reg.Push(t, "myorg/app:change_12_latest", app)
	reg.Push(t, "myorg/app:change_3_latest", image(t, "3", "three days old", now.Add(-72*time.Hour)))
	reg.Push(t, "myorg/app:change_13_latest", image(t, "13", "an hour old", now.Add(-time.Hour)))
	reg.Push(t, "myorg/app:change_14_latest", image(t, "14", "reproducible", time.Unix(0, 0)))
	reg.Push(t, "myorg/app:v0.1", image(t, "", "old release", now.Add(-1000*time.Hour)))
	spec := publish.PromoteSpec{
		Images:      []zuul.Image{{Repository: "myorg/app", Tags: []string{"latest"}}},
		Target:      publish.Target{Registry: reg.Host, Cert: string(reg.CA)},
		Credentials: creds(reg),
		Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		Sweep:       true, StaleAge: 24 * time.Hour,
		Jobs: 8,
	}
	res, err := publish.Promote(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"latest": testenv.DigestOf(t, app), "change_12_latest": "", "change_3_latest": "",
		"change_13_latest": "x", "change_14_latest": "x", "v0.1": "x",
	}
	for tag, w := range want {
		got := reg.Digest(t, "myorg/app:"+tag)
		if (w == "" && got != "") || (w == "x" && got == "") || (w != "" && w != "x" && got != w) {
			t.Errorf("myorg/app:%s = %q, want %q", tag, got, w)
		}
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "change_14_latest: the sweep cannot tell its age") {
		t.Errorf("no warning for the reproducible image: %q", w)
	}
	res, err = publish.Promote(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || !res.Promoted[0].AlreadyPromoted {
		t.Errorf("second run: changed %v, %+v", res.Changed, res.Promoted)
	}
}

// interrupter is a transport that cancels the promote's context right
// after the n-th request matching method and path fragment got its answer:
// the promote is cut off there, as when the job is killed.
type interrupter struct {
	base   http.RoundTripper
	method string
	frag   string
	n      int32
	seen   atomic.Int32
	cancel context.CancelFunc
	once   sync.Once
}

func (i *interrupter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := i.base.RoundTrip(r)
	if r.Method == i.method && strings.Contains(r.URL.Path, i.frag) && i.seen.Add(1) == i.n {
		i.once.Do(i.cancel)
	}
	return resp, err
}

// TestPromoteInterrupted cuts a promote off after its first PUT, and
// another after its first staging tag deletion, then runs it again: it ends
// with every final tag at the staged digest and every staging tag gone.
func TestPromoteInterrupted(t *testing.T) {
	t.Parallel()
	for _, cut := range []struct{ name, method, frag string }{
		{"after the first PUT", http.MethodPut, "/manifests/"},
		{"after the first staging delete", http.MethodDelete, "/manifests/change_12_"},
	} {
		t.Run(cut.name, func(t *testing.T) {
			t.Parallel()
			reg := transfertest.Ours(t)
			app, lib := image(t, "12", "app", time.Now()), index(t, "12", "lib", time.Now())
			for _, tag := range []string{"latest", "v1", "v1.2"} {
				reg.Push(t, "myorg/app:change_12_"+tag, app)
				reg.Push(t, "myorg/lib:change_12_"+tag, lib)
			}
			spec := publish.PromoteSpec{
				Images: []zuul.Image{
					{Repository: "myorg/app", Tags: []string{"latest", "v1", "v1.2"}},
					{Repository: "myorg/lib", Tags: []string{"latest", "v1", "v1.2"}},
				},
				Target:      publish.Target{Registry: reg.Host, Cert: string(reg.CA)},
				Credentials: creds(reg),
				Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
				Jobs:        1,
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rt := &interrupter{method: cut.method, frag: cut.frag, n: 1, cancel: cancel}
			wrap := func(next http.RoundTripper) http.RoundTripper { rt.base = next; return rt }
			if _, err := publish.Promote(ctx, spec, publish.WithTransportWrapper(wrap)); err == nil && cut.method == http.MethodPut {
				t.Fatal("the interrupted promote did not fail")
			} else if err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("interrupted: %v", err)
			}
			if rt.seen.Load() < 1 {
				t.Fatal("the cut was never reached")
			}
			res, err := publish.Promote(context.Background(), spec)
			if err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if !res.Changed {
				t.Error("the re-run finished the job but reports no change")
			}
			recovered := 0
			for _, p := range res.Promoted {
				if p.AlreadyPromoted {
					recovered++
				}
			}
			if cut.method == http.MethodDelete && recovered != 1 {
				t.Errorf("%d tags recognised as promoted by the cut-off run, want 1 (the one whose staging tag it deleted)", recovered)
			}
			for _, tag := range []string{"latest", "v1", "v1.2"} {
				if got := reg.Digest(t, "myorg/app:"+tag); got != testenv.DigestOf(t, app) {
					t.Errorf("myorg/app:%s = %q", tag, got)
				}
				if got := reg.Digest(t, "myorg/lib:"+tag); got != testenv.DigestOf(t, lib) {
					t.Errorf("myorg/lib:%s = %q", tag, got)
				}
				for _, repo := range []string{"myorg/app", "myorg/lib"} {
					if got := reg.Digest(t, repo+":change_12_"+tag); got != "" {
						t.Errorf("%s:change_12_%s still there", repo, tag)
					}
				}
			}
			res, err = publish.Promote(context.Background(), spec)
			if err != nil || res.Changed {
				t.Errorf("third run: changed %v, %v", res != nil && res.Changed, err)
			}
		})
	}
}
