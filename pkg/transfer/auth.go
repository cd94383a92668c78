package transfer

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/imagegate/imagegate/pkg/oci"
)

// ping returns the registry's challenge (distribution-spec, "API version
// check"), asking once per Client: every repository of the registry needs
// it, and it does not change. A failure is not remembered.
//
// It does its own ping instead of go-containerregistry's, which races a
// plain-HTTP ping against the https one for loopback and private
// addresses: a TLS registry must never see plain HTTP unless HTTPS
// failed. A loopback or declared insecure registry is asked over HTTPS
// first and over plain HTTP when that fails, as dockerd does; the
// answer's scheme is the one every later request takes.
func (et *endpointTransport) ping(ctx context.Context) (*oci.Challenge, error) {
	et.mu.Lock()
	defer et.mu.Unlock()
	if et.challenge != nil {
		return et.challenge, nil
	}
	host := et.ep.Host
	if et.conv.plainHTTPAllowed(host) {
		// One HTTPS attempt without retries says whether the registry
		// speaks TLS at all; only a registry that does not (it answers
		// in plain HTTP, or nothing listens on the HTTPS port) is asked
		// over plain HTTP. A TLS failure (an untrusted certificate) is
		// reported as it is, as for any registry.
		probe, err := et.get(ctx, et.probe, "https", host)
		switch {
		case err == nil:
			drain(probe)
		case speaksNoTLS(err):
			et.scheme = "http"
		}
	}
	resp, err := et.get(ctx, et.rt, et.scheme, host)
	if err != nil {
		var oe *oci.Error
		if errors.As(err, &oe) {
			return nil, err
		}
		if et.scheme == "https" && speaksNoTLS(err) && strings.Contains(err.Error(), "HTTP response to HTTPS") {
			return nil, fmt.Errorf("GET https://%s/v2/: registry %s answers plain HTTP where HTTPS is required: serve it over TLS, "+
				"or declare it insecure (the module's insecure_registries parameter, or insecure-registries in %s); "+
				"credentials are never sent over plain HTTP to a host that is not loopback: %w", host, host, et.conv.daemonConfigName(), err)
		}
		return nil, fmt.Errorf("GET %s://%s/v2/: %w", et.scheme, host, err)
	}
	op := "GET " + et.scheme + "://" + host + "/v2/"
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		et.challenge = &oci.Challenge{}
	case http.StatusUnauthorized:
		ch, ok := oci.FindChallenge(resp.Header.Values("WWW-Authenticate"), "bearer", "basic")
		if !ok {
			return nil, fmt.Errorf("%s: 401 without a basic or bearer challenge (WWW-Authenticate: %q)", op, resp.Header.Get("WWW-Authenticate"))
		}
		et.challenge = &ch
	default:
		return nil, oci.ResponseError(op, resp)
	}
	return et.challenge, nil
}

// speaksNoTLS reports whether an HTTPS request failed because the server
// does not speak TLS: it answered in plain HTTP, or refused the
// connection (nothing listens on the port).
func speaksNoTLS(err error) bool {
	var rec tls.RecordHeaderError
	return errors.As(err, &rec) || errors.Is(err, syscall.ECONNREFUSED) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// get sends GET <scheme>://host/v2/ through rt.
func (et *endpointTransport) get(ctx context.Context, rt http.RoundTripper, scheme, host string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+"/v2/", nil)
	if err != nil {
		return nil, err
	}
	return rt.RoundTrip(req)
}

// urlScheme is the scheme of the registry's URLs: https, or http when its
// ping fell back to plain HTTP.
func (et *endpointTransport) urlScheme() string {
	et.mu.Lock()
	defer et.mu.Unlock()
	return et.scheme
}

