package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
)

// The daemons a build talks to: buildkitd, dockerd (loading images), and
// the log a build writes.

// connect dials buildkitd and checks that it answers, returning its default
// platform.
func (b *builder) connect(ctx context.Context) (*client.Client, string, error) {
	cctx, cancel := context.WithTimeout(ctx, b.timeouts.Connect)
	defer cancel()
	c, err := client.New(cctx, b.addr)
	if err != nil {
		return nil, "", fmt.Errorf("buildkit_addr %s: %w: %v; run the ensure-buildkit role first or set buildkit_addr", b.addr, ErrUnreachable, err)
	}
	// buildkitd may still be starting (the role returns once its socket
	// exists): ask until it answers or the connect timeout passes.
	var workers []*client.WorkerInfo
	for {
		workers, err = c.ListWorkers(cctx)
		if err == nil {
			break
		}
		select {
		case <-cctx.Done():
			c.Close()
			return nil, "", fmt.Errorf("buildkit_addr %s: %w after %s: %v; run the ensure-buildkit role first or set buildkit_addr", b.addr, ErrUnreachable, b.timeouts.Connect, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	native := platforms.Format(platforms.Normalize(platforms.DefaultSpec()))
	if len(workers) > 0 && len(workers[0].Platforms) > 0 {
		native = platforms.Format(platforms.Normalize(workers[0].Platforms[0]))
	}
	return c, native, nil
}

func (b *builder) dockerEngine(ctx context.Context, host string) (*engine, error) {
	switch host {
	case "none":
		return nil, nil
	case "":
		if _, err := os.Stat(strings.TrimPrefix(DefaultDockerHost, "unix://")); err != nil {
			return nil, nil
		}
		host = DefaultDockerHost
	}
	eng, err := newEngine(host)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, b.timeouts.Connect)
	defer cancel()
	if err := eng.ping(pctx); err != nil {
		return nil, fmt.Errorf("docker_host: %w; start dockerd, or set docker_host: none to skip loading images into it", err)
	}
	return eng, nil
}

func openLog(path string) (io.Writer, func(), error) {
	if path == "" {
		return io.Discard, func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("log_file: creating its directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("log_file: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// loadAfterPush makes the pushed image available to dockerd: nothing to do
// when every local name already has the image's config digest as ID,
// otherwise a cached solve exporting a docker tarball into it.
func (b *builder) loadAfterPush(ctx context.Context, c *client.Client, native string, eng store,
	creds map[string]Credential, logw io.Writer, p *plan, configDigest string) (*dockerLoad, error) {
	load := &dockerLoad{eng: eng, names: p.dockerNames}
	one := p.spec
	one.Push = nil
	if len(one.Platforms) > 1 {
		if !slices.Contains(one.Platforms, native) {
			fmt.Fprintf(logw, "not loading into %s: %s is not among the platforms built\n", eng, native)
			return nil, nil
		}
		one.Platforms = []string{native}
	} else if configDigest != "" {
		same, err := load.has(ctx, configDigest)
		if err != nil {
			return nil, &ImageError{Image: p.name, Err: err}
		}
		if same {
			return load, nil
		}
	}
	one.DockerNames, one.Docker = eng.archiveNames(p.dockerNames), load.output(ctx)
	if _, prog, err := b.solve(ctx, c, &one, creds, logw); err != nil {
		return nil, b.solveError(p, prog, err)
	}
	return load, nil
}

// dockerLoad loads a docker export into dockerd unless dockerd already has
// the image under every name.
type dockerLoad struct {
	eng    store
	names  []string
	loader io.WriteCloser
	loaded bool
}

func (d *dockerLoad) output(ctx context.Context) func(string) (io.WriteCloser, error) {
	return func(configDigest string) (io.WriteCloser, error) {
		same, err := d.has(ctx, configDigest)
		if err != nil {
			return nil, err
		}
		if same {
			return discard{}, nil
		}
		d.loaded = true
		d.loader = d.eng.load(ctx, configDigest, d.names)
		return d.loader, nil
	}
}

// has reports whether dockerd has the image with config digest (its image
// ID) under every name.
func (d *dockerLoad) has(ctx context.Context, configDigest string) (bool, error) {
	if configDigest == "" {
		return false, nil
	}
	for _, n := range d.names {
		id, err := d.eng.imageID(ctx, n)
		if err != nil {
			return false, err
		}
		if id != configDigest {
			return false, nil
		}
	}
	return true, nil
}

func (d *dockerLoad) wait() error {
	if d.loader == nil {
		return nil
	}
	return d.loader.Close()
}

// Native is the platform of this machine, as BuildKit names it.
func Native() string {
	return platforms.Format(platforms.Normalize(platforms.Platform{OS: "linux", Architecture: runtime.GOARCH}))
}
