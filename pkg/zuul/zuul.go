// Package zuul holds what imagegate knows of Zuul: the job's zuul variable,
// the tag naming contract between the build, upload, promote and
// intermediate-registry steps, container-image artifacts, and the
// buildset registry's connection data as it travels through zuul_return.
package zuul

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Vars is the part of the job's zuul variable that imagegate reads. Modules
// take the variable as is, as a parameter named zuul; keys not listed here
// are ignored.
type Vars struct {
	Build     string     `json:"build"`
	Buildset  string     `json:"buildset"`
	Change    string     `json:"change"`
	Patchset  string     `json:"patchset"`
	ChangeURL string     `json:"change_url"`
	Pipeline  string     `json:"pipeline"`
	Job       string     `json:"job"`
	Tenant    string     `json:"tenant"`
	Ref       string     `json:"ref"`
	Branch    string     `json:"branch"`
	Project   Project    `json:"project"`
	Executor  Executor   `json:"executor"`
	Artifacts []Artifact `json:"artifacts"`
	// Projects maps canonical names to the projects prepared for the job;
	// siblings are looked up here.
	Projects map[string]Project `json:"projects"`
}

// Project is one project of the job.
type Project struct {
	Name          string `json:"name"`
	ShortName     string `json:"short_name"`
	CanonicalName string `json:"canonical_name"`
	CanonicalHost string `json:"canonical_hostname"`
	SrcDir        string `json:"src_dir"`
	Required      bool   `json:"required"`
}

// Executor is zuul.executor.
type Executor struct {
	Hostname       string `json:"hostname"`
	SrcRoot        string `json:"src_root"`
	LogRoot        string `json:"log_root"`
	WorkRoot       string `json:"work_root"`
	ResultDataFile string `json:"result_data_file"`
	InventoryFile  string `json:"inventory_file"`
}

// UnmarshalJSON accepts change, patchset and build as strings or numbers:
// Zuul sends strings, but hand-written test variables often hold numbers.
func (v *Vars) UnmarshalJSON(b []byte) error {
	type plain Vars
	aux := struct {
		*plain
		Build    flexString `json:"build"`
		Change   flexString `json:"change"`
		Patchset flexString `json:"patchset"`
	}{plain: (*plain)(v)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	v.Build, v.Change, v.Patchset = string(aux.Build), string(aux.Change), string(aux.Patchset)
	return nil
}

type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("must be a string or a number, got %s", b)
	}
	*f = flexString(n.String())
	return nil
}

// ErrNoStagingName is returned when neither a change nor a pipeline is
// known, so no staging tag can be named.
var ErrNoStagingName = errors.New("zuul.change and zuul.pipeline are both empty: cannot name a staging tag")

// StagingTag is the tag an image is staged under before promotion:
// change_<N>_<tag> for a change, <pipeline>_<tag> when the item has no
// change (periodic and ref-updated pipelines). Upstream lost the pipeline
// form for buildx builds in 2025; imagegate keeps it everywhere.
func (v *Vars) StagingTag(tag string) (string, error) {
	switch {
	case v.Change != "":
		return "change_" + v.Change + "_" + tag, nil
	case v.Pipeline != "":
		return v.Pipeline + "_" + tag, nil
	}
	return "", ErrNoStagingName
}

var stagingRE = regexp.MustCompile(`^change_[0-9]+_`)

// IsStagingTag reports whether tag is a change tag (change_<N>_...) or, for
// the given pipelines, a pipeline staging tag (<pipeline>_...). The stale
// sweep deletes only tags for which this is true.
func IsStagingTag(tag string, pipelines ...string) bool {
	if stagingRE.MatchString(tag) {
		return true
	}
	for _, p := range pipelines {
		if p != "" && strings.HasPrefix(tag, p+"_") {
			return true
		}
	}
	return false
}

// IntermediateTag is the tag an image carries in the intermediate registry:
// <build uuid>_<tag>.
func (v *Vars) IntermediateTag(tag string) (string, error) {
	if v.Build == "" {
		return "", errors.New("zuul.build is empty: cannot name the intermediate registry tag")
	}
	return v.Build + "_" + tag, nil
}

// Labels are the image labels upstream adds to every build.
func (v *Vars) Labels() map[string]string {
	l := map[string]string{}
	if v.Change != "" {
		l["org.zuul-ci.change"] = v.Change
	}
	if v.ChangeURL != "" {
		l["org.zuul-ci.change_url"] = v.ChangeURL
	}
	return l
}

// ProvenanceLabels are the labels that name the Zuul build in BuildKit's
// provenance (it records every label among the build's parameters, as
// "label:<name>"): the change, its patchset, the pipeline, the build UUID,
// the project and the job; a value Zuul did not set is left out. They are
// what docker_image_promote's provenance check reads (docs/signing.md).
func (v *Vars) ProvenanceLabels() map[string]string {
	l := map[string]string{}
	for k, val := range map[string]string{
		"org.zuul-ci.change":   v.Change,
		"org.zuul-ci.patchset": v.Patchset,
		"org.zuul-ci.pipeline": v.Pipeline,
		"org.zuul-ci.build":    v.Build,
		"org.zuul-ci.project":  v.Project.Name,
		"org.zuul-ci.job":      v.Job,
	} {
		if val != "" {
			l[k] = val
		}
	}
	return l
}

