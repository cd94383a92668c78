package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/server"
)

// running is a server started for a test.
type running struct {
	srv      *server.Server
	host     string // 127.0.0.1:port
	monitor  string // 127.0.0.1:port of the monitoring listener
	client   *http.Client
	user     string
	password string
	logs     *testenv.SyncBuffer
	stop     context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

// s3Storage is the storage section of a configuration for a bucket of srv.
func s3Storage(srv *testenv.S3Server, bucket string) string {
	return fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    endpoint: %s
    region: %s
    path_style: true
    access_key_id: %s
    secret_access_key_env: TEST_S3_SECRET
    ca_file: %s
`, bucket, srv.Endpoint, srv.Region, srv.AccessKey, srv.CAFile)
}

// start runs a server with the given extra configuration (storage, prune,
// ...), a write user with a random password, a shared token key and a
// state directory. The password and S3 secret come from the environment,
// as an operator would pass them.
func start(t *testing.T, stateDir, extra string, secrets map[string]string) *running {
	t.Helper()
	vars := map[string]string{"TEST_PASSWORD": registrytest.RandomPassword(t), "TEST_TOKEN_KEY": strings.Repeat("t", 40)}
	for k, v := range secrets {
		vars[k] = v
	}
	password := vars["TEST_PASSWORD"]
	if !strings.Contains(extra, "shutdown_timeout:") {
		extra += "shutdown_timeout: 5s\n"
	}
	yaml := fmt.Sprintf(`listen: ["127.0.0.1:0"]
state_dir: %s
token_key_env: TEST_TOKEN_KEY
monitoring:
  listen: 127.0.0.1:0
users:
  - name: zuul
    password_env: TEST_PASSWORD
    access: write
%s`, stateDir, extra)
	cfg, err := server.ParseConfig([]byte(yaml), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return startConfig(t, cfg, "zuul", password, &testenv.SyncBuffer{})
}

// startConfig runs a server with cfg, whose write user is user with
// password, logging into logs.
func startConfig(t *testing.T, cfg *server.Config, user, password string, logs *testenv.SyncBuffer) *running {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(t.Context(), cfg, server.WithLogger(log))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, user: user, password: password, logs: logs, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	addrs := srv.Addrs(t.Context())
	if len(addrs) == 0 {
		t.Fatal("the server did not bind")
	}
	r.host = addrs[0].String()
	if m := srv.MonitoringAddr(t.Context()); m != nil {
		r.monitor = m.String()
	}
	ca, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := pki.CertPool(ca)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	r.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		r.shutdown(t)
		if t.Failed() {
			t.Logf("--- server log (%s) ---\n%s", r.host, logs.String())
		}
		if strings.Contains(logs.String(), password) {
			t.Errorf("the server logged the password")
		}
		if strings.Contains(logs.String(), "X-Amz-Signature") {
			t.Errorf("the server logged a presigned URL")
		}
	})
	return r
}

func (r *running) shutdown(t *testing.T) {
	r.stop()
	r.stopOnce.Do(func() {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Error("the server did not stop")
		}
	})
}

func (r *running) url(path string) string { return "https://" + r.host + path }

// do sends a request with basic credentials.
func (r *running) do(t *testing.T, method, path string, body io.Reader, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, r.url(path), body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.SetBasicAuth(r.user, r.password)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (r *running) remoteOpts() []remote.Option {
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.user, Password: r.password}),
		remote.WithTransport(r.client.Transport)}
}

// TestReplicasShareABucket runs two servers on one bucket: an image pushed
// through A pulls through B, an upload started through A is finished
// through B, and tags and catalog agree.
func TestReplicasShareABucket(t *testing.T) {
	s3 := startS3(t)
	testReplicas(t, s3Storage(s3, s3.NewBucket(t)), map[string]string{"TEST_S3_SECRET": s3.SecretKey}, fmt.Sprint(5<<20))
}

// testReplicas runs two servers on one store (storage, with its secrets):
// an image pushed through A pulls through B, an upload started through A
// is finished through B, and tags and catalog agree. chunkMin is the
// OCI-Chunk-Min-Length the store asks for ("" for none).
func testReplicas(t *testing.T, storage string, secrets map[string]string, chunkMin string) {
	secrets["TEST_PASSWORD"] = registrytest.RandomPassword(t)
	state := t.TempDir() // shared: both replicas serve the same CA's certificates
	a := start(t, state, storage, secrets)
	b := start(t, state, storage, secrets)
	checkSharedTokens(t, a, b)

	img, err := random.Image(3<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	refA, _ := name.ParseReference(a.host + "/team/app:v1")
	if err := remote.Write(refA, img, a.remoteOpts()...); err != nil {
		t.Fatalf("push through A: %v", err)
	}
	refB, _ := name.ParseReference(b.host + "/team/app:v1")
	got, err := remote.Image(refB, b.remoteOpts()...)
	if err != nil {
		t.Fatalf("pull through B: %v", err)
	}
	want, _ := img.Digest()
	if d, _ := got.Digest(); d != want {
		t.Fatalf("B serves %s, want %s", d, want)
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer through B: %v", err)
		}
		rc.Close()
	}

	// A chunked upload: started on A, one chunk on A, one on B, closed on B.
	chunk1, chunk2 := bytes.Repeat([]byte("a"), 6<<20), []byte("the end")
	dg := digest.FromBytes(append(append([]byte{}, chunk1...), chunk2...))
	resp, body := a.do(t, "POST", "/v2/team/chunks/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST on A: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("OCI-Chunk-Min-Length") != chunkMin {
		t.Errorf("OCI-Chunk-Min-Length = %q, want %q", resp.Header.Get("OCI-Chunk-Min-Length"), chunkMin)
	}
	loc := resp.Header.Get("Location")
	resp, body = a.do(t, "PATCH", loc, bytes.NewReader(chunk1), "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("0-%d", len(chunk1)-1))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH on A: %d %s", resp.StatusCode, body)
	}
	resp, body = b.do(t, "GET", loc, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(chunk1)-1) {
		t.Fatalf("B's view of the upload: %d Range %q %s", resp.StatusCode, resp.Header.Get("Range"), body)
	}
	resp, body = b.do(t, "PUT", loc+"?digest="+dg.String(), bytes.NewReader(chunk2), "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", len(chunk1), len(chunk1)+len(chunk2)-1))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT on B: %d %s", resp.StatusCode, body)
	}
	resp, _ = a.do(t, "HEAD", "/v2/team/chunks/blobs/"+dg.String(), nil)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(chunk1)+len(chunk2)) {
		t.Fatalf("HEAD on A after the commit on B: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}

	// Tags deleted through B disappear from A's listing.
	if err := remote.Tag(mustTag(t, a.host+"/team/app:v2"), got, a.remoteOpts()...); err != nil {
		t.Fatal(err)
	}
	if resp, body := b.do(t, "DELETE", "/v2/team/app/manifests/v1", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE tag on B: %d %s", resp.StatusCode, body)
	}
	_, body = a.do(t, "GET", "/v2/team/app/tags/list", nil)
	var tags struct{ Tags []string }
	json.Unmarshal(body, &tags)
	if fmt.Sprint(tags.Tags) != "[v2]" {
		t.Fatalf("A lists tags %v after B deleted v1, want [v2]", tags.Tags)
	}
	_, body = a.do(t, "GET", "/v2/_catalog", nil)
	var cat struct{ Repositories []string }
	json.Unmarshal(body, &cat)
	if fmt.Sprint(cat.Repositories) != "[team/app]" {
		t.Fatalf("catalog %v, want [team/app]", cat.Repositories)
	}

	// Health and metrics, on the registry address and the monitoring one.
	for _, u := range []string{a.url("/healthz"), "http://" + a.monitor + "/healthz"} {
		resp, err := a.client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok\n" {
			t.Fatalf("%s: %d %q", u, resp.StatusCode, b)
		}
	}
	resp, err = a.client.Get("http://" + a.monitor + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`imagegate_registry_requests_total{route="manifest",method="PUT",status="201"} 2`, // v1 and v2
		`imagegate_registry_request_bytes_total{route="upload"}`,
		`imagegate_registry_upload_duration_seconds_count{method="PATCH"}`,
		`imagegate_registry_storage_operations_total{operation="commit_upload"}`,
	} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// startS3 starts the S3 server of the run: versitygw, or SeaweedFS when
// IMAGEGATE_SEAWEEDFS=1 (make test-seaweedfs).
func startS3(t *testing.T) *testenv.S3Server {
	if os.Getenv("IMAGEGATE_SEAWEEDFS") == "1" {
		return testenv.StartSeaweedFS(t)
	}
	return testenv.StartVersitygw(t)
}

// checkSharedTokens checks that replica B accepts replica A's tokens (the
// shared token_key).
func checkSharedTokens(t *testing.T, a, b *running) {
	t.Helper()
	req, _ := http.NewRequest("GET", a.url("/auth/token?scope=repository:team/app:pull,push"), nil)
	req.SetBasicAuth(a.user, a.password)
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ = http.NewRequest("GET", b.url("/v2/"), nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err = b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("replica B refuses replica A's token: %d", resp.StatusCode)
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// TestRefusesBadStorage checks that the server refuses to start, naming
// the setting, on a missing bucket, wrong credentials and denied access.
func TestRefusesBadStorage(t *testing.T) {
	s3 := testenv.StartVersitygw(t)
	bucket := s3.NewBucket(t)
	userKey, userSecret := s3.CreateUser(t)
	for _, tc := range []struct {
		name    string
		storage string
		secret  string
		want    []string
	}{
		{"nonexistent bucket", s3Storage(s3, "no-such-bucket"), s3.SecretKey, []string{"storage.s3", `bucket "no-such-bucket"`, "does not exist"}},
		{"wrong secret", s3Storage(s3, bucket), "x" + s3.SecretKey[1:], []string{"storage.s3", "secret_access_key"}},
		{"unknown key", strings.Replace(s3Storage(s3, bucket), s3.AccessKey, "nobody", 1), s3.SecretKey, []string{"storage.s3", "access_key_id"}},
		{"access denied", strings.Replace(s3Storage(s3, bucket), s3.AccessKey, userKey, 1), userSecret, []string{"storage.s3", "denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := server.ParseConfig([]byte(minimalWith(t.TempDir(), tc.storage)), func(k string) (string, bool) {
				if k == "TEST_S3_SECRET" {
					return tc.secret, true
				}
				return "", false
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = server.New(t.Context(), cfg)
			if err == nil {
				t.Fatal("the server started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func minimalWith(state, extra string) string {
	return "state_dir: " + state + "\nusers:\n  - name: zuul\n    password: x\n    access: write\n" + extra
}

// ioCopyDiscard reads rc to its end and closes it.
func ioCopyDiscard(rc io.ReadCloser) (int64, error) {
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}
