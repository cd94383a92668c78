package registry_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/bench"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
)

// blockReader yields n bytes by repeating a random block, without holding
// them, and counts what it gave out.
type blockReader struct {
	block []byte
	n     int64
	off   atomic.Int64
	// pause, when set, blocks reads after that many bytes until closed.
	pauseAt int64
	paused  chan struct{}
	resume  chan struct{}
}

func newBlockReader(t testing.TB, n int64) *blockReader {
	b := make([]byte, 1<<20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return &blockReader{block: b, n: n}
}

func (r *blockReader) Read(p []byte) (int, error) {
	off := r.off.Load()
	if off >= r.n {
		return 0, io.EOF
	}
	if r.resume != nil && off >= r.pauseAt {
		close(r.paused)
		<-r.resume
		return 0, io.ErrUnexpectedEOF
	}
	m := min(int64(len(p)), r.n-off)
	if r.resume != nil {
		m = min(m, r.pauseAt-off)
	}
	i := off % int64(len(r.block))
	m = int64(copy(p[:m], r.block[i:]))
	r.off.Add(m)
	return int(m), nil
}

func (r *blockReader) digest(t testing.TB) digest.Digest {
	h := digest.SHA256.Digester()
	if _, err := io.Copy(h.Hash(), &blockReader{block: r.block, n: r.n}); err != nil {
		t.Fatal(err)
	}
	return h.Digest()
}

func processClient(t testing.TB, p *registrytest.Process) *http.Client {
	pool, err := pki.CertPool(p.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	return &http.Client{Transport: tr}
}

func request(t testing.TB, c *http.Client, p *registrytest.Process, method, path string, body io.Reader, length int64) *http.Response {
	t.Helper()
	if !strings.HasPrefix(path, "https://") {
		path = "https://" + p.Host + path
	}
	req, err := http.NewRequest(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.SetBasicAuth(p.Username, p.Password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// TestLargeUploadMemory pushes a 1 GiB layer to a registry process in one
// streamed PATCH, pulls it back, and checks that the server's peak RSS
// (VmHWM) stays under 100 MiB: uploads and downloads stream between the
// connection and the disk.
func TestLargeUploadMemory(t *testing.T) {
	const size = 1 << 30
	p := registrytest.StartProcess(t)
	c := processClient(t, p)
	src := newBlockReader(t, size)
	dg := src.digest(t)

	resp := request(t, c, p, "POST", "/v2/big/layer/blobs/uploads/", nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	resp = request(t, c, p, "PATCH", loc, src, size)
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", size-1) {
		t.Fatalf("PATCH: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp = request(t, c, p, "PUT", resp.Header.Get("Location")+"?digest="+url.QueryEscape(dg.String()), nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	afterPush, err := bench.PeakRSS(p.PID())
	if err != nil {
		t.Fatal(err)
	}

	resp = request(t, c, p, "GET", "/v2/big/layer/blobs/"+dg.String(), nil, 0)
	h := digest.SHA256.Digester()
	n, err := io.Copy(h.Hash(), resp.Body)
	resp.Body.Close()
	if err != nil || n != size || h.Digest() != dg {
		t.Fatalf("pulled %d bytes (%v) with digest %s, want %d bytes, %s", n, err, h.Digest(), size, dg)
	}
	afterPull, err := bench.PeakRSS(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server peak RSS: %s after pushing 1 GiB, %s after pulling it", bench.MiB(afterPush), bench.MiB(afterPull))
	if afterPull >= 100<<20 {
		t.Fatalf("server peak RSS %s, want under 100 MiB", bench.MiB(afterPull))
	}
}

// TestKilledServerExposesNothing kills the registry process (SIGKILL) in
// the middle of a blob upload, restarts it on the same storage, and checks
// that nothing partial is visible and that the upload can be redone.
func TestKilledServerExposesNothing(t *testing.T) {
	const size = 64 << 20
	p := registrytest.StartProcess(t)
	c := processClient(t, p)
	src := newBlockReader(t, size)
	dg := src.digest(t)
	src.pauseAt, src.paused, src.resume = size/2, make(chan struct{}), make(chan struct{})

	resp := request(t, c, p, "POST", "/v2/team/app/blobs/uploads/", nil, 0)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("PATCH", "https://"+p.Host+loc, src)
		req.ContentLength = size
		req.SetBasicAuth(p.Username, p.Password)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("PATCH completed with %d", resp.StatusCode)
		}
		done <- err
	}()
	<-src.paused
	// Wait until the server has written part of the chunk to disk.
	testenv.WaitFor(t, "partial upload data on disk", 30*time.Second, nil, func() error {
		return partialData(p.Root)
	})
	p.Kill()
	close(src.resume)
	<-done
	p.Restart()

	resp = request(t, c, p, "HEAD", "/v2/team/app/blobs/"+dg.String(), nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("HEAD of the interrupted blob after a crash: %d, want 404", resp.StatusCode)
	}
	resp = request(t, c, p, "GET", loc, nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("the interrupted session: %d, Range %q; want 204, 0-0 (no bytes recorded)", resp.StatusCode, resp.Header.Get("Range"))
	}
	// The session is resumed from its recorded size and completes.
	resp = request(t, c, p, "PATCH", loc, newBlockReaderFrom(src), size)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("PATCH after restart: %d", resp.StatusCode)
	}
	resp = request(t, c, p, "PUT", loc+"?digest="+url.QueryEscape(dg.String()), nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT after restart: %d", resp.StatusCode)
	}
	resp = request(t, c, p, "GET", "/v2/team/app/blobs/"+dg.String(), nil, 0)
	h := digest.SHA256.Digester()
	n, _ := io.Copy(h.Hash(), resp.Body)
	resp.Body.Close()
	if n != size || h.Digest() != dg {
		t.Fatalf("blob after restart: %d bytes, %s", n, h.Digest())
	}
}

func newBlockReaderFrom(r *blockReader) *blockReader { return &blockReader{block: r.block, n: r.n} }

// partialData reports whether an upload data file under root holds bytes.
func partialData(root string) error {
	entries, err := os.ReadDir(root + "/uploads")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fi, err := os.Stat(root + "/uploads/" + e.Name() + "/data"); err == nil && fi.Size() > 0 {
			return nil
		}
	}
	return fmt.Errorf("no upload data yet")
}
