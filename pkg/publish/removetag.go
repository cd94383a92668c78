package publish

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/quay"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// RemoveTagSpec is what registry_tag_remove does (upstream's
// remove-registry-tag role); its fields are the module's parameters, with
// the role's variable names.
type RemoveTagSpec struct {
	// Repository is the full repository, registry included
	// (quay.io/myorg/app); it is split at its first / into the registry,
	// which names the credentials entry, and the repository path.
	Repository string `ansible:"remove_registry_tag_repository,required"`
	// Tag is one tag to remove; empty sweeps: every tag matching Regex
	// and older than Age goes.
	Tag string `ansible:"remove_registry_tag_tag"`
	// Regex selects the tags of a sweep (re.search); empty is upstream's
	// ^change_.*$|^<zuul.pipeline>_.*$ (DefaultRemoveTagRegex).
	Regex string `ansible:"remove_registry_tag_regex"`
	// Age is how long a tag must have been unmodified for a sweep to
	// remove it.
	Age time.Duration `ansible:"remove_registry_tag_age,seconds" default:"86400"`
	// APIURL overrides the web API's base URL (Docker Hub's
	// https://hub.docker.com/v2, quay's https://<registry>/api/v1); the
	// version path may be left out.
	APIURL      string               `ansible:"remove_registry_tag_api_url"`
	Credentials ContainerCredentials `ansible:"container_registry_credentials,required"`
	// Zuul gives the pipeline of the default Regex.
	Zuul zuul.Vars `ansible:"zuul,raw"`
}

// RemovedTag is one tag removed, or that would be (check mode), or that
// the registry could not remove (a warning says why).
type RemovedTag struct {
	Tag       string `json:"tag"`
	Reference string `json:"reference"`
	// Digest is the manifest the tag pointed to, when it was read.
	Digest string `json:"digest"`
	// AgeSeconds is how long the tag had been unmodified (sweeps).
	AgeSeconds int64 `json:"age_seconds"`
	Deleted    bool  `json:"deleted"`
}

// RemoveTagResult is what RemoveTag did.
type RemoveTagResult struct {
	ansible.Outcome
	// Registry and Repository are remove_registry_tag_repository split.
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	// Type is the API the tags were removed through.
	Type RegistryType `json:"type"`
	// Regex is the sweep's expression; empty when one tag was removed.
	Regex   string       `json:"regex"`
	Removed []RemovedTag `json:"removed"`
}

// DefaultRemoveTagRegex is upstream's default sweep expression for the
// pipeline: the change tags and the pipeline's tags the container roles
// stage.
func DefaultRemoveTagRegex(pipeline string) string {
	if pipeline == "" {
		return "^change_.*$"
	}
	return "^change_.*$|^" + regexp.QuoteMeta(pipeline) + "_.*$"
}

