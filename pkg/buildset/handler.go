package buildset

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
	"github.com/imagegate/imagegate/pkg/registry/upstream"
)

// tokenKeyBytes is the size of the token signing key, random at every
// start: a restart invalidates tokens issued before it, and the key is
// never written anywhere.
const tokenKeyBytes = 32

// upstreamNamespaces are the pull-through namespaces of cfg. The buildset
// registry reads its upstreams anonymously: upstream credentials (an
// account lifting Docker Hub's rate limit) belong to the intermediate
// registry's configuration, never to a node; pointing a namespace at the
// intermediate registry's cache shares that account's limit and one fill
// among every buildset.
func upstreamNamespaces(cfg *config) ([]registry.UpstreamNamespace, error) {
	var opts []upstream.Option
	if cfg.UpstreamCA != "" {
		opts = append(opts, upstream.WithCA([]byte(cfg.UpstreamCA)))
	}
	opts = append(opts, upstream.WithUserAgent("imagegate-buildset-registry"))
	var out []registry.UpstreamNamespace
	for _, u := range cfg.Upstreams {
		c, err := upstream.New(u.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("upstream of %s: %w", u.Registry, err)
		}
		out = append(out, registry.UpstreamNamespace{Registry: u.Registry, Upstream: c})
	}
	return out, nil
}

// newHandler builds the registry: filesystem storage under the root, one
// user with write access, and anonymous reads, which a registry-mirrors
// entry of dockerd needs (docker sends Docker Hub credentials, or none, to
// a mirror).
func newHandler(l layout, cfg *config, logger *slog.Logger) (http.Handler, error) {
	drv, err := filesystem.New(l.storage())
	if err != nil {
		return nil, fmt.Errorf("opening the registry storage: %w", err)
	}
	key := make([]byte, tokenKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating the token key: %w", err)
	}
	opts := []registry.Option{
		registry.WithUsers(registry.User{Name: cfg.Username, Password: cfg.Password, Access: registry.AccessWrite}),
		registry.WithAnonymousRead(true),
		registry.WithTokenKey(key),
		registry.WithLogger(logger),
	}
	if len(cfg.Upstreams) > 0 {
		nss, err := upstreamNamespaces(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, registry.WithUpstreams(nss...),
			registry.WithUpstreamTagTTL(time.Duration(cfg.UpstreamTagTTL)*time.Second))
	}
	reg, err := registry.New(drv, opts...)
	if err != nil {
		return nil, fmt.Errorf("configuring the registry: %w", err)
	}
	return reg, nil
}
