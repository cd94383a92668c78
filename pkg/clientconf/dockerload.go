package clientconf

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Speculative images for docker consumers of every registry.
//
// dockerd's registry-mirrors apply to docker.io only: `docker run
// quay.io/org/image` never asks the buildset registry, so a consumer job
// would run the published image instead of the change's (upstream's
// use-buildset-registry documents this; Nodepool moved to podman for it).
// So, when dockerd runs, Apply loads the buildset's speculative images of
// every other configured namespace into it under their real names: it
// lists the buildset registry's repositories (catalog) and tags, keeps
// those under a configured namespace other than docker.io (quay.io/org/app
// is quay.io's org/app), pulls each tag through the Engine API from
// <location>/quay.io/org/app:tag (POST /images/create) and tags the image
// quay.io/org/app:tag (POST /images/{name}/tag). A name that already has
// the same image ID is left alone (not a change). Only pushed tags are
// listed: images the registry cached from upstreams (pull-through) are not
// speculative and are not loaded.

// DockerImage is one speculative image loaded into dockerd under its real
// name.
type DockerImage struct {
	// Name is the image's real name (quay.io/org/app:tag); Source the
	// buildset registry's (<location>/quay.io/org/app:tag).
	Name   string `json:"name"`
	Source string `json:"source"`
	// ID is the image ID dockerd gives it ("" in check mode when it was
	// not pulled yet).
	ID string `json:"id"`
	// Changed is true when Name was (or would be) tagged anew.
	Changed bool `json:"changed"`
}

// maxListPages bounds the pages read from a catalog or tag list.
const maxListPages = 1000

// registryLister reads the buildset registry's catalog and tag lists,
// anonymously (the buildset registry serves anonymous reads), trusting its
// CA only.
type registryLister struct {
	base   *url.URL
	client *http.Client
}

func newRegistryLister(reg *zuul.BuildsetRegistry) (*registryLister, error) {
	pool, err := pki.CertPool([]byte(reg.Cert))
	if err != nil {
		return nil, fmt.Errorf("buildset_registry.cert: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.Proxy = nil // the buildset registry is on the job's nodes
	return &registryLister{base: &url.URL{Scheme: "https", Host: reg.Address()},
		client: &http.Client{Timeout: 30 * time.Second, Transport: tr}}, nil
}

// list follows a paginated list endpoint and returns the items of key.
func (l *registryLister) list(ctx context.Context, path, key string) ([]string, error) {
	u := *l.base
	u.Path = path
	u.RawQuery = "n=1000"
	next := &u
	var out []string
	for range maxListPages {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := l.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", next, err)
		}
		if resp.StatusCode == http.StatusNotFound && key == "tags" {
			resp.Body.Close()
			return nil, nil // a repository that holds no tag
		}
		if err := oci.CheckResponse(resp, "GET "+next.String(), http.StatusOK); err != nil {
			resp.Body.Close()
			return nil, err
		}
		var page map[string]json.RawMessage
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", next, err)
		}
		var items []string
		if raw, ok := page[key]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("GET %s: %s: %w", next, key, err)
			}
		}
		out = append(out, items...)
		if next, err = oci.NextLink(next, resp.Header.Values("Link")...); err != nil {
			return nil, err
		}
		if next == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("GET %s: more than %d pages", path, maxListPages)
}

// speculativeImages lists the registry's tags under the namespaces other
// than docker.io, as real names and the buildset registry's names.
func speculativeImages(ctx context.Context, reg *zuul.BuildsetRegistry, location string, namespaces []Namespace) ([]DockerImage, error) {
	l, err := newRegistryLister(reg)
	if err != nil {
		return nil, err
	}
	repos, err := l.list(ctx, "/v2/_catalog", "repositories")
	if err != nil {
		return nil, fmt.Errorf("listing the buildset registry's repositories: %w", err)
	}
	var out []DockerImage
	for _, repo := range repos {
		first, _, ok := strings.Cut(repo, "/")
		if !ok || first == "docker.io" || !slices.ContainsFunc(namespaces, func(ns Namespace) bool { return ns.Host == first }) {
			continue // docker.io content comes through the mirror
		}
		tags, err := l.list(ctx, "/v2/"+repo+"/tags/list", "tags")
		if err != nil {
			return nil, fmt.Errorf("listing the tags of %s in the buildset registry: %w", repo, err)
		}
		sort.Strings(tags)
		for _, tag := range tags {
			out = append(out, DockerImage{Name: repo + ":" + tag, Source: location + "/" + repo + ":" + tag})
		}
	}
	return out, nil
}

