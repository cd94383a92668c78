package transfertest

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Transport is an HTTP transport trusting only the registry's CA.
func (r Registry) Transport() http.RoundTripper { return r.transport() }

// Push is Push of content to repoTag (repository:tag, without the host)
// on r.
func (r Registry) Push(t testing.TB, repoTag string, content remote.Taggable) string {
	t.Helper()
	return Push(t, r, r.Host+"/"+repoTag, content)
}

// Digest returns the digest repoTag (repository:tag, without the host)
// points to on r, from a manifest HEAD with go-containerregistry, or "" if
// the registry answers 404. Other failures fail t.
func (r Registry) Digest(t testing.TB, repoTag string) string {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.WeakValidation)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(ref, remote.WithAuth(r.authenticator()), remote.WithTransport(r.transport()))
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return ""
	}
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}
