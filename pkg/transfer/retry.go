package transfer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/imagegate/imagegate/pkg/oci"
)

// RetryPolicy says how often and how patiently a request is retried.
type RetryPolicy struct {
	// Attempts is the number of tries of one request, the first included
	// (default 5). 1 disables retries.
	Attempts int
	// MinWait is the backoff before the first retry (default 250ms); it
	// doubles on every retry, with jitter, up to MaxWait (default 8s).
	MinWait, MaxWait time.Duration
	// MaxRetryAfter caps the wait a registry asks for with Retry-After on a
	// 429 or 503 (default 30s): a registry must not be able to stall a job.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy is the policy used when none is given.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 5, MinWait: 250 * time.Millisecond, MaxWait: 8 * time.Second, MaxRetryAfter: 30 * time.Second}
}

func (p RetryPolicy) validate() error {
	switch {
	case p.Attempts < 1:
		return fmt.Errorf("retry attempts must be at least 1, got %d", p.Attempts)
	case p.MinWait <= 0 || p.MaxWait < p.MinWait:
		return fmt.Errorf("retry waits must satisfy 0 < min (%s) <= max (%s)", p.MinWait, p.MaxWait)
	case p.MaxRetryAfter < 0:
		return fmt.Errorf("maximum Retry-After must not be negative, got %s", p.MaxRetryAfter)
	}
	return nil
}

