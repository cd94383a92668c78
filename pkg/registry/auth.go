package registry

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Access is a level of access to the registry.
type Access string

// Access levels. Write includes read.
const (
	AccessRead  Access = "read"
	AccessWrite Access = "write"
)

// allows reports whether a holds need.
func (a Access) allows(need Access) bool {
	switch need {
	case AccessRead:
		return a == AccessRead || a == AccessWrite
	case AccessWrite:
		return a == AccessWrite
	}
	return false
}

// MarshalText implements encoding.TextMarshaler.
func (a Access) MarshalText() ([]byte, error) {
	if a != AccessRead && a != AccessWrite {
		return nil, fmt.Errorf("access %q is not %q or %q", string(a), AccessRead, AccessWrite)
	}
	return []byte(a), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, for configuration
// files: "read" or "write".
func (a *Access) UnmarshalText(b []byte) error {
	switch v := Access(b); v {
	case AccessRead, AccessWrite:
		*a = v
		return nil
	}
	return fmt.Errorf("access %q is not %q or %q", string(b), AccessRead, AccessWrite)
}

// User is a named user of the registry and its access level.
type User struct {
	Name     string
	Password string
	Access   Access
}

// principal is who a request acts for, and what it may do: a user's (or
// anonymous) access level for basic credentials, or exactly the grants of
// a token.
type principal struct {
	name   string // empty for anonymous
	access Access
	token  bool
	grants []grant
}

// tokenHeader is the fixed JOSE header of the registry's tokens (JWT,
// HMAC-SHA256), base64url-encoded.
var tokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// tokenClaims are a token's JWT claims; Access is the Docker token
// specification's access claim, the resources and actions granted.
type tokenClaims struct {
	Subject  string  `json:"sub,omitempty"`
	Access   []grant `json:"access"`
	IssuedAt int64   `json:"iat"`
	Expires  int64   `json:"exp"`
	Issuer   string  `json:"iss"`
}

// issueToken returns a signed token for p granting p.grants, and the time
// it was issued.
func (rg *Registry) issueToken(p principal) (string, time.Time) {
	now := rg.now()
	grants := p.grants
	if grants == nil {
		grants = []grant{}
	}
	claims, _ := json.Marshal(tokenClaims{Subject: p.name, Access: grants, IssuedAt: now.Unix(),
		Expires: now.Add(rg.tokenTTL).Unix(), Issuer: rg.service})
	signed := tokenHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	mac := hmac.New(sha256.New, rg.tokenKey)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), now
}

// verifyToken checks a token's signature and expiry.
func (rg *Registry) verifyToken(tok string) (principal, bool) {
	head, rest, ok := strings.Cut(tok, ".")
	if !ok || head != tokenHeader {
		return principal{}, false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return principal{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return principal{}, false
	}
	mac := hmac.New(sha256.New, rg.tokenKey)
	mac.Write([]byte(head + "." + payload))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return principal{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return principal{}, false
	}
	var c tokenClaims
	if err := json.Unmarshal(raw, &c); err != nil || rg.now().Unix() >= c.Expires {
		return principal{}, false
	}
	return principal{name: c.Subject, token: true, grants: c.Access}, true
}

// permits reports whether p may do q: a token by its grants, credentials
// by their level. Reads are open to anyone when anonymous reads are
// allowed, whatever a token grants.
func (rg *Registry) permits(p principal, q requirement) bool {
	if q.read() && rg.anonRead {
		return true
	}
	if p.token {
		return covers(p.grants, q)
	}
	return p.access.allows(level(q.typ, q.action))
}

// checkPassword verifies a user's password: one SHA-256 and a constant-time
// comparison. An unknown user costs the same as a known one.
func (rg *Registry) checkPassword(name, password string) (principal, bool) {
	sum := sha256.Sum256([]byte(password))
	cred, known := rg.users[name]
	ok := subtle.ConstantTimeCompare(sum[:], cred.sum[:]) == 1
	if !known || !ok {
		return principal{}, false
	}
	return principal{name: name, access: cred.access}, true
}

// challenge returns the 401 answer asking for a bearer token with the
// scopes of reqs; bearerErr is "invalid_token" or "insufficient_scope" when
// a token was presented.
func (rg *Registry) challenge(r *http.Request, reqs []requirement, bearerErr, msg string) error {
	realm := rg.realm
	if realm == "" {
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		realm = scheme + "://" + r.Host + "/auth/token"
	}
	ch := oci.Challenge{Scheme: "Bearer", Params: map[string]string{"realm": realm, "service": rg.service}}
	scopes := make([]string, len(reqs))
	detail := make([]map[string]string, len(reqs))
	for i, q := range reqs {
		scopes[i] = q.scope()
		detail[i] = map[string]string{"Type": q.typ, "Name": q.name, "Action": q.action}
	}
	if len(scopes) > 0 {
		ch.Params["scope"] = strings.Join(scopes, " ")
	}
	if bearerErr != "" {
		ch.Params["error"] = bearerErr
	}
	e := newError(oci.CodeUnauthorized, "%s", msg).WithHeader("WWW-Authenticate", ch.String())
	if len(detail) > 0 {
		e = e.WithDetail(detail)
	}
	return e
}

// authorize decides whether the request may proceed with the access it
// needs (see requirements). Reads without credentials pass when anonymous
// reads are allowed, except the version check (/v2/), which answers 401 so
// that clients learn where to authenticate (docker login relies on it). A
// token passes only for the resources and actions it grants.
func (rg *Registry) authorize(r *http.Request, rt route, need Access) (principal, error) {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	reqs := requirements(r, rt, need)
	anonymousOK := need == AccessRead && rg.anonRead && rt.kind != routeBase
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		p, ok := rg.verifyToken(strings.TrimSpace(cred))
		if !ok {
			if anonymousOK {
				return principal{access: AccessRead}, nil
			}
			return principal{}, rg.challenge(r, reqs, "invalid_token", "authentication required: the token is invalid or expired")
		}
		for _, q := range reqs {
			if !rg.permits(p, q) {
				return p, rg.challenge(r, reqs, "insufficient_scope", "authentication required: the token does not grant "+q.scope())
			}
		}
		return p, nil
	case strings.EqualFold(scheme, "Basic"):
		name, password, ok := r.BasicAuth()
		if ok {
			if p, ok := rg.checkPassword(name, password); ok {
				for _, q := range reqs {
					if !rg.permits(p, q) {
						return p, newError(oci.CodeDenied, "user %q has %s access, this needs %s", name, p.access, level(q.typ, q.action))
					}
				}
				return p, nil
			}
		}
		// Wrong credentials still read anonymously (a docker daemon sends
		// Docker Hub's to a mirror), but never pass the version check, so a
		// login with a wrong password fails.
		if anonymousOK {
			return principal{access: AccessRead}, nil
		}
		return principal{}, rg.challenge(r, reqs, "", "authentication required: wrong user name or password")
	}
	if anonymousOK {
		return principal{access: AccessRead}, nil
	}
	return principal{}, rg.challenge(r, reqs, "", "authentication required")
}

