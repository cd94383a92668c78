package publish

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Credentials are docker_credentials: the account that writes to the
// target registry (and, on Docker Hub, deletes tags through its web API),
// and the optional repository restriction. The ansible tags make it the
// parameter type of docker_image_upload and docker_image_promote.
type Credentials struct {
	Username string `ansible:"username,required"`
	Password string `ansible:"password,required,no_log"`
	// Repository is a regular expression every image's repository must
	// match (see RepositoryPattern); empty allows any.
	Repository string `ansible:"repository"`
}

// restriction compiles the repository restriction, nil when there is none;
// warning is set when the expression is not anchored.
func (c Credentials) restriction() (p *RepositoryPattern, warning string, err error) {
	if c.Repository == "" {
		return nil, "", nil
	}
	return CompileRepositoryPattern(c.Repository)
}

func (c Credentials) check() error {
	if c.Username == "" || c.Password == "" {
		return fmt.Errorf("docker_credentials.username and docker_credentials.password are required: give the account that may push to the target registry")
	}
	return nil
}

// DefaultJobs is how many images are worked on at once.
const DefaultJobs = 8

// Option configures Upload and Promote.
type Option func(*options)

type options struct {
	check     bool
	log       *slog.Logger
	transport http.RoundTripper
	now       func() time.Time
}

func newOptions(opts []Option) options {
	o := options{log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithCheckMode makes the call decide and report without writing
// anything: every read happens (so missing images and wrong credentials
// are found), no PUT or DELETE does.
func WithCheckMode(check bool) Option { return func(o *options) { o.check = check } }

// WithLogger sets the logger (default: discard). Credentials are never
// logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithTransport sets the HTTP transport for the target registry and
// Docker Hub's web API: TLS trust and retries. The default trusts the
// system roots plus Target.CA, with package transfer's retry policy.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithClock sets the clock the stale sweep measures ages against (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// baseTransport is TLS to the system roots plus ca.
func baseTransport(ca []byte) (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(ca) > 0 && !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("docker_registry_cert: no PEM certificate found")
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   DefaultJobs + 4,
	}, nil
}