// loadDockerImages pulls the buildset's speculative images of other
// namespaces into the running dockerd and tags them with their real names.
// It does nothing when dockerd does not run.
func loadDockerImages(ctx context.Context, s *apply, location string) ([]DockerImage, bool, error) {
	api := newDockerAPI(s.Paths.DockerHost)
	if _, err := api.mirrors(ctx); err != nil {
		if isNotRunning(err) {
			s.o.log.Info("dockerd is not running: no speculative images to load", "docker_host", s.Paths.DockerHost)
			return []DockerImage{}, false, nil
		}
		return nil, false, fmt.Errorf("docker_load: asking dockerd at %s: %w", s.Paths.DockerHost, err)
	}
	images, err := speculativeImages(ctx, s.reg, location, s.namespaces)
	if err != nil {
		return nil, false, fmt.Errorf("docker_load: %w", err)
	}
	pull := api.withoutTimeout()
	changed := false
	for i := range images {
		im := &images[i]
		if !s.o.check {
			if err := pull.pull(ctx, im.Source); err != nil {
				return nil, false, fmt.Errorf("docker_load: pulling %s into dockerd: %w (dockerd must trust the buildset registry's CA in %s and resolve %s)",
					im.Source, err, s.Paths.DockerCertsDir, location)
			}
		}
		src, err := api.imageID(ctx, im.Source)
		if err != nil {
			return nil, false, fmt.Errorf("docker_load: %w", err)
		}
		have, err := api.imageID(ctx, im.Name)
		if err != nil {
			return nil, false, fmt.Errorf("docker_load: %w", err)
		}
		im.ID = src
		if src != "" && src == have {
			continue
		}
		im.Changed, changed = true, true
		if s.o.check {
			continue
		}
		if err := api.tag(ctx, im.Source, im.Name); err != nil {
			return nil, false, fmt.Errorf("docker_load: tagging %s as %s: %w", im.Source, im.Name, err)
		}
		s.o.log.Info("loaded a speculative image into dockerd", "image", im.Name, "id", im.ID)
	}
	return images, changed, nil
}

// withoutTimeout is the API client for pulls, which take as long as the
// image's layers (the request's context still bounds them).
func (a *dockerAPI) withoutTimeout() *dockerAPI {
	c := *a.client
	c.Timeout = 0
	return &dockerAPI{client: &c}
}

// pull pulls ref (name:tag) into dockerd: POST /images/create streams
// progress as JSON lines, and a failure arrives as an errorDetail line
// after a 200.
func (a *dockerAPI) pull(ctx context.Context, ref string) error {
	i := strings.LastIndex(ref, ":")
	q := url.Values{"fromImage": {ref[:i]}, "tag": {ref[i+1:]}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/images/create?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) == nil && (msg.Error != "" || msg.ErrorDetail.Message != "") {
			return errors.New(strings.TrimSpace(msg.Error + " " + msg.ErrorDetail.Message))
		}
	}
	return sc.Err()
}

// imageID returns the ID of image ref, or "" when dockerd has none.
func (a *dockerAPI) imageID(ctx context.Context, ref string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/images/"+ref+"/json", nil)
	if err != nil {
		return "", err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("inspecting %s: %w", ref, apiError(resp))
	}
	var img struct{ Id string }
	if err := json.NewDecoder(resp.Body).Decode(&img); err != nil {
		return "", fmt.Errorf("inspecting %s: %w", ref, err)
	}
	return img.Id, nil
}

// tag gives image src the name dst (name:tag), replacing what dst named.
func (a *dockerAPI) tag(ctx context.Context, src, dst string) error {
	i := strings.LastIndex(dst, ":")
	q := url.Values{"repo": {dst[:i]}, "tag": {dst[i+1:]}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/images/"+src+"/tag?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	return nil
}

// apiError reads dockerd's {"message"} error answer.
func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var m struct{ Message string }
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		return fmt.Errorf("%s: %s", resp.Status, m.Message)
	}
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}
