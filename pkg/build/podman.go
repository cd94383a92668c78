package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// podman is podman's local image store, reached through the podman command
// of the user the module runs as (its storage.conf and containers.conf
// apply, CONTAINERS_STORAGE_CONF included): image exists and inspect to
// read image IDs, load to add an image. Loading a docker-format tarball
// needs no registry credentials, so none are written for podman.
type podman struct {
	bin string
}

func newPodman(ctx context.Context, timeout time.Duration) (*podman, error) {
	bin, err := exec.LookPath("podman")
	if err != nil {
		return nil, fmt.Errorf("container_command podman: podman is not installed on the node (%v): install it (the build-container-image job's pre-run does), or set container_command: docker", err)
	}
	p := &podman{bin: bin}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := p.run(cctx, nil, "version", "--format", "{{.Client.Version}}"); err != nil {
		return nil, fmt.Errorf("container_command podman: %w", err)
	}
	return p, nil
}

func (p *podman) String() string { return "podman" }

// run runs podman with args and stdin, returning stdout; a failure carries
// podman's stderr.
func (p *podman) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), &commandError{args: args, err: err, stderr: strings.TrimSpace(errb.String())}
	}
	return out.Bytes(), nil
}

type commandError struct {
	args   []string
	err    error
	stderr string
}

func (e *commandError) Error() string {
	msg := fmt.Sprintf("podman %s: %v", strings.Join(e.args, " "), e.err)
	if e.stderr != "" {
		msg += ": " + e.stderr
	}
	return msg
}

func (e *commandError) Unwrap() error { return e.err }

// imageID returns the ID of a local image (podman's ID is the config
// digest's hex), "" when podman has no image of that name.
func (p *podman) imageID(ctx context.Context, name string) (string, error) {
	// image exists answers 1 for a missing image, 125 on an error.
	if _, err := p.run(ctx, nil, "image", "exists", name); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			return "", nil
		}
		return "", fmt.Errorf("looking up image %s: %w", name, err)
	}
	out, err := p.run(ctx, nil, "image", "inspect", "--format", "{{.Id}}", name)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", name, err)
	}
	id := strings.TrimSpace(string(out))
	if id == "" {
		return "", fmt.Errorf("inspecting image %s: podman reported no ID", name)
	}
	if !strings.HasPrefix(id, "sha256:") {
		id = "sha256:" + id
	}
	return id, nil
}

// archiveNames: none. podman would name an image of a tarball whose
// names Docker shortened (myorg/app for docker.io/myorg/app) as
// localhost/myorg/app; load names the image itself.
func (p *podman) archiveNames([]string) []string { return nil }

// load streams a docker-format tarball without names into `podman load`,
// then gives the image (by its ID) every name with `podman tag`.
func (p *podman) load(ctx context.Context, id string, names []string) io.WriteCloser {
	pr, pw := io.Pipe()
	l := &podmanLoad{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if _, err := p.run(ctx, pr, "load", "--quiet"); err != nil {
			l.err = fmt.Errorf("loading the image into podman's store: %w", err)
			pr.CloseWithError(l.err)
			return
		}
		pr.Close()
		if id == "" {
			l.err = errors.New("loading the image into podman's store: BuildKit reported no image ID to name")
			return
		}
		if _, err := p.run(ctx, nil, append([]string{"tag", strings.TrimPrefix(id, "sha256:")}, names...)...); err != nil {
			l.err = fmt.Errorf("naming the image in podman's store: %w", err)
		}
	}()
	return l
}

type podmanLoad struct {
	pw   *io.PipeWriter
	done chan struct{}
	once sync.Once
	err  error
}

func (l *podmanLoad) Write(b []byte) (int, error) { return l.pw.Write(b) }

func (l *podmanLoad) Close() error {
	l.once.Do(func() { l.pw.Close() })
	<-l.done
	return l.err
}
