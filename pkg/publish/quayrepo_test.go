package publish_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/quaytest"
	"github.com/imagegate/imagegate/pkg/publish"
)

func quayRepoCreds(reg registry, q *quaytest.Server, token string) publish.ContainerCredentials {
	return publish.ContainerCredentials{"quay.io": {APIToken: token, Repository: "^quay.io/myorg/",
		RegistryEndpoint: publish.RegistryEndpoint{APIURL: q.URL, Cert: string(reg.CA)}}}
}

// TestEnsureQuayRepositories creates the missing repositories of
// container_images with their visibility (public unless asked), skips an
// entry made for the build roles, leaves an existing repository alone,
// then changes a visibility when the entry asks; check mode writes
// nothing and second runs change nothing.
func TestEnsureQuayRepositories(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	q.WithToken("admin-token-3c9e", quaytest.ScopeRead, quaytest.ScopeCreate, quaytest.ScopeAdmin)
	qreg.Push(t, "myorg/pushed:latest", image(t, "", "pushed", time.Now()))
	spec := publish.QuayRepositorySpec{
		Images: []publish.QuayRepositoryImage{
			{Registry: "quay.io", Context: ".", Repository: "quay.io/myorg/build-only", Tags: []string{"latest"}},
			{Registry: "quay.io", Namespace: "myorg", RepoShortname: "app", RepoDescription: "The app"},
			{Registry: "quay.io", Namespace: "myorg", RepoShortname: "secret", Visibility: "private", Repository: "quay.io/myorg/secret"},
			{Registry: "quay.io", Namespace: "myorg", RepoShortname: "pushed"},
		},
		Credentials: quayRepoCreds(qreg, q, "admin-token-3c9e"),
	}
	ctx := context.Background()
	res, err := publish.EnsureQuayRepositories(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Visibility("myorg/app"); ok || !res.Changed {
		t.Fatalf("check mode: %+v", res)
	}
	res, err = publish.EnsureQuayRepositories(ctx, spec, publish.WithDiff(true))
	if err != nil {
		t.Fatal(err)
	}
	actions := []string{}
	for _, r := range res.Repositories {
		actions = append(actions, r.Action)
	}
	if strings.Join(actions, ",") != "skipped,created,created,unchanged" || !res.Changed || len(res.Diff) != 1 {
		t.Errorf("actions %v: %+v", actions, res)
	}
	for repo, want := range map[string]string{"myorg/app": "public", "myorg/secret": "private", "myorg/pushed": "private"} {
		if got, _ := q.Visibility(repo); got != want {
			t.Errorf("%s is %q, want %s", repo, got, want)
		}
	}
	if res, err = publish.EnsureQuayRepositories(ctx, spec); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
	spec.Images[3].Visibility = "public"
	if res, err = publish.EnsureQuayRepositories(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Visibility("myorg/pushed"); got != "public" || res.Repositories[3].Action != "visibility" ||
		res.Repositories[3].PreviousVisibility != "private" {
		t.Errorf("visibility: %s, %+v", got, res.Repositories[3])
	}
	if res, err = publish.EnsureQuayRepositories(ctx, spec); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
}

// TestEnsureQuayRepositoriesScopes: a token with only the create scope
// (what upstream asks for) creates a missing repository and takes an
// existing one as it is; a token without it fails naming the repository.
func TestEnsureQuayRepositoriesScopes(t *testing.T) {
	t.Parallel()
	qreg, q := quayRegistry(t)
	q.WithToken("create-token-1b2c", quaytest.ScopeCreate)
	spec := publish.QuayRepositorySpec{
		Images:      []publish.QuayRepositoryImage{{Registry: "quay.io", Namespace: "myorg", RepoShortname: "app"}},
		Credentials: quayRepoCreds(qreg, q, "ro-token-77aa"),
	}
	ctx := context.Background()
	_, err := publish.EnsureQuayRepositories(ctx, spec)
	checkError(t, err, "ro-token-77aa", `container_images[0] (quay.io/myorg/app): container_registry_credentials["quay.io"].api_token may not create quay.io/myorg/app`,
		"Create Repositories")
	if _, ok := q.Visibility("myorg/app"); ok {
		t.Fatal("created with a read-only token")
	}
	spec.Credentials = quayRepoCreds(qreg, q, "create-token-1b2c")
	res, err := publish.EnsureQuayRepositories(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Visibility("myorg/app"); got != "public" || !res.Changed {
		t.Errorf("visibility %q, %+v", got, res)
	}
	if res, err = publish.EnsureQuayRepositories(ctx, spec); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
}

// TestEnsureQuayRepositoriesBadInput: every bad entry fails before
// anything is sent, naming it.
func TestEnsureQuayRepositoriesBadInput(t *testing.T) {
	t.Parallel()
	base := func() publish.QuayRepositorySpec {
		return publish.QuayRepositorySpec{
			Images: []publish.QuayRepositoryImage{{Registry: "quay.io", Namespace: "myorg", RepoShortname: "app"}},
			Credentials: publish.ContainerCredentials{"quay.io": {APIToken: "tok-secret-9", Repository: "^quay.io/myorg/",
				RegistryEndpoint: publish.RegistryEndpoint{APIURL: "https://quay.invalid"}}},
		}
	}
	tests := []struct {
		name   string
		modify func(s *publish.QuayRepositorySpec)
		want   string
	}{
		{"no credentials entry", func(s *publish.QuayRepositorySpec) { s.Images[0].Registry = "quay.example.org" },
			`container_images[0]: container_registry_credentials has no entry for registry "quay.example.org"`},
		{"outside the regex", func(s *publish.QuayRepositorySpec) { s.Images[0].Namespace = "other" },
			`container_images[0] (quay.io/other/app): quay.io/other/app not permitted by container_registry_credentials["quay.io"].repository ^quay.io/myorg/`},
		{"regex that does not compile", func(s *publish.QuayRepositorySpec) {
			c := s.Credentials["quay.io"]
			c.Repository = "^quay.io/(myorg"
			s.Credentials["quay.io"] = c
		}, `container_registry_credentials["quay.io"].repository "^quay.io/(myorg" is not a valid regular expression`},
		{"namespace only", func(s *publish.QuayRepositorySpec) { s.Images[0].RepoShortname = "" },
			"container_images[0]: namespace and repo_shortname name the repository together"},
		{"repository disagrees", func(s *publish.QuayRepositorySpec) { s.Images[0].Repository = "quay.io/myorg/other" },
			"repository quay.io/myorg/other is not quay.io/myorg/app"},
		{"no token", func(s *publish.QuayRepositorySpec) {
			c := s.Credentials["quay.io"]
			c.APIToken = ""
			s.Credentials["quay.io"] = c
		}, `container_registry_credentials["quay.io"].api_token is not set`},
		{"invalid name", func(s *publish.QuayRepositorySpec) { s.Images[0].RepoShortname = "App" }, `repo_shortname "App" is not a valid quay name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec := base()
			tc.modify(&spec)
			_, err := publish.EnsureQuayRepositories(context.Background(), spec)
			checkError(t, err, "tok-secret-9", "no repository was created", tc.want)
		})
	}
}
