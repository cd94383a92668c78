package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

// fastPolicy retries quickly, so tests of the retry logic take no time.
var fastPolicy = RetryPolicy{Attempts: 4, MinWait: time.Millisecond, MaxWait: 4 * time.Millisecond, MaxRetryAfter: 2 * time.Second}

func scripted(t *testing.T, statuses ...int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		st := statuses[min(i, len(statuses)-1)]
		if st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(st)
		io.WriteString(w, strconv.Itoa(st))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestRetryStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		statuses []int
		attempts int64
		final    int
	}{
		{"503 then ok", []int{503, 503, 200}, 3, 200},
		{"every retryable status", []int{408, 429, 500, 200}, 4, 200},
		{"502 504", []int{502, 504, 200}, 3, 200},
		{"gives up with the last answer", []int{500}, 4, 0},
		{"404 not retried", []int{404, 200}, 1, 404},
		{"401 not retried", []int{401, 200}, 1, 401},
		{"403 not retried", []int{403, 200}, 1, 403},
		{"501 not retried", []int{501, 200}, 1, 501},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, n := scripted(t, tc.statuses...)
			rt, err := NewTransport(srv.Client().Transport, fastPolicy, nil)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
			resp, err := rt.RoundTrip(req)
			if tc.final == 0 {
				var te *oci.Error
				if !errors.As(err, &te) || te.StatusCode != tc.statuses[0] || n.Load() != tc.attempts ||
					!strings.Contains(err.Error(), "gave up after 4 attempts") {
					t.Errorf("error %v after %d attempts; want status %d after %d", err, n.Load(), tc.statuses[0], tc.attempts)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.final || string(body) != strconv.Itoa(tc.final) || n.Load() != tc.attempts {
				t.Errorf("got %d %q after %d attempts; want %d after %d", resp.StatusCode, body, n.Load(), tc.final, tc.attempts)
			}
		})
	}
}

func TestRetryReplaysBody(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	rt, _ := NewTransport(srv.Client().Transport, fastPolicy, nil)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/r/manifests/t", bytes.NewReader([]byte(`{"manifest":1}`)))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || len(bodies) != 3 || bodies[0] != bodies[2] || bodies[2] != `{"manifest":1}` {
		t.Errorf("status %d, bodies %q", resp.StatusCode, bodies)
	}
}

// TestStreamingBodyPassesThrough sends a body the retry layer cannot
// replay: it must go out once, streamed. The writer waits for the server
// to have read the first half before it writes the second; a retry layer
// that read the whole body first would never let that happen.
func TestStreamingBodyPassesThrough(t *testing.T) {
	t.Parallel()
	firstHalf := make(chan struct{})
	var requests atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		buf := make([]byte, 4)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			t.Errorf("reading first half: %v", err)
			return
		}
		close(firstHalf)
		rest, _ := io.ReadAll(r.Body)
		if string(buf)+string(rest) != "abcdefgh" {
			t.Errorf("body %q", string(buf)+string(rest))
		}
		w.WriteHeader(http.StatusServiceUnavailable) // retryable, but not for this body
	}))
	defer srv.Close()
	rt, _ := NewTransport(srv.Client().Transport, fastPolicy, nil)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("abcd"))
		select {
		case <-firstHalf:
			pw.Write([]byte("efgh"))
			pw.Close()
		case <-time.After(10 * time.Second):
			pw.CloseWithError(errors.New("the server never saw the first half: the body was buffered"))
		}
	}()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/r/blobs/uploads/x", pr)
	req.ContentLength = 8
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || requests.Load() != 1 {
		t.Errorf("status %d after %d requests; want the 503 after one", resp.StatusCode, requests.Load())
	}
}

func TestRetryNetworkErrors(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	rt, _ := NewTransport(srv.Client().Transport, fastPolicy, nil)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || n.Load() != 3 {
		t.Errorf("status %d after %d requests", resp.StatusCode, n.Load())
	}
}

func TestTLSFailureNotRetried(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	rt, _ := NewTransport(&http.Transport{}, fastPolicy, nil) // system roots: the test CA is unknown
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
	_, err := rt.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "certificate") || conns.Load() != 1 {
		t.Errorf("error %v after %d connections; want one failed handshake", err, conns.Load())
	}
}

