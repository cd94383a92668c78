package publish

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/pkg/dockerhub"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// DockerHub is the docker_registry value that means Docker Hub.
const DockerHub = "docker.io"

// Docker Hub's endpoints: the registry API, and the web API for tags.
const (
	DockerHubRegistry = "registry-1.docker.io"
	DockerHubAPI      = dockerhub.DefaultURL
)

// tagsPageSize is how many tags promote's sweep asks for per page.
const tagsPageSize = 1000

// Target is the registry images are published to: the docker_registry,
// docker_registry_url and docker_registry_cert parameters of both modules.
type Target struct {
	// Registry is docker.io (Docker Hub, also known as index.docker.io,
	// registry-1.docker.io, registry.hub.docker.com and hub.docker.com)
	// or the host[:port] of any OCI registry. It names the images in
	// results.
	Registry string `ansible:"docker_registry" default:"docker.io"`
	// URL is where the registry API is reached, https://host[:port]:
	// https://registry-1.docker.io for Docker Hub and https://<Registry>
	// otherwise when empty. A mirror, a proxy or a test emulation sets it.
	URL string `ansible:"docker_registry_url"`
	// Cert holds PEM certificates to trust for URL (and Docker Hub's web
	// API), on top of the system roots.
	Cert string `ansible:"docker_registry_cert"`
	// InsecureRegistries may be reached over plain HTTP (anonymously,
	// unless loopback) without TLS verification, as dockerd's
	// insecure-registries: host[:port] or CIDR. Loopback registries and
	// dockerd's own insecure-registries need no entry.
	InsecureRegistries []string `ansible:"insecure_registries"`
}

// target is a Target checked and resolved.
type target struct {
	hub    bool
	name   string // docker.io, or the registry as given
	host   string // host[:port] of the registry API
	hubURL string
	ca     []byte
	// insecure are the insecure_registries.
	insecure []string
}

// resolve checks the target; hubURL is docker_hub_url (promote only).
func (t Target) resolve(hubURL string) (*target, error) {
	r := strings.ToLower(strings.TrimSpace(t.Registry))
	out := &target{ca: []byte(t.Cert), insecure: t.InsecureRegistries}
	if err := transfer.CheckInsecureRegistries(t.InsecureRegistries); err != nil {
		return nil, fmt.Errorf("insecure_registries: %w", err)
	}
	if t.Cert != "" {
		if _, err := pki.CertPool(out.ca); err != nil {
			return nil, fmt.Errorf("docker_registry_cert: %w: give the PEM of the CA that signed the registry's certificate", err)
		}
	}
	switch r {
	// "" is upstream's default: docker pushes an unprefixed name to
	// Docker Hub.
	case "", "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "hub.docker.com":
		out.hub, out.name, out.host, out.hubURL = true, DockerHub, DockerHubRegistry, DockerHubAPI
	default:
		if strings.Contains(r, "://") || strings.ContainsAny(r, "/@ ?#") {
			return nil, fmt.Errorf("docker_registry %q: give the registry as host[:port] (like quay.io or registry.example.org:5000), "+
				"with no scheme or path; to reach its API at another URL, set docker_registry_url", t.Registry)
		}
		if _, err := name.NewRegistry(r, name.StrictValidation); err != nil {
			return nil, fmt.Errorf("docker_registry %q is not a registry host: %v", t.Registry, err)
		}
		out.name, out.host = r, r
	}
	if t.URL != "" {
		host, err := httpsHost("docker_registry_url", t.URL)
		if err != nil {
			return nil, err
		}
		out.host = host
	}
	if hubURL != "" {
		if !out.hub {
			return nil, fmt.Errorf("docker_hub_url is set but docker_registry %q is not Docker Hub: other registries delete tags through the registry API", t.Registry)
		}
		if _, err := httpsHost("docker_hub_url", hubURL); err != nil {
			return nil, err
		}
		out.hubURL = strings.TrimRight(hubURL, "/")
	}
	return out, nil
}

// httpsHost checks an https://host[:port] URL and returns host[:port].
func httpsHost(param, raw string) (string, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return "", fmt.Errorf("%s %q: must be https://<host>[:<port>] (TLS only; no path, query or credentials)", param, raw)
	}
	return u.Host, nil
}

// endpoint is the target registry's transfer endpoint.
func (t *target) endpoint(c Credentials) transfer.Endpoint {
	return transfer.Endpoint{Host: t.host, Username: c.Username, Password: c.Password, CA: t.ca}
}

// hubHost is the host of Docker Hub's web API.
func (t *target) hubHost() string {
	u, _ := url.Parse(t.hubURL)
	return u.Host
}

// client returns the registry client for the target (and Docker Hub's web
// API): every request takes the transport the client gives its endpoint.
func (t *target) client(c Credentials, o options, extra ...transfer.Option) (*transfer.Client, error) {
	opts := []transfer.Option{transfer.WithEndpoint(t.endpoint(c)), transfer.WithLogger(o.log), transfer.WithPageSize(tagsPageSize),
		transfer.WithInsecureRegistries(t.insecure...)}
	if t.hub && oci.CanonicalHost(t.hubHost()) != oci.CanonicalHost(t.host) {
		opts = append(opts, transfer.WithEndpoint(transfer.Endpoint{Host: t.hubHost(), CA: t.ca}))
	}
	if o.wrap != nil {
		opts = append(opts, transfer.WithTransportWrapper(o.wrap))
	}
	return transfer.New(append(opts, extra...)...)
}

// repository returns the repository name in the target registry for an
// image's repository: Docker Hub's <namespace>/<name> (library/ for a
// single name), or the name as given elsewhere.
func (t *target) repository(repo string) (string, error) {
	if t.hub {
		ns, n, err := dockerhub.SplitRepository(repo)
		if err != nil {
			return "", err
		}
		return ns + "/" + n, nil
	}
	r := strings.TrimPrefix(repo, t.name+"/")
	if _, err := name.NewRepository(t.name+"/"+r, name.StrictValidation); err != nil {
		return "", fmt.Errorf("repository %q is not a valid repository name: %v", repo, err)
	}
	return r, nil
}

// ref names repo:tag in the target as users know it: docker.io/myorg/app:latest.
func (t *target) ref(repo, tag string) string { return t.name + "/" + repo + ":" + tag }

// imageRepository checks docker_images[i] before anything is written: its
// tags, that the credentials' restriction (pattern, nil for none) permits
// its repository, and its repository's name on the target, which it
// returns with how errors name the image.
func (t *target) imageRepository(param string, pattern *RepositoryPattern, i int, img zuul.Image) (repo, where string, err error) {
	where = fmt.Sprintf("%s[%d] (%s)", param, i, img.Repository)
	if err := img.CheckTags(param, i); err != nil {
		return "", where, err
	}
	if pattern != nil && !pattern.Allows(img.Repository) {
		return "", where, fmt.Errorf("%s: repository %s not permitted by docker_credentials.repository %q", where, img.Repository, pattern)
	}
	if repo, err = t.repository(img.Repository); err != nil {
		return "", where, fmt.Errorf("%s: %w", where, err)
	}
	return repo, where, nil
}