// Artifact is one entry of zuul.artifacts, or one returned through
// zuul_return. What Zuul adds when it passes artifacts to later jobs
// (project, change, patchset, job: the change ahead and the job that
// returned it) is read as strings (numbers as their digits); a value of
// another type reads as empty, never as an error.
type Artifact struct {
	Name     string         `json:"name"`
	URL      string         `json:"url"`
	Metadata map[string]any `json:"metadata,omitempty"`

	Project  string `json:"project,omitempty"`
	Change   string `json:"change,omitempty"`
	Patchset string `json:"patchset,omitempty"`
	Job      string `json:"job,omitempty"`
}

// UnmarshalJSON reads project, change, patchset and job leniently (see
// Artifact).
func (a *Artifact) UnmarshalJSON(b []byte) error {
	type plain Artifact
	aux := struct {
		*plain
		Project  json.RawMessage `json:"project"`
		Change   json.RawMessage `json:"change"`
		Patchset json.RawMessage `json:"patchset"`
		Job      json.RawMessage `json:"job"`
	}{plain: (*plain)(a)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	for _, f := range []struct {
		dst *string
		raw json.RawMessage
	}{{&a.Project, aux.Project}, {&a.Change, aux.Change}, {&a.Patchset, aux.Patchset}, {&a.Job, aux.Job}} {
		var s flexString
		if len(f.raw) == 0 || s.UnmarshalJSON(f.raw) != nil {
			s = ""
		}
		*f.dst = string(s)
	}
	return nil
}

// ContainerImageType is metadata.type of container image artifacts.
const ContainerImageType = "container_image"

// ContainerImage is the content of a container_image artifact.
type ContainerImage struct {
	// Repository and Tag are the final name, as metadata holds them.
	Repository string
	Tag        string
	// Ref is the URL without the docker:// scheme: host:port/repo:buildtag.
	Ref string
}

// ContainerImage returns the image an artifact describes, and false for an
// artifact that is not a container image (no metadata, another type).
// A container image artifact with a malformed URL or missing metadata is an
// error that names the artifact.
func (a *Artifact) ContainerImage() (ContainerImage, bool, error) {
	if a.Metadata == nil {
		return ContainerImage{}, false, nil
	}
	if t, _ := a.Metadata["type"].(string); t != ContainerImageType {
		return ContainerImage{}, false, nil
	}
	repo, _ := a.Metadata["repository"].(string)
	tag, _ := a.Metadata["tag"].(string)
	if repo == "" || tag == "" {
		return ContainerImage{}, true, fmt.Errorf("artifact %q: metadata.repository and metadata.tag are required for a container_image artifact", a.Name)
	}
	ref, ok := strings.CutPrefix(a.URL, "docker://")
	if !ok || ref == "" || strings.ContainsAny(ref, " \t\n") {
		return ContainerImage{}, true, fmt.Errorf("artifact %q: url %q is not of the form docker://<registry>/<repository>:<tag>", a.Name, a.URL)
	}
	return ContainerImage{Repository: repo, Tag: tag, Ref: ref}, true, nil
}

// NewContainerImageArtifact builds the artifact push-to-intermediate-registry
// returns for one image tag, in upstream's exact shape: name
// "<repository>:<tag>", url "docker://<host>:<port>/<repository>:<build>_<tag>"
// with an IPv6 host in brackets, and metadata {type, repository, tag}.
func NewContainerImageArtifact(irHost string, irPort int, repository, tag, buildTag string) Artifact {
	return Artifact{
		Name: repository + ":" + tag,
		URL:  "docker://" + HostPort(irHost, irPort) + "/" + repository + ":" + buildTag,
		Metadata: map[string]any{
			"type":       ContainerImageType,
			"repository": repository,
			"tag":        tag,
		},
	}
}

// HostPort joins host and port, bracketing an IPv6 literal.
func HostPort(host string, port int) string {
	host = strings.Trim(host, "[]")
	if port == 0 {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// StripDockerIO removes a leading docker.io/ (or index.docker.io/) from a
// repository name: the buildset registry stores Docker Hub content without a
// prefix and every other registry's under its name (the namespace mapping
// rule of use-buildset-registry).
func StripDockerIO(repo string) string {
	for _, p := range []string{"docker.io/", "index.docker.io/", "registry-1.docker.io/"} {
		if r, ok := strings.CutPrefix(repo, p); ok {
			return r
		}
	}
	return repo
}

// ReadResultData reads zuul.executor.result_data_file: the data and
// secret_data that zuul_return has written so far in this job. An empty or
// missing file yields empty maps.
func ReadResultData(path string) (data, secretData map[string]any, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]any{}, map[string]any{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading zuul result data: %w", err)
	}
	var doc struct {
		Data       map[string]any `json:"data"`
		SecretData map[string]any `json:"secret_data"`
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, nil, fmt.Errorf("reading zuul result data %s: %w", path, err)
		}
	}
	if doc.Data == nil {
		doc.Data = map[string]any{}
	}
	if doc.SecretData == nil {
		doc.SecretData = map[string]any{}
	}
	return doc.Data, doc.SecretData, nil
}