// TestDeadlineStopsRetries: a retry that would end after the deadline is
// not attempted; the registry's last answer comes back at once.
func TestDeadlineStopsRetries(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	p := fastPolicy
	p.MaxRetryAfter = time.Minute
	rt, _ := NewTransport(srv.Client().Transport, p, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/", nil)
	_, err := rt.RoundTrip(req)
	var te *oci.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusTooManyRequests || !strings.Contains(err.Error(), "deadline") ||
		n.Load() != 1 || ctx.Err() != nil {
		t.Errorf("error %v after %d requests (ctx %v); want the 429, at once, saying why", err, n.Load(), ctx.Err())
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{Attempts: 5, MinWait: 100 * time.Millisecond, MaxWait: time.Second, MaxRetryAfter: 3 * time.Second}
	resp := func(status int, ra string) *http.Response {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		return &http.Response{StatusCode: status, Header: h}
	}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		n        int
		resp     *http.Response
		min, max time.Duration
	}{
		{"first retry", 0, nil, 50 * time.Millisecond, 100 * time.Millisecond},
		{"third retry doubles twice", 2, nil, 200 * time.Millisecond, 400 * time.Millisecond},
		{"capped", 10, nil, 500 * time.Millisecond, time.Second},
		{"huge attempt number", 1000, nil, 500 * time.Millisecond, time.Second},
		{"retry-after seconds", 0, resp(429, "2"), 2 * time.Second, 2 * time.Second},
		{"retry-after capped", 0, resp(503, "3600"), 3 * time.Second, 3 * time.Second},
		{"retry-after date", 0, resp(429, now.Add(90*time.Minute).UTC().Format(http.TimeFormat)), 3 * time.Second, 3 * time.Second},
		{"retry-after ignored on 500", 0, resp(500, "60"), 50 * time.Millisecond, 100 * time.Millisecond},
		{"garbage retry-after", 0, resp(429, "soon"), 50 * time.Millisecond, 100 * time.Millisecond},
	} {
		for range 20 {
			if w := p.wait(tc.n, tc.resp); w < tc.min || w > tc.max {
				t.Errorf("%s: wait %s, want in [%s, %s]", tc.name, w, tc.min, tc.max)
				break
			}
		}
	}
}

func TestPlainHTTPRefused(t *testing.T) {
	t.Parallel()
	var hit atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Store(true) }))
	defer srv.Close()
	// Every host resolves to the test server: only the guard decides.
	base := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", srv.Listener.Addr().String())
	}}
	conv := defaultConventions()
	conv.insecureHosts["insecure.example:5000"] = true
	rt, _ := NewTransport(plainHTTPGuard{next: base, conv: &conv}, fastPolicy, nil)
	for _, tc := range []struct {
		url, auth string
		want      error
	}{
		{"http://registry.example:5000/v2/", "", ErrPlainHTTP},
		{"ftp://localhost/v2/", "", ErrPlainHTTP},
		{"http://insecure.example:5000/v2/", "Basic dTpw", ErrCredentialsInClear},
		{"http://insecure.example:5000/v2/", "Bearer t", ErrCredentialsInClear},
		{"http://insecure.example:5000/v2/", "", nil},
		{"http://127.0.0.2:5000/v2/", "Basic dTpw", nil},
		{"http://localhost/v2/", "Basic dTpw", nil},
	} {
		hit.Store(false)
		req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, tc.want) || (tc.want != nil) == hit.Load() {
			t.Errorf("%s (auth %q): error %v, server reached: %v; want %v", tc.url, tc.auth, err, hit.Load(), tc.want)
		}
	}
}

func TestNewTransportValidates(t *testing.T) {
	t.Parallel()
	for _, p := range []RetryPolicy{{}, {Attempts: 1}, {Attempts: 1, MinWait: 2, MaxWait: 1}, {Attempts: 1, MinWait: 1, MaxWait: 1, MaxRetryAfter: -1}} {
		if _, err := NewTransport(http.DefaultTransport, p, nil); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}

// TestRetryTruncatedAnswer: a small answer cut short is retried like a
// failed request.
func TestRetryTruncatedAnswer(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "01234")
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		io.WriteString(w, "0123456789")
	}))
	defer srv.Close()
	rt, _ := NewTransport(srv.Client().Transport, fastPolicy, nil)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/r/manifests/t", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "0123456789" || n.Load() != 2 {
		t.Errorf("body %q, %v, after %d requests", b, err, n.Load())
	}
}
