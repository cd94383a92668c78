package server_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// expectRetryable checks a spec error envelope a client may retry: 503
// UNAVAILABLE with Retry-After.
func expectRetryable(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body %s", resp.StatusCode, body)
	}
	var env struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) != 1 || env.Errors[0].Code != "UNAVAILABLE" {
		t.Fatalf("body %s is not the spec's error envelope with code UNAVAILABLE (%v)", body, err)
	}
	if resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("headers %v lack Retry-After or a JSON content type", resp.Header)
	}
}

// stoppingReader yields content, calling stop once after the first after
// bytes, as a store's outage in the middle of a push.
type stoppingReader struct {
	r     io.Reader
	n     int
	after int
	stop  func()
	done  bool
}

func (s *stoppingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += n
	if !s.done && s.n >= s.after {
		s.done = true
		s.stop()
	}
	return n, err
}

// TestS3OutageDuringPush stops the S3 server in the middle of a chunked
// and of a monolithic blob push (testOutageDuringPush).
func TestS3OutageDuringPush(t *testing.T) {
	s3 := testenv.StartVersitygw(t)
	r := start(t, t.TempDir(), s3Storage(s3, s3.NewBucket(t)), map[string]string{"TEST_S3_SECRET": s3.SecretKey})
	// Restart replaces s3.Process: stop the current one.
	testOutageDuringPush(t, r, func() { s3.Process.Stop() }, s3.Restart)
}

// TestSwiftOutageDuringPush stops the Swift proxy in the middle of a
// chunked and of a monolithic blob push (testOutageDuringPush); with
// segments of 4 MiB both are written as segments of a large object.
func TestSwiftOutageDuringPush(t *testing.T) {
	sw := testenv.StartSwift(t, testenv.SwiftOptions{})
	r := start(t, t.TempDir(), swiftStorage(sw, sw.NewContainerName(t)), map[string]string{"TEST_SWIFT_KEY": sw.Key})
	testOutageDuringPush(t, r, sw.StopProxy, sw.RestartProxy)
}

