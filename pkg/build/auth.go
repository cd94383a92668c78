package build

import (
	"context"

	"github.com/moby/buildkit/session/auth"
	"google.golang.org/grpc"
)

// Credential is a username and password for one registry host.
type Credential struct {
	Username string
	Password string
}

// authProvider answers buildkitd's credential requests over the build
// session from memory: the password never touches a file (no
// ~/.docker/config.json, no token seed file). Hosts it does not know get
// empty credentials, so buildkitd goes on anonymously (Docker Hub, say).
//
// Token authority (client-signed tokens) is left unimplemented on purpose:
// buildkitd then asks for the credentials and fetches registry tokens
// itself, with the TLS trust buildkitd.toml gives that host.
type authProvider struct {
	auth.UnimplementedAuthServer
	creds map[string]Credential
}

func newAuthProvider(creds map[string]Credential) *authProvider {
	return &authProvider{creds: creds}
}

func (a *authProvider) Register(s *grpc.Server) { auth.RegisterAuthServer(s, a) }

// Credentials implements auth.AuthServer.
func (a *authProvider) Credentials(_ context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	c, ok := a.creds[req.Host]
	if !ok {
		return &auth.CredentialsResponse{}, nil
	}
	return &auth.CredentialsResponse{Username: c.Username, Secret: c.Password}, nil
}