// tokenResponse is the token endpoint's answer, in both the Docker
// ("token") and OAuth2 ("access_token") spellings.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// serveToken is the token endpoint (Docker token authentication; the
// OAuth2 password grant by POST). A request for push (or delete) access
// needs a write user's credentials. A request for pull access is answered
// for the caller when its credentials are right, and anonymously otherwise
// (when allowed), because a docker daemon sends a mirror the credentials
// it holds for Docker Hub. A request with no scope is a login check:
// credentials, if sent, must be right, and the token grants nothing but
// the version check. Every token grants exactly the scopes asked for that
// the caller may have, as distribution's token servers do: a token for
// repository:a:pull reads a and writes nothing.
func (rg *Registry) serveToken(w http.ResponseWriter, r *http.Request) error {
	var name, password string
	var hasCreds bool
	var scopes []string
	switch r.Method {
	case http.MethodGet:
		name, password, hasCreds = r.BasicAuth()
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			return newError(oci.CodeUnsupported, "parsing the token request form: %v", err).WithStatus(http.StatusBadRequest)
		}
		if gt := r.PostForm.Get("grant_type"); gt != "password" {
			return newError(oci.CodeUnsupported, "grant_type %q is not supported: use password", gt).WithStatus(http.StatusBadRequest)
		}
		name, password = r.PostForm.Get("username"), r.PostForm.Get("password")
		hasCreds = name != "" || password != ""
		if !hasCreds {
			name, password, hasCreds = r.BasicAuth()
		}
		scopes = r.PostForm["scope"]
	default:
		return newError(oci.CodeUnsupported, "method %s is not allowed on /auth/token", r.Method).WithHeader("Allow", "GET, POST")
	}
	need, requested := scopeAccess(scopes)
	var p principal
	var ok bool
	if hasCreds {
		p, ok = rg.checkPassword(name, password)
	}
	switch {
	case ok && !p.access.allows(need):
		return newError(oci.CodeDenied, "user %q has %s access, %s access was requested", name, p.access, need)
	case ok:
	case need == AccessRead && rg.anonRead && !(hasCreds && !requested):
		p = principal{access: AccessRead}
	default:
		msg := "authentication required"
		if hasCreds {
			msg = "wrong user name or password"
		}
		return newError(oci.CodeUnauthorized, "%s", msg).WithHeader("WWW-Authenticate", oci.Challenge{Scheme: "Basic", Params: map[string]string{"realm": rg.service}}.String())
	}
	p.grants = grantable(parseScopes(scopes), p.access)
	tok, issued := rg.issueToken(p)
	body, _ := json.Marshal(tokenResponse{Token: tok, AccessToken: tok, ExpiresIn: int(rg.tokenTTL.Seconds()),
		IssuedAt: issued.UTC().Format(time.RFC3339)})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}
