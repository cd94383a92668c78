package zuul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Build is one build as Zuul's REST API describes it
// (GET /api/tenant/<tenant>/builds, zuul-web): the fields imagegate reads
// and imagegate-runner serves. The change fields are Zuul's flat form
// (project, branch, pipeline, change, patchset, ref at the top level).
type Build struct {
	UUID      string          `json:"uuid"`
	JobName   string          `json:"job_name"`
	Result    string          `json:"result"`
	Voting    bool            `json:"voting"`
	Pipeline  string          `json:"pipeline"`
	Project   string          `json:"project"`
	Branch    string          `json:"branch,omitempty"`
	Change    changeNumber    `json:"change"`
	Patchset  flexString      `json:"patchset"`
	Ref       string          `json:"ref"`
	Newrev    string          `json:"newrev,omitempty"`
	RefURL    string          `json:"ref_url,omitempty"`
	StartTime string          `json:"start_time"`
	EndTime   string          `json:"end_time"`
	Duration  float64         `json:"duration"`
	LogURL    *string         `json:"log_url"`
	Final     bool            `json:"final"`
	Buildset  *BuildsetRef    `json:"buildset,omitempty"`
	Artifacts []BuildArtifact `json:"artifacts"`
	Provides  []any           `json:"provides"`
}

// BuildsetRef is a build's buildset.
type BuildsetRef struct {
	UUID string `json:"uuid"`
}

// BuildArtifact is one artifact of a build: what the job returned in
// zuul.artifacts (name, url, metadata).
type BuildArtifact struct {
	Name     string         `json:"name"`
	URL      string         `json:"url"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// Artifact converts it to the Artifact type the modules read.
func (a BuildArtifact) Artifact() Artifact {
	return Artifact{Name: a.Name, URL: a.URL, Metadata: a.Metadata}
}

// BuildTime is the time layout of start_time and end_time: UTC, no zone.
const BuildTime = "2006-01-02T15:04:05"

// Start is the build's start time (zero if Zuul gave none).
func (b *Build) Start() time.Time {
	for _, l := range []string{BuildTime, time.RFC3339Nano} {
		if t, err := time.Parse(l, b.StartTime); err == nil {
			return t
		}
	}
	return time.Time{}
}

// SetChange sets the change and patchset fields (empty for none).
func (b *Build) SetChange(change, patchset string) {
	b.Change, b.Patchset = changeNumber(change), flexString(patchset)
}

// ChangeNumber is the build's change, "" for none.
func (b *Build) ChangeNumber() string { return string(b.Change) }

// PatchsetNumber is the build's patchset, "" for none.
func (b *Build) PatchsetNumber() string { return string(b.Patchset) }

// changeNumber is a change number: read from a string or a number,
// written as a number as Zuul does (null for none).
type changeNumber string

func (c *changeNumber) UnmarshalJSON(b []byte) error {
	var f flexString
	if err := f.UnmarshalJSON(b); err != nil {
		return err
	}
	*c = changeNumber(f)
	return nil
}

func (c changeNumber) MarshalJSON() ([]byte, error) {
	if c == "" {
		return []byte("null"), nil
	}
	if strings.Trim(string(c), "0123456789") == "" {
		return []byte(c), nil
	}
	return json.Marshal(string(c))
}

// ErrNoBuild is returned by QueryBuilds' callers when the API found none.
var ErrNoBuild = errors.New("no build found")

// maxBuildsBody bounds the answer read.
const maxBuildsBody = 32 << 20

// QueryBuilds asks the builds API at api (https://zuul.example.org/api/tenant/<tenant>)
// for GET <api>/builds?<query>, with hc, and returns the builds as Zuul
// lists them, newest first. query is the raw query string
// (change=1&patchset=1&pipeline=gate&job_name=x), as upstream's
// promote_container_image_query.
func QueryBuilds(ctx context.Context, hc *http.Client, api, query string) ([]Build, error) {
	u, err := url.Parse(strings.TrimRight(api, "/") + "/builds")
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("the builds API URL %q is not an http(s) URL", api)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("the builds query %q: %w", query, err)
	}
	u.RawQuery = q.Encode()
	op := "querying " + u.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("%s: %s: %s", op, resp.Status, strings.TrimSpace(string(b)))
	}
	var builds []Build
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBuildsBody)).Decode(&builds); err != nil {
		return nil, fmt.Errorf("%s: decoding the answer (a JSON list of builds): %w", op, err)
	}
	return builds, nil
}
