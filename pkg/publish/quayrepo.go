package publish

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/quay"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// QuayRepositoryImage is one entry of container_images as upstream's
// ensure-quay-repo reads it: registry, namespace, repo_shortname,
// repo_description and visibility. The keys of the other container roles
// are accepted and not used, so one list serves every role.
type QuayRepositoryImage struct {
	// Registry names the entry of container_registry_credentials.
	Registry string `ansible:"registry,required" json:"registry"`
	// Namespace and RepoShortname name the repository,
	// <registry>/<namespace>/<repo_shortname>; an entry without both is
	// left alone (upstream's rule: a list made for the build roles is
	// not a list of repositories to create).
	Namespace       string `ansible:"namespace" json:"namespace,omitempty"`
	RepoShortname   string `ansible:"repo_shortname" json:"repo_shortname,omitempty"`
	RepoDescription string `ansible:"repo_description" json:"repo_description,omitempty"`
	// Visibility is the visibility to create the repository with (public
	// when empty), and to set on an existing one when given.
	Visibility string `ansible:"visibility" choices:"public,private" json:"visibility,omitempty"`
	// Repository, when given, is checked against the entry's repository
	// expression and must be <registry>/<namespace>/<repo_shortname>.
	Repository string `ansible:"repository" json:"repository,omitempty"`

	// The other roles' keys, not used here.
	Context    string   `ansible:"context" json:"-"`
	Tags       []string `ansible:"tags" json:"-"`
	Path       string   `ansible:"path" json:"-"`
	Dockerfile string   `ansible:"dockerfile" aliases:"container_filename" json:"-"`
	Target     string   `ansible:"target" json:"-"`
	BuildArgs  []string `ansible:"build_args" json:"-"`
	Labels     []string `ansible:"labels" json:"-"`
	Siblings   []string `ansible:"siblings" json:"-"`
	Arch       []string `ansible:"arch" json:"-"`
}

// QuayRepositorySpec is what quay_repository does (upstream's
// ensure-quay-repo role); its fields are the module's parameters.
type QuayRepositorySpec struct {
	Images      []QuayRepositoryImage `ansible:"container_images,required"`
	Credentials ContainerCredentials  `ansible:"container_registry_credentials,required"`
}

// QuayRepositoryState is one repository and what was done to it.
type QuayRepositoryState struct {
	// Index is the entry's position in container_images.
	Index int `json:"index"`
	// Repository is <registry>/<namespace>/<name>.
	Repository string `json:"repository"`
	// Visibility is the repository's visibility now (in check mode, would
	// be); empty when the token may not read it.
	Visibility string `json:"visibility"`
	// PreviousVisibility is the visibility before; empty when the
	// repository did not exist or could not be read.
	PreviousVisibility string `json:"previous_visibility"`
	// Action is created, visibility (changed), unchanged, or skipped (the
	// entry names no repository, or its registry is not a quay).
	Action string `json:"action"`
	// Reason says why an entry was skipped.
	Reason string `json:"reason"`
}

// QuayRepositoryResult is what EnsureQuayRepositories did.
type QuayRepositoryResult struct {
	ansible.Outcome
	Repositories []QuayRepositoryState `json:"repositories"`
}