// retryableStatus are the statuses worth another try: the request timed
// out, the registry is throttling, or it (or a proxy in front of it)
// failed in a way that may pass. 401, 403 and 404 never are.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryableError reports whether a transport error (no HTTP response) is
// worth another try: connection refused or reset, timeouts, a body cut
// short. TLS verification failures, plain-HTTP refusals and malformed
// requests are not.
func retryableError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrPlainHTTP) || errors.Is(err, ErrDigestMismatch) {
		return false
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidErr) ||
		errors.As(err, &verifyErr) || errors.As(err, &recordErr) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	// http.Transport reports some connection failures only as text.
	msg := err.Error()
	for _, s := range []string{"connection reset", "broken pipe", "server closed idle connection",
		"EOF", "transport connection broken", "ContentLength=", "unexpected EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// wait is the backoff before retry number n (0 for the first retry): the
// registry's Retry-After on a 429 or 503, capped, or an exponential
// backoff with jitter (uniform in the upper half of the step, so retries
// of parallel requests spread out but never collapse to zero).
func (p RetryPolicy) wait(n int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return min(d, p.MaxRetryAfter)
		}
	}
	step := p.MinWait
	for i := 0; i < n && step < p.MaxWait; i++ {
		step *= 2
	}
	step = min(step, p.MaxWait)
	half := step / 2
	return half + rand.N(half+1)
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP
// date (RFC 9110, section 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// NewTransport returns a RoundTripper that sends requests through base and
// retries them under policy p, with go-retryablehttp. It is the one retry
// policy of imagegate's registry clients: every registry's transport (and
// so Docker Hub's web API, through Client.Transport) is built on it.
//
//   - Network errors and 408/429/500/502/503/504 are retried with
//     exponential backoff and jitter; Retry-After is honoured up to
//     p.MaxRetryAfter. Other statuses, 401/403/404 included, are returned
//     at once. When the attempts are used up, or the next one would start
//     after the request context's deadline, the last answer becomes an
//     *oci.Error (status and the registry's error codes) saying so.
//   - A request whose body cannot be replayed (Body set, GetBody nil: a
//     streamed layer) is sent once through base: go-retryablehttp would read
//     the whole body into memory to replay it.
//   - Small answers (up to 1 MiB) are read inside the retry loop: one cut
//     short is retried too. Larger ones stream to the caller.
//   - Redirects are returned, not followed: the http.Client above follows
//     them, with its own checks.
//
// log receives one line per retry (method, host, path, reason, wait),
// never headers or query strings; nil discards.
func NewTransport(base http.RoundTripper, p RetryPolicy, log *slog.Logger) (http.RoundTripper, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if base == nil {
		return nil, errors.New("transfer.NewTransport: base transport is nil")
	}
	if log == nil {
		log = discard
	}
	hc := &http.Client{
		Transport:     base,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &retryTransport{base: base, client: hc, policy: p, log: log}, nil
}

var discard = slog.New(slog.DiscardHandler)

type retryTransport struct {
	base   http.RoundTripper
	client *http.Client
	policy RetryPolicy
	log    *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	r := req.Clone(ctx)
	if req.Body != nil {
		// Do rewinds the body through GetBody before every attempt; close
		// the caller's copy, as a RoundTripper must.
		req.Body.Close()
		r.Body = nil
	}
	rreq, err := retryablehttp.FromRequest(r)
	if err != nil {
		return nil, err
	}
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		if err := rreq.SetBody(retryablehttp.ReaderFunc(func() (io.Reader, error) { return req.GetBody() })); err != nil {
			return nil, err
		}
		rreq.ContentLength = req.ContentLength
	}

	// Small answers (manifests, tokens, tag pages, errors) are read inside
	// the retry loop, so one cut short is retried like a failed request.
	// Larger ones, blobs, stream to the caller.
	rreq.SetResponseHandler(bufferSmall)

	var (
		attempt int
		next    time.Duration
		last    string
		stopped string
	)
	c := &retryablehttp.Client{
		HTTPClient:   t.client,
		RetryMax:     t.policy.Attempts - 1,
		RetryWaitMin: t.policy.MinWait,
		RetryWaitMax: t.policy.MaxWait,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			switch {
			case err != nil:
				last = err.Error()
				if !retryableError(err) {
					return false, err
				}
			case retryableStatus(resp.StatusCode):
				last = resp.Status
			default:
				return false, nil
			}
			if attempt+1 >= t.policy.Attempts {
				stopped = fmt.Sprintf("gave up after %d attempts", t.policy.Attempts)
				return true, nil // Do stops on RetryMax and passes the last answer through
			}
			next = t.policy.wait(attempt, resp)
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < next {
				stopped = fmt.Sprintf("giving up: the next try, in %s, would be after the operation's deadline", next.Round(time.Millisecond))
				return false, nil
			}
			attempt++
			t.log.Info("retrying registry request", "method", req.Method, "host", req.URL.Host,
				"path", req.URL.Path, "reason", last, "attempt", attempt+1, "wait", next)
			return true, nil
		},
		Backoff: func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return next },
	}
	resp, err := c.Do(rreq)
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err
	}
	if err != nil && resp != nil {
		resp.Body.Close()
		resp = nil
	}
	if err != nil && ctx.Err() != nil && last != "" {
		err = fmt.Errorf("%w; last attempt: %s", err, last)
	}
	if stopped != "" {
		if err == nil && resp != nil {
			// Keep the registry's error, typed, and say why it is final.
			err = oci.ResponseError(req.Method+" "+req.URL.Host+req.URL.Path, resp)
			resp.Body.Close()
			resp = nil
		}
		if err != nil {
			err = fmt.Errorf("%w (%s)", err, stopped)
		}
	}
	return resp, err
}

// smallBody is the largest response body read inside the retry loop.
const smallBody = 1 << 20

// bufferSmall reads a response body of at most smallBody bytes (or the
// first smallBody bytes of one of unknown length) into memory; a read
// error makes the attempt fail, and so be retried.
func bufferSmall(resp *http.Response) error {
	if resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength > smallBody || resp.Request.Method == http.MethodHead {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, smallBody+1))
	if err != nil {
		resp.Body.Close()
		return fmt.Errorf("reading the response body: %w", err)
	}
	if len(buf) <= smallBody {
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
		return nil
	}
	// Longer than announced (unknown length): the rest streams.
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
	return nil
}