// authorized returns the transport for requests to the registry with
// access to scopes: the bare transport for a registry without
// authentication, a bearer token exchanged for the credentials, or basic
// authentication, as the challenge asks. tok is the token when there is
// one.
func (et *endpointTransport) authorized(ctx context.Context, scopes []string) (rt http.RoundTripper, tok *transport.Token, err error) {
	ch, err := et.ping(ctx)
	if err != nil {
		return nil, nil, err
	}
	reg, err := name.NewRegistry(et.ep.Host, name.WeakValidation)
	if err != nil {
		return nil, nil, err
	}
	tc := &transport.Challenge{Scheme: ch.Scheme, Parameters: ch.Params}
	switch strings.ToLower(ch.Scheme) {
	case "":
		return et.rt, nil, nil
	case "bearer":
		tok, err := transport.Exchange(ctx, reg, et.auth, et.rt, scopes, tc)
		if err != nil {
			return nil, nil, authError("getting a token for "+strings.Join(scopes, " "), err)
		}
		rt, err := transport.FromToken(reg, et.auth, et.rt, tc, tok)
		return rt, tok, err
	case "basic":
		rt, err := transport.FromToken(reg, et.auth, et.rt, tc, &transport.Token{})
		return rt, nil, err
	}
	return nil, nil, fmt.Errorf("registry %s asks for %q authentication, which is not supported (basic and bearer are)", et.ep.Host, ch.Scheme)
}

// checkBasic verifies basic credentials once per registry: unlike a token
// exchange, nothing else would reject wrong ones before the first real
// request.
func (et *endpointTransport) checkBasic(ctx context.Context, rt http.RoundTripper) error {
	et.mu.Lock()
	defer et.mu.Unlock()
	if et.basicOK || !strings.EqualFold(et.challenge.Scheme, "basic") {
		return nil
	}
	op := "logging in to " + et.ep.Host
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, et.scheme+"://"+et.ep.Host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		return err
	}
	et.basicOK = true
	return nil
}

// authError turns a failed token exchange into an *oci.Error when the
// token service answered with a status, so that callers test it with
// errors.Is(err, oci.ErrDenied) like any registry answer.
func authError(op string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode != 0 {
		e := &oci.Error{Op: op, StatusCode: te.StatusCode}
		for _, d := range te.Errors {
			e.Errors = append(e.Errors, oci.Diagnostic{Code: oci.ErrorCode(d.Code), Message: d.Message})
		}
		return e
	}
	return fmt.Errorf("%s: %w", op, err)
}

// grants are the access claims of a registry token: repository name (or
// "*" for every repository) to actions.
type grants map[string]map[string]bool

func (g grants) allows(repo string, push bool) bool {
	for _, name := range []string{repo, "*"} {
		a := g[name]
		if a["*"] || (a["pull"] && (!push || a["push"])) {
			return true
		}
	}
	return false
}

// tokenGrants reads the access claim of a registry token, when the token
// is a JWT: the Docker token specification's "access": [{"type":
// "repository", "name", "actions"}], or imagegate's registry's
// registry-wide "access": "read" | "write". It returns nil when the token
// says nothing (an opaque token): then only a request can tell. The
// signature is not checked; the registry does that, and the claim only
// spares a request.
func tokenGrants(tok *transport.Token) grants {
	if tok == nil {
		return nil
	}
	raw := tok.Token
	if raw == "" {
		raw = tok.AccessToken
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims struct {
		Access json.RawMessage `json:"access"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Access) == 0 {
		return nil
	}
	var level string
	if json.Unmarshal(claims.Access, &level) == nil {
		switch level {
		case "write":
			return grants{"*": {"pull": true, "push": true}}
		case "read":
			return grants{"*": {"pull": true}}
		}
		return nil
	}
	var list []struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	if json.Unmarshal(claims.Access, &list) != nil {
		return nil
	}
	g := grants{}
	for _, a := range list {
		if a.Type != "repository" {
			continue
		}
		if g[a.Name] == nil {
			g[a.Name] = map[string]bool{}
		}
		for _, act := range a.Actions {
			g[a.Name][act] = true
		}
	}
	return g
}

// drain reads what is left of a small answer, so the connection is reused,
// and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}
