package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// checkJobs checks the jobs parameter.
func checkJobs(n int) error {
	if n < 1 {
		return fmt.Errorf("jobs must be positive, got %d", n)
	}
	return nil
}

// Option configures Upload and Promote.
type Option func(*options)

type options struct {
	check   bool
	diff    bool
	log     *slog.Logger
	timeout time.Duration
	// timed is set by WithTimeout, whose duration must be positive.
	timed  bool
	redact func(string)
	now    func() time.Time
	wrap   func(http.RoundTripper) http.RoundTripper
	// signing and verify: WithSigning and WithVerification (signing.go).
	signing Signing
	verify  Verification
}

func newOptions(opts []Option) (options, error) {
	o := options{log: slog.New(slog.DiscardHandler), now: time.Now, redact: func(string) {}}
	for _, f := range opts {
		f(&o)
	}
	if o.timed && o.timeout <= 0 {
		return o, fmt.Errorf("timeout must be positive, got %s", o.timeout)
	}
	if o.log == nil || o.now == nil || o.redact == nil {
		return o, errors.New("publish: nil logger, clock or redact function")
	}
	return o, nil
}

// WithCheckMode makes the call decide and report without writing
// anything: every read happens (so missing images and wrong credentials
// are found), no PUT or DELETE does. The default is false.
func WithCheckMode(check bool) Option { return func(o *options) { o.check = check } }

// WithDiff makes the result carry a diff of every tag touched
// ("<reference> -> <digest>" before and after). The default is false.
func WithDiff(diff bool) Option { return func(o *options) { o.diff = diff } }

// WithLogger sets the logger (default: discard). Credentials are never
// logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithTimeout bounds the whole call, retries included; it must be
// positive. The default leaves it to the context.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout, o.timed = d, true } }

// withDeadline applies WithTimeout to ctx.
func (o options) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if !o.timed {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, o.timeout)
}

// WithRedact sets the function that hides a secret the call reads from a
// file (the buildset registry's password from the result data file) from
// every output: a module passes its AddSecret. The default does nothing.
func WithRedact(redact func(secret string)) Option { return func(o *options) { o.redact = redact } }

// WithClock sets the clock the stale sweep measures ages against (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTransportWrapper wraps the transport of every registry and of Docker
// Hub's web API (see transfer.WithTransportWrapper). The default is none.
func WithTransportWrapper(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(o *options) { o.wrap = wrap }
}
