package publish_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/quaytest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// quayRegistry is quay emulated in front of imagegate's registry, with a
// token that may read and write (delete tags) and one that may only read.
func quayRegistry(t testing.TB) (registry, *quaytest.Server) {
	t.Helper()
	backend := registrytest.New(t)
	q := quaytest.New(t, quaytest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	q.WithToken("rw-token-5e1f", quaytest.ScopeRead, quaytest.ScopeWrite, quaytest.ScopeCreate)
	q.WithToken("ro-token-77aa", quaytest.ScopeRead)
	return registry{Host: q.RegistryHost, Username: backend.Username, Password: backend.Password, CA: q.CACert}, q
}

func quayCreds(reg registry, q *quaytest.Server, token string) publish.RegistryCredentials {
	return publish.RegistryCredentials{Username: reg.Username, Password: reg.Password, APIToken: token, Repository: "^quay.io/myorg/",
		RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + reg.Host, APIURL: q.URL, Cert: string(reg.CA)}}
}

// TestContainerPromoteTag promotes images of two registries at once: quay
// (tags removed and swept through its API, by last_modified) and
// imagegate's registry (the distribution API's tag delete); then a second,
// unchanged run.
func TestContainerPromoteTag(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	ours := transfertest.Ours(t)
	now := time.Now()
	app := image(t, "12", "quay app 12", now)
	lib := index(t, "12", "our lib 12", now)
	qreg.Push(t, "myorg/app:change_12_latest", app)
	qreg.Push(t, "myorg/app:change_9_latest", image(t, "9", "stale", now))
	qreg.Push(t, "myorg/app:change_10_latest", image(t, "10", "fresh", now))
	qreg.Push(t, "myorg/app:v1", image(t, "", "release", now))
	q.SetLastModified("myorg/app", "change_9_latest", now.Add(-30*time.Hour))
	q.SetLastModified("myorg/app", "v1", now.Add(-300*time.Hour))
	ours.Push(t, "myorg/lib:change_12_latest", lib)
	spec := publish.ContainerPromoteSpec{
		Images: []zuul.Image{
			{Repository: "quay.io/myorg/app", Registry: "quay.io", Tags: []string{"latest"}},
			{Repository: ours.Host + "/myorg/lib", Registry: ours.Host, Tags: []string{"latest"}},
		},
		Credentials: publish.ContainerCredentials{
			"quay.io": quayCreds(qreg, q, "rw-token-5e1f"),
			ours.Host: {Username: ours.Username, Password: ours.Password, RegistryEndpoint: publish.RegistryEndpoint{Cert: string(ours.CA)}},
		},
		Zuul:  zuul.Vars{Change: "12", Pipeline: "promote"},
		Sweep: true,
	}
	ctx := context.Background()
	res, err := publish.ContainerPromote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := qreg.Digest(t, "myorg/app:latest"), testenv.DigestOf(t, app); got != want {
		t.Errorf("quay.io/myorg/app:latest = %s, want %s", got, want)
	}
	if got, want := ours.Digest(t, "myorg/lib:latest"), testenv.DigestOf(t, lib); got != want {
		t.Errorf("%s/myorg/lib:latest = %s, want %s", ours.Host, got, want)
	}
	for ref, present := range map[string]bool{"myorg/app:change_12_latest": false, "myorg/app:change_9_latest": false,
		"myorg/app:change_10_latest": true, "myorg/app:v1": true} {
		if got := qreg.Digest(t, ref) != ""; got != present {
			t.Errorf("quay %s present = %v, want %v", ref, got, present)
		}
	}
	if ours.Digest(t, "myorg/lib:change_12_latest") != "" {
		t.Error("the change tag on imagegate's registry was not deleted")
	}
	calls := strings.Join(q.Calls(), "\n")
	for _, want := range []string{"DELETE /api/v1/repository/myorg/app/tag/change_12_latest 204", "DELETE /api/v1/repository/myorg/app/tag/change_9_latest 204"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no quay call %q in:\n%s", want, calls)
		}
	}
	if !res.Changed || len(res.Promoted) != 2 || len(res.Warnings) > 0 {
		t.Errorf("result: %+v", res)
	}
	res, err = publish.ContainerPromote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("second run changed: %+v", res)
	}
}

