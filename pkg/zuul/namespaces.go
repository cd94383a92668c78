package zuul

// Namespace is one registry a buildset registry stands in for: Registry
// as image references name it (docker.io, quay.io) and Upstream, the URL
// of the real registry. It is an entry of buildset_registry_namespaces,
// which use-buildset-registry (client mirrors) and run-buildset-registry
// (the registry's pull-through cache) share.
type Namespace struct {
	Registry string
	Upstream string
}

// DefaultNamespaces are zuul-jobs' defaults for
// buildset_registry_namespaces: Docker Hub (whose registry API is at
// registry-1.docker.io), quay.io, gcr.io and registry.k8s.io.
var DefaultNamespaces = []Namespace{
	{"docker.io", "https://registry-1.docker.io"},
	{"quay.io", "https://quay.io"},
	{"gcr.io", "https://gcr.io"},
	{"registry.k8s.io", "https://registry.k8s.io"},
}