// quayNameRE is quay's grammar for namespace and repository names.
var quayNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,254}$`)

// EnsureQuayRepositories makes sure the quay repositories of
// container_images exist: a missing one is created through quay's API
// (POST /api/v1/repository) with its visibility (public unless the entry
// says private) and description, with the entry's api_token, which needs
// the "Create Repositories" permission; an existing one whose entry gives
// a visibility gets it (which needs "Administer Repositories"). Entries
// without namespace and repo_shortname, and entries of registries that
// are not quays (type quay, or a name containing quay.io), are skipped,
// as upstream skips them.
//
// Every entry is checked before anything is sent: its registry has an
// entry in container_registry_credentials whose repository expression the
// repository matches, and that entry has an api_token.
func EnsureQuayRepositories(ctx context.Context, spec QuayRepositorySpec, opts ...Option) (*QuayRepositoryResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	for _, c := range spec.Credentials {
		o.redact(c.Password)
		o.redact(c.APIToken)
	}
	res := &QuayRepositoryResult{Repositories: []QuayRepositoryState{}}
	type job struct {
		st   *QuayRepositoryState
		pos  int // of st in res.Repositories
		im   QuayRepositoryImage
		cred string
		c    RegistryCredentials
	}
	var jobs []*job
	var errs []error
	warned := map[string]bool{}
	var eps endpoints
	for i, im := range spec.Images {
		where := fmt.Sprintf("container_images[%d]", i)
		c, ok := spec.Credentials[im.Registry]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: container_registry_credentials has no entry for registry %q", where, im.Registry))
			continue
		}
		cred := fmt.Sprintf("container_registry_credentials[%q]", im.Registry)
		st := QuayRepositoryState{Index: i}
		repo := ""
		if im.Namespace != "" && im.RepoShortname != "" {
			repo = im.Registry + "/" + im.Namespace + "/" + im.RepoShortname
			st.Repository = repo
			where += " (" + repo + ")"
		}
		if im.Repository != "" && repo != "" && im.Repository != repo {
			errs = append(errs, fmt.Errorf("%s: repository %s is not %s, the repository namespace and repo_shortname name", where, im.Repository, repo))
			continue
		}
		checked := im.Repository
		if checked == "" {
			checked = repo
		}
		if c.Repository != "" && checked != "" {
			p, warning, err := compileRepositoryPattern(cred+".repository", c.Repository)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if warning != "" && !warned[im.Registry] {
				warned[im.Registry] = true
				res.Warn("%s", warning)
			}
			if !p.Allows(checked) {
				errs = append(errs, fmt.Errorf("%s: %s not permitted by %s.repository %s", where, checked, cred, p))
				continue
			}
		}
		switch {
		case (im.Namespace == "") != (im.RepoShortname == ""):
			errs = append(errs, fmt.Errorf("%s: namespace and repo_shortname name the repository together: give both (or neither, to leave the entry to the other roles)", where))
			continue
		case repo == "":
			st.Action, st.Reason = "skipped", "no namespace and repo_shortname: not a repository to ensure"
			res.Repositories = append(res.Repositories, st)
			continue
		case c.TypeOf(im.Registry) != RegistryQuay:
			st.Action, st.Reason = "skipped", fmt.Sprintf("%s is not a quay (set %s.type to quay for a quay under another name)", im.Registry, cred)
			res.Repositories = append(res.Repositories, st)
			continue
		}
		for _, n := range []struct{ param, v string }{{"namespace", im.Namespace}, {"repo_shortname", im.RepoShortname}} {
			if !quayNameRE.MatchString(n.v) {
				errs = append(errs, fmt.Errorf("%s: %s %q is not a valid quay name (lower-case letters, digits, '.', '_', '-')", where, n.param, n.v))
			}
		}
		if c.APIToken == "" {
			errs = append(errs, fmt.Errorf("%s: %s.api_token is not set: quay creates repositories through its API, with the token of an application with the Create Repositories permission", where, cred))
			continue
		}
		u, err := apiURL(im.Registry, c, RegistryQuay)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if c.Cert != "" {
			eps.add(transfer.Endpoint{Host: hostOf(u), CA: []byte(c.Cert)})
		}
		jobs = append(jobs, &job{pos: len(res.Repositories), im: im, cred: cred, c: c})
		res.Repositories = append(res.Repositories, st)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("no repository was created: %w", errors.Join(errs...))
	}
	for _, j := range jobs {
		j.st = &res.Repositories[j.pos]
	}
	if len(jobs) == 0 {
		res.Msg = "no entry of container_images names a quay repository (namespace and repo_shortname): nothing to do"
		return res, nil
	}

	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	topts := append(eps.options(), transfer.WithLogger(o.log))
	if o.wrap != nil {
		topts = append(topts, transfer.WithTransportWrapper(o.wrap))
	}
	client, err := transfer.New(topts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	var before, after []string
	for _, j := range jobs {
		qc, err := newQuayClient(client, j.im.Registry, j.c, o)
		if err != nil {
			return nil, err
		}
		prev, err := ensureQuayRepository(ctx, qc, j.st, j.im, j.cred, o, res)
		if err != nil {
			errs = append(errs, fmt.Errorf("container_images[%d] (%s): %w", j.st.Index, j.st.Repository, err))
			continue
		}
		before = append(before, j.st.Repository+": "+prev)
		after = append(after, j.st.Repository+": "+orUnknown(j.st.Visibility))
		if j.st.Action != "unchanged" {
			res.Changed = true
		}
	}
	if o.diff {
		res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after), BeforeHeader: "repositories before", AfterHeader: "repositories after"}}
	}
	if len(errs) > 0 {
		var done []string
		for _, st := range res.Repositories {
			if st.Action == "created" || st.Action == "visibility" {
				done = append(done, st.Repository+" ("+st.Action+")")
			}
		}
		return nil, fmt.Errorf("ensuring quay repositories (done: %s): %w", orNone(done), errors.Join(errs...))
	}
	return res, nil
}

func orUnknown(v string) string {
	if v == "" {
		return "(exists, visibility not readable)"
	}
	return v
}

// ensureQuayRepository brings one repository to its entry's state and
// returns how it was before, for the diff.
func ensureQuayRepository(ctx context.Context, qc *quay.Client, st *QuayRepositoryState, im QuayRepositoryImage, cred string,
	o options, res *QuayRepositoryResult) (string, error) {
	name := im.Namespace + "/" + im.RepoShortname
	want := quay.Visibility(im.Visibility)
	create := want
	if create == "" {
		create = quay.Public
	}
	scope := func(err error, what, permission string) error {
		if errors.Is(err, oci.ErrForbidden) || errors.Is(err, oci.ErrUnauthorized) {
			return fmt.Errorf("%s.api_token may not %s %s on %s (give the token of an application with the %s permission): %w",
				cred, what, st.Repository, qc.URL(), permission, err)
		}
		return fmt.Errorf("%s %s on %s: %w", what, st.Repository, qc.URL(), err)
	}
	r, err := qc.GetRepository(ctx, name)
	switch {
	case err == nil:
		st.PreviousVisibility = string(r.Visibility())
		st.Visibility, st.Action = st.PreviousVisibility, "unchanged"
		if want == "" || r.Visibility() == want {
			return st.PreviousVisibility, nil
		}
		st.Visibility, st.Action = string(want), "visibility"
		if !o.check {
			if err := qc.SetVisibility(ctx, name, want); err != nil {
				st.Visibility, st.Action = st.PreviousVisibility, "unchanged"
				return "", scope(err, "change the visibility of", "Administer Repositories")
			}
			o.log.Info("changed the visibility", "repository", st.Repository, "visibility", want)
		}
		return st.PreviousVisibility, nil
	case errors.Is(err, oci.ErrNotFound):
		st.Visibility, st.Action = string(create), "created"
		if o.check {
			return "(absent)", nil
		}
	case errors.Is(err, oci.ErrForbidden) || errors.Is(err, oci.ErrUnauthorized):
		// A token with only the Create Repositories permission, as
		// upstream asks for, may not read: create, and take "already
		// exists" for an answer.
		if o.check {
			st.Action = "unchanged"
			res.Warn("%s: %s.api_token may not read the repository, so check mode cannot tell whether it exists", st.Repository, cred)
			return "(not readable)", nil
		}
	default:
		return "", fmt.Errorf("reading %s on %s: %w", st.Repository, qc.URL(), err)
	}
	err = qc.CreateRepository(ctx, name, create, im.RepoDescription)
	switch {
	case err == nil:
		st.Visibility, st.Action = string(create), "created"
		o.log.Info("created the repository", "repository", st.Repository, "visibility", create)
		return "(absent)", nil
	case errors.Is(err, quay.ErrExists):
		st.Visibility, st.Action = "", "unchanged"
		if want != "" {
			res.Warn("%s exists, and %s.api_token may not read it: its visibility was not checked against %s", st.Repository, cred, want)
		}
		return "(exists)", nil
	}
	st.Visibility, st.Action = "", "unchanged"
	return "", scope(err, "create", "Create Repositories")
}
