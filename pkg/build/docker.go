package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// DefaultDockerHost is the Docker Engine socket of a node.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// engine is a minimal Docker Engine API client over a unix socket: image
// inspect and image load are all the build needs, and the docker CLI is not
// needed on the node.
type engine struct {
	host string
	hc   *http.Client
}

func newEngine(host string) (*engine, error) {
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || path == "" {
		return nil, fmt.Errorf("docker_host %q: only unix:///path/to/docker.sock is supported", host)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &engine{host: host, hc: &http.Client{Transport: tr}}, nil
}

// base is the URL prefix; the host part is ignored by the unix dialer.
const engineBase = "http://docker/v1.41"

func (e *engine) ping(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reaching dockerd at %s: %w", e.host, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reaching dockerd at %s: %s", e.host, resp.Status)
	}
	return nil
}

// imageID returns the ID (config digest) of a local image, or "" when the
// daemon has no image of that name.
func (e *engine) imageID(ctx context.Context, name string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, engineBase+"/images/"+url.PathEscape(name)+"/json", nil)
	resp, err := e.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("inspecting docker image %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		io.Copy(io.Discard, resp.Body)
		return "", nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("inspecting docker image %s: %s", name, engineError(resp))
	}
	var v struct {
		ID string `json:"Id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("inspecting docker image %s: %w", name, err)
	}
	return v.ID, nil
}

// load streams a docker-format image tarball into the daemon
// (POST /images/load). The returned writer's Close waits for the daemon to
// finish and returns its error.
func (e *engine) load(ctx context.Context) io.WriteCloser {
	pr, pw := io.Pipe()
	l := &loader{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, engineBase+"/images/load?quiet=1", pr)
		req.Header.Set("Content-Type", "application/x-tar")
		resp, err := e.hc.Do(req)
		if err != nil {
			l.err = fmt.Errorf("loading the image into dockerd: %w", err)
			pr.CloseWithError(l.err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			l.err = fmt.Errorf("loading the image into dockerd: %s", engineError(resp))
			pr.CloseWithError(l.err)
			return
		}
		// The body is a JSON message stream; an error arrives as a message.
		dec := json.NewDecoder(resp.Body)
		for {
			var m struct {
				Error       string `json:"error"`
				ErrorDetail struct {
					Message string `json:"message"`
				} `json:"errorDetail"`
			}
			if err := dec.Decode(&m); err != nil {
				if !errors.Is(err, io.EOF) {
					l.err = fmt.Errorf("loading the image into dockerd: reading its answer: %w", err)
				}
				break
			}
			if m.Error != "" {
				l.err = fmt.Errorf("loading the image into dockerd: %s", m.Error)
			}
		}
		pr.Close()
	}()
	return l
}

type loader struct {
	pw   *io.PipeWriter
	done chan struct{}
	once sync.Once
	err  error
}

func (l *loader) Write(b []byte) (int, error) { return l.pw.Write(b) }

func (l *loader) Close() error {
	l.once.Do(func() { l.pw.Close() })
	<-l.done
	return l.err
}

func engineError(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		return fmt.Sprintf("%s: %s", resp.Status, m.Message)
	}
	return fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) Close() error                { return nil }
