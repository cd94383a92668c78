package publish

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/quay"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// The container-image family's plumbing: registries named by
// container_registry_credentials, each reached as its RegistryEndpoint
// says, and its tag API.

// containerImageTarget resolves the registry of a container_images entry
// (after ContainerCredentials.For) to a target, and checks that the
// image's repository names that registry, as upstream's roles expect
// (quay.io/org/app for registry quay.io). Docker Hub also takes a
// repository without the prefix.
func containerImageTarget(param string, i int, im zuul.Image, c RegistryCredentials) (*target, error) {
	where := fmt.Sprintf("%s[%d] (%s)", param, i, im.Repository)
	t, err := Target{Registry: im.Registry, URL: c.RegistryURL, Cert: c.Cert}.resolve("")
	if err != nil {
		return nil, fmt.Errorf("%s: container_registry_credentials[%q]: %s", where, im.Registry, strings.NewReplacer(
			"docker_registry_url", "registry_url", "docker_registry_cert", "cert", "docker_registry", "registry").Replace(err.Error()))
	}
	if !t.hub && !strings.HasPrefix(im.Repository, im.Registry+"/") {
		return nil, fmt.Errorf("%s: repository must include its registry, as %s/<namespace>/<name>", where, im.Registry)
	}
	return t, nil
}

// apiURL is the web API's base URL of registry with credentials c, of
// type typ: api_url, else Docker Hub's or https://<registry> for quay.
func apiURL(registry string, c RegistryCredentials, typ RegistryType) (string, error) {
	u := c.APIURL
	if u == "" {
		switch typ {
		case RegistryDocker:
			u = DockerHubAPI
		case RegistryQuay:
			u = "https://" + registry
		default:
			return "", nil
		}
	}
	if _, err := httpsHost(fmt.Sprintf("container_registry_credentials[%q].api_url", registry), strings.TrimRight(strings.TrimSuffix(strings.TrimRight(u, "/"), "/api/v1"), "/")); err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimRight(u, "/"), "/api/v1"), nil
}

// hostOf is host[:port] of an https URL.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// endpoints are the transfer endpoints of a set of registries, one per
// host (the first registry naming a host gives its credentials).
type endpoints struct {
	byHost map[string]transfer.Endpoint
	order  []string
}

func (e *endpoints) add(ep transfer.Endpoint) {
	if e.byHost == nil {
		e.byHost = map[string]transfer.Endpoint{}
	}
	k := oci.CanonicalHost(ep.Host)
	if old, ok := e.byHost[k]; ok {
		if len(old.CA) == 0 && len(ep.CA) > 0 {
			old.CA = ep.CA
			e.byHost[k] = old
		}
		return
	}
	e.byHost[k] = ep
	e.order = append(e.order, k)
}

func (e *endpoints) options() []transfer.Option {
	var opts []transfer.Option
	sort.Strings(e.order)
	for _, k := range e.order {
		opts = append(opts, transfer.WithEndpoint(e.byHost[k]))
	}
	return opts
}

// registryEndpoints adds the endpoint of every registry of cc that has
// credentials or a CA, so copies from and to them authenticate and trust
// what they should: the registry API, and the web API's host for its CA.
func registryEndpoints(cc ContainerCredentials, e *endpoints) error {
	names := make([]string, 0, len(cc))
	for n := range cc {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := cc[n]
		t, err := Target{Registry: n, URL: c.RegistryURL, Cert: c.Cert}.resolve("")
		if err != nil {
			return fmt.Errorf("container_registry_credentials[%q]: %w", n, err)
		}
		e.add(t.endpoint(Credentials{Username: c.Username, Password: c.Password}))
		if u, err := apiURL(n, c, c.TypeOf(n)); err == nil && u != "" && len(t.ca) > 0 {
			e.add(transfer.Endpoint{Host: hostOf(u), CA: t.ca})
		}
	}
	return nil
}

// newQuayAPI returns quay's tag API for registry, with the transport the
// client gives the API's host.
func newQuayAPI(client *transfer.Client, registry string, c RegistryCredentials, o options) (tagAPI, error) {
	what := fmt.Sprintf("container_registry_credentials[%q].api_token", registry)
	if c.APIToken == "" {
		return nil, fmt.Errorf("%s is not set: quay removes tags through its API, with the token of an application with the repo:write scope", what)
	}
	qc, err := newQuayClient(client, registry, c, o)
	if err != nil {
		return nil, err
	}
	return quayAPI{c: qc, what: what}, nil
}

// newQuayClient returns a client of quay's web API for registry (its
// api_url, else https://<registry>) with the entry's api_token, over the
// transport the client gives the API's host.
func newQuayClient(client *transfer.Client, registry string, c RegistryCredentials, o options) (*quay.Client, error) {
	u, err := apiURL(registry, c, RegistryQuay)
	if err != nil {
		return nil, err
	}
	rt, err := client.Transport(hostOf(u))
	if err != nil {
		return nil, err
	}
	return quay.New(u, c.APIToken, quay.WithTransport(rt), quay.WithLogger(o.log))
}