// TestContainerPromoteBadInput: each bad input fails before anything is
// written, naming the image and the cause, and no final tag moves.
func TestContainerPromoteBadInput(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	now := time.Now()
	qreg.Push(t, "myorg/app:change_12_latest", image(t, "12", "bad input", now))
	base := func() publish.ContainerPromoteSpec {
		return publish.ContainerPromoteSpec{
			Images:      []zuul.Image{{Repository: "quay.io/myorg/app", Registry: "quay.io", Tags: []string{"latest"}}},
			Credentials: publish.ContainerCredentials{"quay.io": quayCreds(qreg, q, "rw-token-5e1f")},
			Zuul:        zuul.Vars{Change: "12", Pipeline: "promote"},
		}
	}
	tests := []struct {
		name   string
		modify func(s *publish.ContainerPromoteSpec)
		want   []string
	}{
		{"no credentials entry", func(s *publish.ContainerPromoteSpec) { s.Images[0].Registry = "ghcr.io" },
			[]string{`container_images[0] (quay.io/myorg/app): container_registry_credentials has no entry for registry "ghcr.io"`}},
		{"repository outside its regex", func(s *publish.ContainerPromoteSpec) {
			c := s.Credentials["quay.io"]
			c.Repository = "^quay.io/otherorg/"
			s.Credentials["quay.io"] = c
		}, []string{`container_images[0]: quay.io/myorg/app not permitted by container_registry_credentials["quay.io"].repository ^quay.io/otherorg/`}},
		{"token without the delete scope", func(s *publish.ContainerPromoteSpec) {
			c := s.Credentials["quay.io"]
			c.APIToken = "ro-token-77aa"
			s.Credentials["quay.io"] = c
		}, []string{`container_images[0] (quay.io/myorg/app)`, `container_registry_credentials["quay.io"].api_token may not delete tags of myorg/app`, "repo:write"}},
		{"no token", func(s *publish.ContainerPromoteSpec) {
			c := s.Credentials["quay.io"]
			c.APIToken = ""
			s.Credentials["quay.io"] = c
		}, []string{`container_registry_credentials["quay.io"].api_token is not set`}},
		{"missing staging tag", func(s *publish.ContainerPromoteSpec) { s.Images[0].Tags = []string{"latest", "v2"} },
			[]string{"container_images[0] (quay.io/myorg/app), tag v2: staging tag quay.io/myorg/app:change_12_v2 does not exist"}},
		{"repository without its registry", func(s *publish.ContainerPromoteSpec) {
			s.Images[0].Repository = "myorg/app"
			c := s.Credentials["quay.io"]
			c.Repository = ""
			s.Credentials["quay.io"] = c
		},
			[]string{"container_images[0] (myorg/app): repository must include its registry"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base()
			tc.modify(&spec)
			_, err := publish.ContainerPromote(context.Background(), spec)
			checkError(t, err, qreg.Password, append([]string{"nothing was promoted"}, tc.want...)...)
			if err != nil && strings.Contains(err.Error(), "rw-token-5e1f") {
				t.Errorf("the error shows the token: %v", err)
			}
			if qreg.Digest(t, "myorg/app:latest") != "" {
				t.Error("a final tag was written")
			}
		})
	}
}

// buildsAPI serves Zuul's builds API over TLS from a list of builds, and
// records the queries.
type buildsAPI struct {
	srv *httptest.Server
	mu  sync.Mutex
	b   []zuul.Build
	q   []string
}

func newBuildsAPI(t testing.TB) *buildsAPI {
	a := &buildsAPI{}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if r.URL.Path != "/api/tenant/example/builds" {
			http.NotFound(w, r)
			return
		}
		a.q = append(a.q, r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a.b)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *buildsAPI) set(b ...zuul.Build) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.b = b
}

func (a *buildsAPI) cert() string {
	return certPEM(a.srv.Certificate())
}

func gateBuild(uuid, start, result string, arts ...zuul.Artifact) zuul.Build {
	b := zuul.Build{UUID: uuid, JobName: "app-upload", Result: result, Pipeline: "gate", StartTime: start, Project: "myorg/app"}
	b.SetChange("12", "3")
	for _, a := range arts {
		b.Artifacts = append(b.Artifacts, zuul.BuildArtifact{Name: a.Name, URL: a.URL, Metadata: a.Metadata})
	}
	return b
}

