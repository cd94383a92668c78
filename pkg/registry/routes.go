package registry

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// routeKind names an endpoint of the API (also the route label in logs).
type routeKind string

const (
	routeBase      routeKind = "base"      // /v2/
	routeCatalog   routeKind = "catalog"   // /v2/_catalog
	routeToken     routeKind = "token"     // /auth/token
	routeBlob      routeKind = "blob"      // /v2/<name>/blobs/<digest>
	routeUploads   routeKind = "uploads"   // /v2/<name>/blobs/uploads/
	routeUpload    routeKind = "upload"    // /v2/<name>/blobs/uploads/<id>
	routeManifest  routeKind = "manifest"  // /v2/<name>/manifests/<reference>
	routeTags      routeKind = "tags"      // /v2/<name>/tags/list
	routeReferrers routeKind = "referrers" // /v2/<name>/referrers/<digest>
)

// route is a parsed request path.
type route struct {
	kind routeKind
	name string // repository
	ref  string // digest, reference or upload id
}

// parseRoute maps a path onto an endpoint. A repository name may contain
// slashes (and components such as "blobs" or "manifests"), so the endpoint
// is recognised from the end of the path: the reference, upload id and
// digest never contain a slash. The name is validated here, so no handler
// sees a name that could escape a directory.
func parseRoute(path string) (route, error) {
	switch path {
	case "/v2", "/v2/":
		return route{kind: routeBase}, nil
	case "/v2/_catalog":
		return route{kind: routeCatalog}, nil
	case "/auth/token":
		return route{kind: routeToken}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, newError(oci.CodeNameUnknown, "no such endpoint: %s", path).WithStatus(http.StatusNotFound)
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	var rt route
	switch {
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		rt = route{kind: routeUpload, name: strings.Join(segs[:n-3], "/"), ref: segs[n-1]}
		if rt.ref == "" {
			rt.kind = routeUploads
		}
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		rt = route{kind: routeUploads, name: strings.Join(segs[:n-2], "/")}
	case n >= 3 && segs[n-2] == "blobs":
		rt = route{kind: routeBlob, name: strings.Join(segs[:n-2], "/"), ref: segs[n-1]}
	case n >= 3 && segs[n-2] == "manifests":
		rt = route{kind: routeManifest, name: strings.Join(segs[:n-2], "/"), ref: segs[n-1]}
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		rt = route{kind: routeTags, name: strings.Join(segs[:n-2], "/")}
	case n >= 3 && segs[n-2] == "referrers":
		rt = route{kind: routeReferrers, name: strings.Join(segs[:n-2], "/"), ref: segs[n-1]}
	default:
		return route{}, newError(oci.CodeNameUnknown, "no such endpoint: %s", path).WithStatus(http.StatusNotFound)
	}
	if err := storage.ValidateRepository(rt.name); err != nil {
		return rt, newError(oci.CodeNameInvalid, "invalid repository name %q: lower-case letters, digits and separators (._-) in components joined by /, under 256 characters", rt.name).
			WithDetail(map[string]string{"name": rt.name})
	}
	return rt, nil
}

// handler returns the handler of the route for method and the access it
// needs.
func (rt route) handler(rg *Registry, method string) (handlerFunc, Access, bool) {
	type entry struct {
		h    handlerFunc
		need Access
	}
	var table map[string]entry
	switch rt.kind {
	case routeBase:
		table = map[string]entry{http.MethodGet: {rg.serveBase, AccessRead}, http.MethodHead: {rg.serveBase, AccessRead}}
	case routeCatalog:
		table = map[string]entry{http.MethodGet: {rg.serveCatalog, AccessRead}}
	case routeBlob:
		table = map[string]entry{
			http.MethodGet:    {rg.getBlob, AccessRead},
			http.MethodHead:   {rg.getBlob, AccessRead},
			http.MethodDelete: {rg.deleteBlob, AccessWrite},
		}
	case routeUploads:
		table = map[string]entry{http.MethodPost: {rg.startUpload, AccessWrite}}
	case routeUpload:
		table = map[string]entry{
			http.MethodGet:    {rg.getUpload, AccessWrite},
			http.MethodPatch:  {rg.patchUpload, AccessWrite},
			http.MethodPut:    {rg.putUpload, AccessWrite},
			http.MethodDelete: {rg.deleteUpload, AccessWrite},
		}
	case routeManifest:
		table = map[string]entry{
			http.MethodGet:    {rg.getManifest, AccessRead},
			http.MethodHead:   {rg.getManifest, AccessRead},
			http.MethodPut:    {rg.putManifest, AccessWrite},
			http.MethodDelete: {rg.deleteManifest, AccessWrite},
		}
	case routeTags:
		table = map[string]entry{http.MethodGet: {rg.listTags, AccessRead}}
	case routeReferrers:
		table = map[string]entry{http.MethodGet: {rg.listReferrers, AccessRead}}
	}
	e, ok := table[method]
	return e.h, e.need, ok
}

// methods lists the methods a route accepts, for the Allow header.
func (rt route) methods() []string {
	switch rt.kind {
	case routeBase:
		return []string{http.MethodGet, http.MethodHead}
	case routeCatalog, routeTags, routeReferrers:
		return []string{http.MethodGet}
	case routeBlob:
		return []string{http.MethodGet, http.MethodHead, http.MethodDelete}
	case routeUploads:
		return []string{http.MethodPost}
	case routeUpload:
		return []string{http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete}
	case routeManifest:
		return []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete}
	}
	return nil
}

// serveBase answers the API version check (GET /v2/).
func (rg *Registry) serveBase(w http.ResponseWriter, r *http.Request, _ route) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

// tagRE is the tag grammar of the OCI distribution spec.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// parseDigest parses a digest the registry supports (sha256 or sha512), or
// returns DIGEST_INVALID.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", newError(oci.CodeDigestInvalid, "invalid digest %q: %v", s, err).WithDetail(map[string]string{"digest": s})
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	}
	return "", newError(oci.CodeDigestInvalid, "unsupported digest algorithm %q: use sha256 or sha512", d.Algorithm()).
		WithDetail(map[string]string{"digest": s})
}

// isDigestRef reports whether a manifest reference is a digest (tags cannot
// contain ':').
func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }

// checkTag validates a tag.
func checkTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return newError(oci.CodeManifestInvalid, "invalid tag %q: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'", tag).
			WithDetail(map[string]string{"tag": tag})
	}
	return nil
}

// Route names the API endpoint a request path addresses: "base",
// "catalog", "token", "blob", "uploads", "upload", "manifest", "tags",
// "referrers", or "unknown". Its values are few and fixed, for metric
// labels (the repository name and reference are left out).
func Route(path string) string {
	rt, err := parseRoute(path)
	if err != nil && rt.kind == "" {
		return "unknown"
	}
	return string(rt.kind)
}