// tagRE is the distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// RemoveTag removes one tag, or sweeps old tags, from a repository,
// through the API of the registry's type (container_registry_credentials
// [<registry>].type, inferred from the registry's name when unset): Docker
// Hub's web API (username and password, exchanged for a token), quay's
// (the entry's api_token), or the distribution API's tag delete. A
// registry that cannot delete a single tag (distribution 2.8, Debian's
// docker-registry) keeps it, with a warning: a manifest is never deleted
// by digest, which would take every other tag of it along.
//
// A sweep lists every page of the repository's tags and removes those
// matching the expression whose age, by real elapsed time, exceeds Age:
// Docker Hub's last_updated, quay's last_modified, or, through the
// distribution API, the image's creation time.
//
// Every parameter is checked before anything is sent; with a quay token,
// its scope to delete tags is proved before any tag is removed. A tag
// already gone is not an error: a second run reports changed false.
func RemoveTag(ctx context.Context, spec RemoveTagSpec, opts ...Option) (*RemoveTagResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := ansible.ApplyDefaults(&spec); err != nil {
		return nil, err
	}
	for _, c := range spec.Credentials {
		o.redact(c.Password)
		o.redact(c.APIToken)
	}
	r, err := planRemoval(spec, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.withDeadline(ctx)
	defer cancel()
	return r.run(ctx)
}

// remover is a checked RemoveTagSpec.
type remover struct {
	spec     RemoveTagSpec
	o        options
	registry string
	path     string // as the user gave it
	repo     string // the repository's name in the API used
	cred     string // names the entry in messages
	c        RegistryCredentials
	typ      RegistryType
	t        *target
	apiBase  string
	re       *regexp.Regexp
	res      *RemoveTagResult

	client *transfer.Client
	api    tagAPI
	r      *transfer.Repository
}

func planRemoval(spec RemoveTagSpec, o options) (*remover, error) {
	registry, path, ok := strings.Cut(spec.Repository, "/")
	if !ok || registry == "" || path == "" {
		return nil, fmt.Errorf("remove_registry_tag_repository %q must be the full repository, registry included, as quay.io/myorg/app", spec.Repository)
	}
	c, ok := spec.Credentials[registry]
	if !ok {
		known := make([]string, 0, len(spec.Credentials))
		for k := range spec.Credentials {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("remove_registry_tag_repository %s: container_registry_credentials has no entry for registry %q (entries: %s)",
			spec.Repository, registry, strings.Join(known, ", "))
	}
	rm := &remover{spec: spec, o: o, registry: registry, path: path, c: c, typ: c.TypeOf(registry),
		cred: fmt.Sprintf("container_registry_credentials[%q]", registry)}
	rm.res = &RemoveTagResult{Registry: registry, Repository: path, Type: rm.typ, Removed: []RemovedTag{}}
	// The entry's repository expression restricts what its credentials
	// may write, deletions included (upstream's role does not check it).
	if c.Repository != "" {
		p, warning, err := compileRepositoryPattern(rm.cred+".repository", c.Repository)
		if err != nil {
			return nil, err
		}
		if warning != "" {
			rm.res.Warn("%s", warning)
		}
		if !p.Allows(spec.Repository) {
			return nil, fmt.Errorf("remove_registry_tag_repository: %s not permitted by %s.repository %s", spec.Repository, rm.cred, p)
		}
	}
	if spec.Tag != "" {
		if !tagRE.MatchString(spec.Tag) {
			return nil, fmt.Errorf("remove_registry_tag_tag %q is not a valid tag (letters, digits, _, . and -, at most 128, not starting with . or -)", spec.Tag)
		}
	} else {
		if spec.Regex == "" {
			spec.Regex = DefaultRemoveTagRegex(spec.Zuul.Pipeline)
			rm.spec.Regex = spec.Regex
		}
		re, err := compilePython("remove_registry_tag_regex", spec.Regex)
		if err != nil {
			return nil, err
		}
		rm.re, rm.res.Regex = re, spec.Regex
		if spec.Age < 0 {
			return nil, fmt.Errorf("remove_registry_tag_age must not be negative, got %d", int64(spec.Age/time.Second))
		}
	}
	t, err := Target{Registry: registry, URL: c.RegistryURL, Cert: c.Cert}.resolve("")
	if err != nil {
		return nil, fmt.Errorf("%s: %s", rm.cred, strings.NewReplacer(
			"docker_registry_url", "registry_url", "docker_registry_cert", "cert", "docker_registry", "registry").Replace(err.Error()))
	}
	rm.t = t
	apiOverride := spec.APIURL
	param := "remove_registry_tag_api_url"
	if apiOverride == "" {
		apiOverride, param = c.APIURL, rm.cred+".api_url"
	}
	switch rm.typ {
	case RegistryDocker:
		if c.Username == "" || c.Password == "" {
			return nil, fmt.Errorf("%s needs username and password: Docker Hub's web API removes tags as that account", rm.cred)
		}
		ns, name, err := dockerhub.SplitRepository(path)
		if err != nil {
			return nil, fmt.Errorf("remove_registry_tag_repository: %w", err)
		}
		rm.repo = ns + "/" + name
		if rm.apiBase, err = webAPIBase(param, apiOverride, DockerHubAPI, "/v2"); err != nil {
			return nil, err
		}
	case RegistryQuay:
		if c.APIToken == "" {
			return nil, fmt.Errorf("%s.api_token is not set: quay removes tags through its API, with the token of an application with the repo:write scope", rm.cred)
		}
		ns, name, err := quay.SplitRepository(path)
		if err != nil {
			return nil, fmt.Errorf("remove_registry_tag_repository: %w", err)
		}
		rm.repo = ns + "/" + name
		if rm.apiBase, err = webAPIBase(param, apiOverride, "https://"+registry, "/api/v1"); err != nil {
			return nil, err
		}
	default:
		if spec.APIURL != "" {
			return nil, fmt.Errorf("remove_registry_tag_api_url is set, but %s is of type generic, whose tags are removed through the registry API: set %s.type to docker or quay, or drop remove_registry_tag_api_url (%s.registry_url says where the registry API is)",
				registry, rm.cred, rm.cred)
		}
		if t.hub {
			return nil, fmt.Errorf("%s.type is generic, but Docker Hub removes tags only through its web API: use type docker", rm.cred)
		}
		if c.Username == "" || c.Password == "" {
			return nil, fmt.Errorf("%s needs username and password to remove tags through the registry API", rm.cred)
		}
		if rm.repo, err = t.repository(path); err != nil {
			return nil, fmt.Errorf("remove_registry_tag_repository: %w", err)
		}
	}
	return rm, nil
}

// webAPIBase is a web API's base URL: raw (else def), without the version
// path (suffix) upstream's variable carries.
func webAPIBase(param, raw, def, suffix string) (string, error) {
	if raw == "" {
		raw = def
	}
	u := strings.TrimSuffix(strings.TrimRight(raw, "/"), suffix)
	if _, err := httpsHost(param, u); err != nil {
		return "", fmt.Errorf("%w (the %s path may be given or left out)", err, suffix)
	}
	return u, nil
}

func (rm *remover) ref(tag string) string { return rm.registry + "/" + rm.path + ":" + tag }

func (rm *remover) connect(ctx context.Context) error {
	opts := []transfer.Option{transfer.WithLogger(rm.o.log), transfer.WithPageSize(tagsPageSize),
		transfer.WithEndpoint(rm.t.endpoint(Credentials{Username: rm.c.Username, Password: rm.c.Password}))}
	if rm.apiBase != "" {
		opts = append(opts, transfer.WithEndpoint(transfer.Endpoint{Host: hostOf(rm.apiBase), CA: rm.t.ca}))
	}
	if rm.o.wrap != nil {
		opts = append(opts, transfer.WithTransportWrapper(rm.o.wrap))
	}
	var err error
	if rm.client, err = transfer.New(opts...); err != nil {
		return err
	}
	switch rm.typ {
	case RegistryDocker:
		rt, err := rm.client.Transport(hostOf(rm.apiBase))
		if err != nil {
			return err
		}
		hub, err := dockerhub.New(rm.c.Username, rm.c.Password, dockerhub.WithURL(rm.apiBase), dockerhub.WithTransport(rt), dockerhub.WithLogger(rm.o.log))
		if err != nil {
			return err
		}
		rm.api = hubAPI{hub}
		if err := rm.api.check(ctx); err != nil {
			return fmt.Errorf("%s (%s): logging in to Docker Hub's web API at %s: %w", rm.cred, rm.c.Username, rm.apiBase, err)
		}
	case RegistryQuay:
		c := rm.c
		c.APIURL = rm.apiBase
		if rm.api, err = newQuayAPI(rm.client, rm.registry, c, rm.o); err != nil {
			return err
		}
	default:
		rm.r, err = rm.client.Repository(ctx, rm.t.host, rm.repo, true)
		if errors.Is(err, oci.ErrDenied) {
			return fmt.Errorf("%s (%s) were refused by %s: %w", rm.cred, rm.c.Username, rm.t.host, err)
		}
		if err != nil {
			return fmt.Errorf("reaching the registry %s at %s: %w", rm.registry, rm.t.host, err)
		}
	}
	return nil
}

func (rm *remover) run(ctx context.Context) (*RemoveTagResult, error) {
	if err := rm.connect(ctx); err != nil {
		return nil, err
	}
	defer rm.client.Close()
	var cands []RemovedTag
	var err error
	if rm.spec.Tag != "" {
		cands, err = rm.one(ctx)
	} else {
		cands, err = rm.sweep(ctx)
	}
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		if rm.spec.Tag != "" {
			rm.res.Msg = rm.ref(rm.spec.Tag) + " does not exist: nothing to remove"
		} else {
			rm.res.Msg = fmt.Sprintf("no tag of %s/%s matches %s and is older than %ds: nothing to remove", rm.registry, rm.path, rm.spec.Regex, int64(rm.spec.Age/time.Second))
		}
		return rm.res, nil
	}
	// A quay token's scope is proved before any tag goes, so a token that
	// may not delete fails with every tag in place.
	if rm.api != nil {
		if err := rm.api.checkRepository(ctx, rm.repo); err != nil {
			return nil, fmt.Errorf("nothing was removed: %w", err)
		}
	}
	var errs []error
	var before, after []string
	for _, d := range cands {
		before = append(before, d.Reference+" -> "+orUnread(d.Digest))
		outcome := tagKept
		if rm.o.check {
			outcome = tagDeleted
		} else {
			var err error
			if outcome, err = rm.delete(ctx, d.Tag); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", d.Reference, err))
			}
		}
		switch outcome {
		case tagDeleted:
			d.Deleted = !rm.o.check
			rm.res.Changed = true
			rm.res.Removed = append(rm.res.Removed, d)
			after = append(after, d.Reference+" -> (removed)")
			if !rm.o.check {
				rm.o.log.Info("removed tag", "reference", d.Reference)
			}
		case tagKept:
			rm.res.Removed = append(rm.res.Removed, d)
			after = append(after, d.Reference+" -> "+orUnread(d.Digest))
		case tagAbsent:
			after = append(after, d.Reference+" -> (absent)")
		}
	}
	if rm.o.diff {
		rm.res.Diff = []ansible.Diff{{Before: joinLines(before), After: joinLines(after), BeforeHeader: "tags before", AfterHeader: "tags after"}}
	}
	if len(errs) > 0 {
		var done []string
		for _, d := range rm.res.Removed {
			if d.Deleted {
				done = append(done, d.Tag)
			}
		}
		return nil, fmt.Errorf("removing tags of %s/%s (removed: %s; run again to finish): %w",
			rm.registry, rm.path, orNone(done), errors.Join(errs...))
	}
	if !rm.res.Changed && rm.spec.Tag != "" && len(rm.res.Removed) == 0 {
		rm.res.Msg = rm.ref(rm.spec.Tag) + " does not exist: nothing to remove"
	}
	return rm.res, nil
}