// TestContainerPromoteIntermediate promotes from the intermediate registry:
// the newest of two gate builds is found through the builds API, its
// artifacts are copied whole (an index keeps its digest) to the final tag,
// and no change tag is ever written; then the bad inputs.
func TestContainerPromoteIntermediate(t *testing.T) {
	t.Parallel()
	ir := transfertest.Ours(t)
	dst := transfertest.Ours(t)
	api := newBuildsAPI(t)
	now := time.Now()
	tested := index(t, "12", "tested in the gate", now)
	older := image(t, "12", "an earlier gate run", now)
	ir.Push(t, "quay.io/myorg/app:newuuid_latest", tested)
	ir.Push(t, "quay.io/myorg/app:olduuid_latest", older)
	irHost, irPort := splitHostPort(t, ir.Host)
	art := func(build string) zuul.Artifact {
		return zuul.NewContainerImageArtifact(irHost, irPort, "quay.io/myorg/app", "latest", build+"_latest")
	}
	api.set(gateBuild("olduuid", "2026-01-01T10:00:00", "FAILURE", art("olduuid")), gateBuild("newuuid", "2026-01-01T11:00:00", "SUCCESS", art("newuuid")))
	spec := publish.ContainerPromoteSpec{
		Images: []zuul.Image{{Repository: "quay.io/myorg/app", Registry: "quay.io", Tags: []string{"latest"}}},
		Credentials: publish.ContainerCredentials{
			"quay.io": {Username: dst.Username, Password: dst.Password, Repository: "^quay.io/myorg/",
				RegistryEndpoint: publish.RegistryEndpoint{RegistryURL: "https://" + dst.Host, Cert: string(dst.CA)}},
			ir.Host: {Username: ir.Username, Password: ir.Password, RegistryEndpoint: publish.RegistryEndpoint{Cert: string(ir.CA)}},
		},
		Zuul:     zuul.Vars{Change: "12", Patchset: "3", Pipeline: "promote"},
		Method:   publish.MethodIntermediateRegistry,
		API:      api.srv.URL + "/api/tenant/example",
		APICert:  api.cert(),
		Pipeline: "gate", Job: "app-upload",
	}
	ctx := context.Background()
	res, err := publish.ContainerPromote(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || dst.Digest(t, "myorg/app:latest") != "" {
		t.Fatalf("check mode: changed %v, or wrote", res.Changed)
	}
	res, err = publish.ContainerPromote(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dst.Digest(t, "myorg/app:latest"), testenv.DigestOf(t, tested); got != want {
		t.Errorf("final tag %s, want the newest gate build's %s", got, want)
	}
	if res.Build == nil || res.Build.UUID != "newuuid" || res.Build.Found != 2 {
		t.Errorf("build: %+v", res.Build)
	}
	if q := api.q[len(api.q)-1]; q != "change=12&job_name=app-upload&patchset=3&pipeline=gate" {
		t.Errorf("query %q", q)
	}
	if tags := tagsOf(t, dst, "myorg/app"); strings.Join(tags, ",") != "latest" {
		t.Errorf("tags in the registry: %v (no change tag may be written)", tags)
	}
	res, err = publish.ContainerPromote(ctx, spec)
	if err != nil || res.Changed {
		t.Errorf("second run: changed %v, %v", res != nil && res.Changed, err)
	}

	bad := []struct {
		name   string
		builds []zuul.Build
		modify func(s *publish.ContainerPromoteSpec)
		want   []string
	}{
		{"no build", nil, nil, []string{"found no build for " + api.srv.URL + "/api/tenant/example/builds?change=12&patchset=3&pipeline=gate&job_name=app-upload"}},
		{"newest failed", []zuul.Build{gateBuild("newuuid", "2026-01-02T11:00:00", "FAILURE", art("newuuid"))}, nil, []string{"has result FAILURE, not SUCCESS"}},
		{"artifact gone", []zuul.Build{gateBuild("gone", "2026-01-02T11:00:00", "SUCCESS", art("gone"))}, nil,
			[]string{"container_images[0] (quay.io/myorg/app), tag latest: the artifact's image " + ir.Host + "/quay.io/myorg/app:gone_latest is gone"}},
		// Every artifact is resolved before anything is copied: the one
		// still there (an earlier run's image) is not published either.
		{"one artifact of two gone", []zuul.Build{gateBuild("partial", "2026-01-02T12:00:00", "SUCCESS",
			zuul.NewContainerImageArtifact(irHost, irPort, "quay.io/myorg/app", "latest", "olduuid_latest"),
			zuul.NewContainerImageArtifact(irHost, irPort, "quay.io/myorg/app", "v2", "partial_v2"))},
			func(s *publish.ContainerPromoteSpec) { s.Images[0].Tags = []string{"latest", "v2"} },
			[]string{"container_images[0] (quay.io/myorg/app), tag v2: the artifact's image " + ir.Host + "/quay.io/myorg/app:partial_v2 is gone"}},
		{"no artifact for a tag", []zuul.Build{gateBuild("newuuid", "2026-01-02T11:00:00", "SUCCESS", art("newuuid"))},
			func(s *publish.ContainerPromoteSpec) { s.Images[0].Tags = []string{"latest", "v2"} },
			[]string{"container_images[0] (quay.io/myorg/app), tag v2: build newuuid (app-upload) has no container_image artifact quay.io/myorg/app:v2"}},
		{"no job", nil, func(s *publish.ContainerPromoteSpec) { s.Job = "" }, []string{"needs promote_container_image_job"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			api.set(tc.builds...)
			s := spec
			s.Images = []zuul.Image{{Repository: "quay.io/myorg/app", Registry: "quay.io", Tags: []string{"latest"}}}
			if tc.modify != nil {
				tc.modify(&s)
			}
			_, err := publish.ContainerPromote(ctx, s)
			checkError(t, err, dst.Password, tc.want...)
			if dst.Digest(t, "myorg/app:v2") != "" || dst.Digest(t, "myorg/app:latest") != testenv.DigestOf(t, tested) {
				t.Error("a final tag was written")
			}
		})
	}
}

func splitHostPort(t testing.TB, hostport string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

func certPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// tagsOf lists a repository's tags through the distribution API.
func tagsOf(t testing.TB, r registry, repo string) []string {
	t.Helper()
	c, err := transfer.New(transfer.WithEndpoint(r.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tags, err := c.ListTags(context.Background(), r.Host+"/"+repo)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(tags)
	return tags
}