// testOutageDuringPush stops the store (stop) in the middle of a chunked
// and of a monolithic blob push to r: the client gets a spec error it can
// retry, no blob becomes visible, the upload session is unchanged, and the
// pushes succeed once the store is back (restart); the failures are
// counted as storage errors.
func testOutageDuringPush(t *testing.T, r *running, stop, restart func()) {
	content := randomBytes(t, 24<<20)
	dg := digest.FromBytes(content)
	blobPath := "/v2/team/app/blobs/" + dg.String()

	t.Run("chunked", func(t *testing.T) {
		resp, body := r.do(t, "POST", "/v2/team/app/blobs/uploads/", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST: %d %s", resp.StatusCode, body)
		}
		loc := resp.Header.Get("Location")
		body2 := &stoppingReader{r: bytes.NewReader(content), after: 10 << 20, stop: stop}
		req, _ := http.NewRequest("PATCH", r.url(loc), body2)
		req.ContentLength = int64(len(content))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.SetBasicAuth(r.user, r.password)
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatalf("PATCH: %v (the server must answer, not drop the connection)", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		expectRetryable(t, resp, b)

		restart()
		if resp, _ := r.do(t, "HEAD", blobPath, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD of the blob after the failed push: %d, want 404", resp.StatusCode)
		}
		resp, _ = r.do(t, "GET", loc, nil)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-0" {
			t.Fatalf("upload after the failed chunk: %d Range %q, want 204 0-0", resp.StatusCode, resp.Header.Get("Range"))
		}
		// The client retries the chunk.
		resp, body = r.do(t, "PATCH", loc, bytes.NewReader(content), "Content-Type", "application/octet-stream")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("retried PATCH: %d %s", resp.StatusCode, body)
		}
		resp, body = r.do(t, "PUT", loc+"?digest="+dg.String(), nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT: %d %s", resp.StatusCode, body)
		}
		resp, got := r.do(t, "GET", blobPath, nil)
		if resp.StatusCode != 200 || !bytes.Equal(got, content) {
			t.Fatalf("GET after the retry: %d, %d bytes", resp.StatusCode, len(got))
		}
		if resp, body := r.do(t, "DELETE", blobPath, nil); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
		}
		if err := r.srv.Driver().DeleteBlob(t.Context(), dg); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("monolithic", func(t *testing.T) {
		body := &stoppingReader{r: bytes.NewReader(content), after: 10 << 20, stop: stop}
		req, _ := http.NewRequest("POST", r.url("/v2/team/mono/blobs/uploads/?digest="+dg.String()), body)
		req.ContentLength = int64(len(content))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.SetBasicAuth(r.user, r.password)
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatalf("POST: %v (the server must answer, not drop the connection)", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		expectRetryable(t, resp, b)
		restart()
		if _, err := r.srv.Driver().StatBlob(t.Context(), dg); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a half-written blob is visible: %v", err)
		}
		resp, b = r.do(t, "POST", "/v2/team/mono/blobs/uploads/?digest="+dg.String(), bytes.NewReader(content))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("retried POST: %d %s", resp.StatusCode, b)
		}
	})

	// The failures were counted as storage errors.
	resp, err := http.Get("http://" + r.monitor + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`storage_errors_total{operation="append_upload",kind="unavailable"}`, `storage_errors_total{operation="put_blob",kind="unavailable"}`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// slowBody is a request body the test feeds by hand.
type slowBody struct {
	pr *io.PipeReader
	pw *io.PipeWriter
}

func newSlowBody() *slowBody {
	pr, pw := io.Pipe()
	return &slowBody{pr, pw}
}

// TestGracefulShutdown checks both ends of a shutdown: an in-flight chunk
// that finishes within shutdown_timeout is stored and answered, and new
// connections are refused meanwhile; one that does not is abandoned,
// leaving the session as it was.
func TestGracefulShutdown(t *testing.T) {
	for _, tc := range []struct {
		name     string
		timeout  string
		finishes bool
	}{
		{"in-flight request finishes", "20s", true},
		{"in-flight request abandoned", "1s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, t.TempDir(), "shutdown_timeout: "+tc.timeout+"\n", nil)
			resp, body := r.do(t, "POST", "/v2/team/app/blobs/uploads/", nil)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("POST: %d %s", resp.StatusCode, body)
			}
			loc := resp.Header.Get("Location")
			id := resp.Header.Get("Docker-Upload-UUID")
			content := randomBytes(t, 2<<20)
			sb := newSlowBody()
			req, _ := http.NewRequest("PATCH", r.url(loc), sb.pr)
			req.ContentLength = int64(len(content))
			req.Header.Set("Content-Type", "application/octet-stream")
			req.SetBasicAuth(r.user, r.password)
			type result struct {
				status int
				err    error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := r.client.Do(req)
				if err != nil {
					res <- result{0, err}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				res <- result{resp.StatusCode, nil}
			}()
			if _, err := sb.pw.Write(content[:1<<20]); err != nil {
				got := <-res
				t.Fatalf("writing the first half: %v; request: %d, %v", err, got.status, got.err)
			}
			// Stop only once the server is handling the chunk (an idle
			// connection would just be closed).
			testenv.WaitFor(t, "the chunk in flight", 10*time.Second, nil, func() error {
				resp, err := http.Get("http://" + r.monitor + "/metrics")
				if err != nil {
					return err
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(b), "\nimagegate_registry_inflight_requests 1\n") {
					return errors.New("no request in flight")
				}
				return nil
			})
			r.stop()
			// New connections are refused once the listener is closed.
			testenv.WaitFor(t, "listener closed", 10*time.Second, nil, func() error {
				c, err := net.DialTimeout("tcp", r.host, time.Second)
				if err == nil {
					c.Close()
					return fmt.Errorf("%s still accepts connections", r.host)
				}
				return nil
			})
			if tc.finishes {
				if _, err := sb.pw.Write(content[1<<20:]); err != nil {
					t.Fatal(err)
				}
				sb.pw.Close()
				got := <-res
				if got.err != nil || got.status != http.StatusAccepted {
					t.Fatalf("in-flight PATCH during shutdown: %d, %v; want 202", got.status, got.err)
				}
			} else {
				got := <-res // the server gives up after the timeout
				if got.err == nil && got.status == http.StatusAccepted {
					t.Fatal("an unfinished chunk was accepted")
				}
				sb.pw.CloseWithError(errors.New("test over"))
			}
			select {
			case err := <-r.done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				r.stopOnce.Do(func() {})
			case <-time.After(time.Minute):
				t.Fatal("the server did not stop")
			}
			up, err := r.srv.Driver().GetUpload(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			if tc.finishes {
				want = int64(len(content))
			}
			if up.Size != want {
				t.Fatalf("session holds %d bytes after the shutdown, want %d", up.Size, want)
			}
		})
	}
}

// TestShutdownDelay checks that during shutdown_delay /healthz answers 503
// on both listeners while registry requests are still served on new
// connections, and that the listeners close once the delay is over.
func TestShutdownDelay(t *testing.T) {
	r := start(t, t.TempDir(), "shutdown_delay: 5s\n", nil)
	health := func(url string, client *http.Client) int {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := health("http://"+r.monitor+"/healthz", http.DefaultClient); got != http.StatusOK {
		t.Fatalf("/healthz before shutdown: %d, want 200", got)
	}
	stopped := time.Now()
	r.stop()
	testenv.WaitFor(t, "/healthz answering 503", 4*time.Second, nil, func() error {
		if got := health("http://"+r.monitor+"/healthz", http.DefaultClient); got != http.StatusServiceUnavailable {
			return fmt.Errorf("/healthz: %d", got)
		}
		return nil
	})
	if got := health(r.url("/healthz"), r.client); got != http.StatusServiceUnavailable {
		t.Errorf("/healthz on the registry address while draining: %d, want 503", got)
	}
	// A new connection during the delay is still served.
	r.client.CloseIdleConnections()
	resp, body := r.do(t, "GET", "/v2/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ while draining: %d %s, want 200", resp.StatusCode, body)
	}
	testenv.WaitFor(t, "listener closed", 10*time.Second, nil, func() error {
		c, err := net.DialTimeout("tcp", r.host, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s still accepts connections", r.host)
		}
		return nil
	})
	if since := time.Since(stopped); since < 5*time.Second {
		t.Errorf("listeners closed %s after shutdown began, before shutdown_delay (5s)", since)
	}
}