func orUnread(d string) string {
	if d == "" {
		return "(present)"
	}
	return d
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// one is the tag of single-tag mode, if it exists. A web API's listing is
// read only when the answer must be known before the delete (check and
// diff mode); otherwise the delete itself tells (404: already gone).
func (rm *remover) one(ctx context.Context) ([]RemovedTag, error) {
	d := RemovedTag{Tag: rm.spec.Tag, Reference: rm.ref(rm.spec.Tag)}
	if rm.api != nil {
		if !rm.o.check && !rm.o.diff {
			return []RemovedTag{d}, nil
		}
		tags, err := rm.api.tags(ctx, rm.repo)
		if errors.Is(err, oci.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, rm.apiErr("listing the tags of", err)
		}
		for _, t := range tags {
			if t.Name == rm.spec.Tag {
				d.Digest = t.Digest
				return []RemovedTag{d}, nil
			}
		}
		return nil, nil
	}
	desc, err := rm.r.Head(ctx, rm.spec.Tag)
	if errors.Is(err, oci.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.Reference, err)
	}
	d.Digest = desc.Digest
	return []RemovedTag{d}, nil
}

// sweep lists every tag and selects those matching the expression whose
// age exceeds the limit, by real elapsed time.
func (rm *remover) sweep(ctx context.Context) ([]RemovedTag, error) {
	now := rm.o.now()
	var out []RemovedTag
	add := func(tag, digest string, updated time.Time) {
		if age := now.Sub(updated); age > rm.spec.Age {
			out = append(out, RemovedTag{Tag: tag, Reference: rm.ref(tag), Digest: digest, AgeSeconds: int64(age / time.Second)})
		}
	}
	if rm.api != nil {
		tags, err := rm.api.tags(ctx, rm.repo)
		if errors.Is(err, oci.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, rm.apiErr("listing the tags of", err)
		}
		for _, t := range tags {
			if !rm.re.MatchString(t.Name) {
				continue
			}
			if t.Updated.IsZero() {
				rm.res.Warn("%s: %s gives no modification time; the sweep leaves it", rm.ref(t.Name), rm.api.name())
				continue
			}
			add(t.Name, t.Digest, t.Updated)
		}
	} else {
		tags, err := rm.r.Tags(ctx)
		if errors.Is(err, oci.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing the tags of %s/%s: %w", rm.registry, rm.path, err)
		}
		for _, tag := range tags {
			if !rm.re.MatchString(tag) {
				continue
			}
			created, digest, err := imageCreated(ctx, rm.r, tag)
			if err != nil {
				rm.res.Warn("%s: the sweep cannot tell its age (the registry API keeps no tag times; the image's creation time is used): %v", rm.ref(tag), err)
				continue
			}
			add(tag, digest, created)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
	return out, nil
}

func (rm *remover) apiErr(what string, err error) error {
	if errors.Is(err, oci.ErrUnauthorized) || errors.Is(err, oci.ErrForbidden) {
		who := rm.cred + ".api_token"
		if rm.typ == RegistryDocker {
			who = fmt.Sprintf("%s (%s)", rm.cred, rm.c.Username)
		}
		return fmt.Errorf("%s %s/%s: %s were refused by %s: %w", what, rm.registry, rm.path, who, rm.apiBase, err)
	}
	return fmt.Errorf("%s %s/%s through %s: %w", what, rm.registry, rm.path, rm.apiBase, err)
}

// What delete did to a tag.
const (
	tagDeleted = iota
	tagAbsent
	// tagKept: the registry cannot delete a single tag (a warning says
	// so).
	tagKept
)

// delete removes one tag. A registry that cannot delete a single tag
// gets a warning, never a delete by digest.
func (rm *remover) delete(ctx context.Context, tag string) (int, error) {
	var err error
	if rm.api != nil {
		err = rm.api.deleteTag(ctx, rm.repo, tag)
		if err != nil && !errors.Is(err, oci.ErrNotFound) {
			return tagKept, rm.apiErr("removing "+tag+" of", err)
		}
	} else {
		err = rm.r.Delete(ctx, tag)
	}
	switch {
	case err == nil:
		return tagDeleted, nil
	case errors.Is(err, oci.ErrNotFound):
		return tagAbsent, nil
	case errors.Is(err, oci.ErrUnsupported):
		rm.res.Warn("%s was left in place: the registry %s cannot delete a single tag (%v); delete it by hand "+
			"(deleting its manifest by digest would also delete every other tag of that manifest)", rm.ref(tag), rm.t.host, err)
		return tagKept, nil
	}
	return tagKept, err
}
