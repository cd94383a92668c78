package buildset

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
)

// tokenKeyBytes is the size of the token signing key, random at every
// start: a restart invalidates tokens issued before it, and the key is
// never written anywhere.
const tokenKeyBytes = 32

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
	reg, err := registry.New(drv,
		registry.WithUsers(registry.User{Name: cfg.Username, Password: cfg.Password, Access: registry.AccessWrite}),
		registry.WithAnonymousRead(true),
		registry.WithTokenKey(key),
		registry.WithLogger(logger),
	)
	if err != nil {
		return nil, fmt.Errorf("configuring the registry: %w", err)
	}
	return reg, nil
}
