package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// authTransport returns the transport for requests to host with access
// to scopes: it pings the registry over https (distribution spec, "API
// version check"), then exchanges the credentials for a bearer token or
// sends them as basic authentication, as the challenge asks.
//
// It does its own ping instead of go-containerregistry's, which races a
// plain-HTTP ping against the https one for loopback and private
// addresses: a TLS registry there must never see plain HTTP.
func authTransport(ctx context.Context, host string, et *endpointTransport, scopes []string) (http.RoundTripper, error) {
	reg, err := name.NewRegistry(host, name.WeakValidation)
	if err != nil {
		return nil, err
	}
	ch, err := et.ping(ctx, host)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(ch.Scheme) {
	case "":
		return et.rt, nil
	case "bearer":
		tok, err := transport.Exchange(ctx, reg, et.auth, et.rt, scopes, ch)
		if err != nil {
			return nil, fmt.Errorf("getting a token for %s: %w", strings.Join(scopes, " "), err)
		}
		return transport.FromToken(reg, et.auth, et.rt, ch, tok)
	case "basic":
		return transport.FromToken(reg, et.auth, et.rt, ch, &transport.Token{})
	}
	return nil, fmt.Errorf("registry %s asks for %q authentication, which is not supported (basic and bearer are)", host, ch.Scheme)
}

// ping returns the registry's challenge, asking once per Copier: every
// repository client of the registry needs it, and it does not change. A
// failure is not remembered.
func (et *endpointTransport) ping(ctx context.Context, host string) (*transport.Challenge, error) {
	et.mu.Lock()
	defer et.mu.Unlock()
	if et.challenge != nil {
		return et.challenge, nil
	}
	ch, err := ping(ctx, host, et.rt)
	if err != nil {
		return nil, err
	}
	et.challenge = ch
	return ch, nil
}

func ping(ctx context.Context, host string, rt http.RoundTripper) (*transport.Challenge, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) {
			return nil, err
		}
		return nil, fmt.Errorf("GET https://%s/v2/: %w", host, err)
	}
	defer func() {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
		return &transport.Challenge{}, nil
	case http.StatusUnauthorized:
		for _, h := range resp.Header.Values("WWW-Authenticate") {
			scheme, params := parseChallenge(h)
			if s := strings.ToLower(scheme); s == "bearer" || s == "basic" {
				return &transport.Challenge{Scheme: scheme, Parameters: params}, nil
			}
		}
		return nil, fmt.Errorf("GET https://%s/v2/: 401 without a basic or bearer challenge (WWW-Authenticate: %q)", host, resp.Header.Get("WWW-Authenticate"))
	}
	return nil, transport.CheckError(resp, http.StatusOK, http.StatusUnauthorized)
}

// parseChallenge splits a WWW-Authenticate value (RFC 9110, section
// 11.6.1) into its scheme and parameters, keys lower-cased.
func parseChallenge(h string) (string, map[string]string) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		k := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimSpace(rest[eq+1:])
		var v string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			v = b.String()
			rest = rest[min(i+1, len(rest)):]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			v = strings.TrimSpace(rest[:end])
			rest = rest[end:]
		}
		params[k] = v
		rest = strings.TrimLeft(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return scheme, params
}
