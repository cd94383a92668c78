package publish

import (
	"fmt"
	"sort"
	"strings"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// RegistryType selects the API a registry's tags are removed through
// (upstream's container_registry_credentials[<registry>].type).
type RegistryType string

// The registry types. Upstream knows docker and quay and infers them from
// the registry's name; generic is imagegate's: the distribution spec's tag
// delete (DELETE /v2/<name>/manifests/<tag>), for every other registry.
const (
	RegistryDocker  RegistryType = "docker"
	RegistryQuay    RegistryType = "quay"
	RegistryGeneric RegistryType = "generic"
)

// RegistryCredentials are one entry of container_registry_credentials, the
// credentials of the container-image family, keyed by registry host.
type RegistryCredentials struct {
	Username string `ansible:"username"`
	Password string `ansible:"password,no_log"`
	// Repository is a regular expression every image's repository (which
	// includes the registry host) must match, as re.search; empty allows
	// any.
	Repository string `ansible:"repository"`
	// APIToken is quay's OAuth application token, used for its tag and
	// repository API.
	APIToken string `ansible:"api_token,no_log"`
	// Type selects the tag API; empty infers it from the registry's name
	// (TypeOf).
	Type RegistryType `ansible:"type" choices:"docker,quay,generic"`
	// RegistryEndpoint says where the registry and its web API are
	// reached, when not at their public addresses (imagegate's).
	RegistryEndpoint
}

// RegistryEndpoint is where a registry of container_registry_credentials
// is reached: its registry API, its web API (Docker Hub's, quay's) and the
// CA to trust for both. Empty fields take the public addresses: the
// registry at https://<registry>, Docker Hub's web API at
// https://hub.docker.com, quay's at https://<registry>. A mirror, a proxy,
// a private quay or a test emulation sets them.
type RegistryEndpoint struct {
	// RegistryURL is the registry API, https://host[:port].
	RegistryURL string `ansible:"registry_url"`
	// APIURL is the web API's base URL (upstream's
	// remove_registry_tag_api_url, per registry).
	APIURL string `ansible:"api_url"`
	// Cert holds PEM certificates to trust for both, on top of the
	// system roots.
	Cert string `ansible:"cert"`
}

// ContainerCredentials is container_registry_credentials: registry host to
// its credentials.
type ContainerCredentials map[string]RegistryCredentials

// TypeOf is the registry type of host with credentials c: c.Type when set,
// else quay for a name containing quay.io, docker for one containing
// docker.io (upstream's inference), else generic.
func (c RegistryCredentials) TypeOf(host string) RegistryType {
	switch {
	case c.Type != "":
		return c.Type
	case strings.Contains(host, "quay.io"):
		return RegistryQuay
	case strings.Contains(host, "docker.io"):
		return RegistryDocker
	}
	return RegistryGeneric
}

// For returns the credentials of image i of param (container_images), whose
// registry field names the entry, after checking, as upstream does before
// anything is sent: that the entry exists, and that the image's repository
// matches the entry's repository expression. warning is set when that
// expression is not anchored.
func (cc ContainerCredentials) For(param string, i int, im zuul.Image) (c RegistryCredentials, warning string, err error) {
	if im.Registry == "" {
		return c, "", fmt.Errorf("%s[%d] (%s): registry is not set: name the registry whose entry in container_registry_credentials applies", param, i, im.Repository)
	}
	c, ok := cc[im.Registry]
	if !ok {
		known := make([]string, 0, len(cc))
		for k := range cc {
			known = append(known, k)
		}
		sort.Strings(known)
		return c, "", fmt.Errorf("%s[%d] (%s): container_registry_credentials has no entry for registry %q (entries: %s)",
			param, i, im.Repository, im.Registry, strings.Join(known, ", "))
	}
	if c.Repository == "" {
		return c, "", nil
	}
	p, warning, err := compileRepositoryPattern(fmt.Sprintf("container_registry_credentials[%q].repository", im.Registry), c.Repository)
	if err != nil {
		return c, "", err
	}
	if !p.Allows(im.Repository) {
		return c, warning, fmt.Errorf("%s[%d]: %s not permitted by container_registry_credentials[%q].repository %s",
			param, i, im.Repository, im.Registry, p)
	}
	return c, warning, nil
}
