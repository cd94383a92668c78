package build

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// registry reads manifest digests from the buildset registry, so that
// changed can be observed: a tag that already points at the digest a build
// produced was not changed by the push.
type registry struct {
	resolver remotes.Resolver
}

func newRegistry(roots *x509.CertPool, creds map[string]Credential) *registry {
	hc := &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment},
	}
	authz := docker.NewDockerAuthorizer(docker.WithAuthClient(hc), docker.WithAuthCreds(func(host string) (string, string, error) {
		c := creds[host]
		return c.Username, c.Password, nil
	}))
	hosts := docker.ConfigureDefaultRegistries(docker.WithClient(hc), docker.WithAuthorizer(authz),
		docker.WithPlainHTTP(func(string) (bool, error) { return false, nil }))
	return &registry{resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts})}
}

// digest returns the digest ref points at, or "" when the registry does not
// have it.
func (r *registry) digest(ctx context.Context, ref string) (string, error) {
	// containerd logs every 404 through logrus; a missing tag is expected
	// here, and a module's stderr is for its own messages.
	ctx = log.WithLogger(ctx, logrus.NewEntry(quietLogger))
	_, desc, err := r.resolver.Resolve(ctx, ref)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

var quietLogger = func() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}()
