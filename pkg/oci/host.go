package oci

import "strings"

// DockerHubRegistry is the registry host Docker Hub's names resolve to,
// and docker.io its short alias.
const (
	DockerHubRegistry = "index.docker.io"
	dockerHubAlias    = "docker.io"
)

// CanonicalHost is the form registry hosts are compared and looked up by:
// lower case, without the default https port, docker.io folded into
// index.docker.io (as go-containerregistry's name package does).
func CanonicalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(h, ":443")
	if h == dockerHubAlias {
		h = DockerHubRegistry
	}
	return h
}
