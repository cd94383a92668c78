// Package build builds the images of a docker_images list with BuildKit
// (the dockerfile frontend of a buildkitd on the node) and pushes each result
// straight from buildkitd to the buildset registry, under its tags and its
// staging tags, as zuul-jobs' build-docker-image does through buildx. When
// the node has a Docker daemon, the image is also loaded into it under the
// same local names, so a later task can `docker run` it. BuildContainer is
// the same build for the container-image family (container_images): the
// image lands in podman's store or dockerd, as container_command says.
//
// Registry credentials reach buildkitd over the build session from this
// process's memory; the registry's CA is trusted through buildkitd.toml (the
// ensure-buildkit role writes it). Every image is validated (names,
// Dockerfile syntax, target stage, platforms, build arguments, siblings)
// before the first one is built, so bad input pushes nothing.
package build

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/ocilayout"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Request is what docker_image_build builds; its fields are the module's
// parameters.
type Request struct {
	Images []zuul.Image `ansible:"docker_images,required"`
	Zuul   zuul.Vars    `ansible:"zuul,raw,required"`
	// WorkDir is zuul_work_dir: contexts are relative to it. Empty means
	// zuul.project.src_dir. A relative path is relative to Home.
	WorkDir string `ansible:"zuul_work_dir,path"`
	// Registry is the buildset registry to push to; when nil, the job's
	// result data file names it (zuul.ResolveBuildsetRegistry), and when
	// neither does, the images are built for the local Docker daemon only.
	Registry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	// DockerRegistry prefixes local image names (upstream's docker_registry).
	DockerRegistry string `ansible:"docker_registry"`
	// BuildkitAddr is the buildkitd to build with (unix://, tcp://,
	// docker-container:// ...), the one the ensure-buildkit role sets up by
	// default.
	BuildkitAddr string `ansible:"buildkit_addr" default:"unix:///run/buildkit/buildkitd.sock"`
	// DockerHost is the Docker daemon to load images into: "" means
	// DefaultDockerHost when that socket exists, "none" disables loading.
	DockerHost string `ansible:"docker_host"`
	// LayoutDir is the OCI image layout the images are also written to
	// when there is no buildset registry, manifests and indexes exactly as
	// built, for docker_image_upload on this host (layout.go); empty
	// writes none.
	LayoutDir string `ansible:"oci_layout_dir,path" default:"~/.imagegate/oci-layout"`
	// LogFile receives the build log (appended); empty writes none.
	LogFile string `ansible:"log_file,path" default:"~/zuul-output/logs/docker_image_build.log"`
	// Cache imports the BuildKit cache of merged code and of the changes
	// ahead from the buildset registry and exports this build's there
	// (cache.go, docs/cache.md). Go callers get false unless they ask.
	Cache bool `ansible:"cache" default:"true"`
	// SBOMScanner is the OCI image layout of imagegate-sbom-scanner, the
	// SBOM generator of the images whose sbom is true (sbom.go); the
	// ensure-buildkit role installs it there from the release tree.
	SBOMScanner string `ansible:"sbom_scanner,path" default:"~/.imagegate/sbom-scanner"`
	// Home is the user's home directory (default: $HOME), the base of
	// relative paths and of ~/src for siblings. It is not a parameter.
	Home string

	// family is what BuildContainer changes (container_images); the zero
	// value is docker_images'.
	family family
}

// Option configures Build.
type Option func(*options)

type options struct {
	check            bool
	log              *slog.Logger
	progress         io.Writer
	timeouts         Timeouts
	timed            bool
	compressionLevel int
	redact           func(string)
	lookupEnv        func(string) (string, bool)
}

// WithCheckMode validates every image and reports the references it would
// push, and builds nothing. The default is false.
func WithCheckMode(check bool) Option { return func(o *options) { o.check = check } }

// WithLogger sets the logger for what the build does (not the build log).
// The default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithProgress copies the build log to w as well as to the log file (a
// module passes its Progress writer: stderr at verbosity 2 and above). The
// default, nil, is none.
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// Timeouts are docker_image_build's time limits: the module's timeout and
// connect_timeout parameters, their defaults stated once, in the tags.
type Timeouts struct {
	// Image bounds the build and push of one image.
	Image time.Duration `ansible:"timeout,seconds" default:"3600"`
	// Connect bounds the wait for buildkitd, and for a Docker daemon, to
	// answer.
	Connect time.Duration `ansible:"connect_timeout,seconds" default:"30"`
}

// WithTimeouts sets the time limits, each positive. Without it, they are
// the defaults of Timeouts' tags (an hour per image, 30 seconds to
// connect).
func WithTimeouts(t Timeouts) Option { return func(o *options) { o.timeouts, o.timed = t, true } }

// WithCompressionLevel sets the gzip level (1-9) of new layers. The default,
// 0, keeps BuildKit's.
func WithCompressionLevel(n int) Option { return func(o *options) { o.compressionLevel = n } }

// WithLookupEnv sets where build arguments given as a bare KEY take their
// value from. The default is the process environment (os.LookupEnv): for
// the module, the task's environment.
func WithLookupEnv(f func(string) (string, bool)) Option {
	return func(o *options) { o.lookupEnv = f }
}

// WithRedact sets the function that hides the buildset registry's password
// when it is read from the job's result data file (a module's AddSecret).
// The default does nothing.
func WithRedact(redact func(secret string)) Option { return func(o *options) { o.redact = redact } }

// builder builds images with one buildkitd.
type builder struct {
	addr string
	options
	// layout receives the images when there is no buildset registry.
	layout *ocilayout.Layout
	// warnings are the result's warnings (a cache not used, say).
	warnings []string
}

// warn adds a warning to the result and logs it.
func (b *builder) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.warnings = append(b.warnings, msg)
	b.log.Warn(msg)
}

// Build validates every image, then builds and pushes them one by one to
// the buildset registry (and loads them into the Docker daemon).
func Build(ctx context.Context, req Request, opts ...Option) (*Result, error) {
	o := options{log: slog.New(slog.DiscardHandler), redact: func(string) {}, lookupEnv: os.LookupEnv}
	for _, f := range opts {
		f(&o)
	}
	if !o.timed {
		if err := ansible.ApplyDefaults(&o.timeouts); err != nil {
			return nil, err
		}
	}
	switch {
	case !strings.Contains(req.BuildkitAddr, "://"):
		return nil, fmt.Errorf("buildkit_addr %q: want a URL such as unix:///run/buildkit/buildkitd.sock", req.BuildkitAddr)
	case o.timeouts.Image <= 0 || o.timeouts.Connect <= 0:
		return nil, fmt.Errorf("timeout and connect_timeout must be positive, got %s and %s", o.timeouts.Image, o.timeouts.Connect)
	case o.compressionLevel < 0 || o.compressionLevel > 9:
		return nil, fmt.Errorf("compression level %d: want 0 (default) to 9", o.compressionLevel)
	case o.log == nil || o.redact == nil || o.lookupEnv == nil:
		return nil, errors.New("build: nil logger, redact or lookup function")
	}
	br, err := zuul.ResolveBuildsetRegistry(req.Registry, &req.Zuul, o.redact)
	switch {
	case errors.Is(err, zuul.ErrNoBuildsetRegistry):
		o.log.Info("no buildset registry is known: building for the local Docker daemon only", "reason", err)
		br = nil
	case err != nil:
		return nil, fmt.Errorf("buildset_registry: %w", err)
	}
	req.Registry = br
	b := &builder{addr: req.BuildkitAddr, options: o}
	return b.run(ctx, &req)
}

// Result is the outcome of a Build.
type Result struct {
	ansible.Outcome
	Images  []ImageResult `json:"images"`
	LogFile string        `json:"log_file"`
}

// ImageResult is the outcome for one image.
type ImageResult struct {
	Repository string `json:"repository"`
	// Digest is the pushed manifest (or index) digest.
	Digest string `json:"digest,omitempty"`
	// References are the registry references pushed (or to be pushed in
	// check mode).
	References []string `json:"references"`
	// DockerNames are the names loaded into the local Docker daemon.
	DockerNames []string `json:"docker_names"`
	Platforms   []string `json:"platforms"`
	// BuildTime is the build and push time in seconds.
	BuildTime float64 `json:"build_time"`
	// CacheFrom are the BuildKit caches the build imported; CacheTo is
	// where it exported its own (empty when it did not).
	CacheFrom []string `json:"cache_from"`
	CacheTo   string   `json:"cache_to"`
	// CacheHits counts the build steps served from BuildKit's cache, of
	// Steps steps.
	CacheHits int  `json:"cache_hits"`
	Steps     int  `json:"steps"`
	Changed   bool `json:"changed"`
}

// run validates every image, then builds and pushes them one by one.
func (b *builder) run(ctx context.Context, req *Request) (*Result, error) {
	if req.Home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("finding the home directory: %w", err)
		}
		req.Home = h
	}
	workDir := req.WorkDir
	if workDir == "" {
		workDir = req.Zuul.Project.SrcDir
	}
	if workDir == "" {
		return nil, errors.New("zuul_work_dir is not set and zuul.project.src_dir is empty: set zuul_work_dir to the project directory")
	}
	workDir = resolveHome(req.Home, workDir)
	if len(req.Images) == 0 {
		return nil, fmt.Errorf("%s is empty: list at least one image to build", req.family.images())
	}
	pushHost := ""
	if req.Registry != nil {
		pushHost = registryHost(req.Registry)
	}
	var plans []*plan
	var errs []error
	for i, im := range req.Images {
		p, err := b.planImage(req, workDir, pushHost, i, im)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.planCache(req, pushHost, p)
		plans = append(plans, p)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was built: %w", errors.Join(errs...))
	}
	if req.Registry != nil {
		b.checkScanner(req, plans)
	}

	eng, err := b.localStore(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.Registry == nil && eng == nil && req.LayoutDir == "" {
		return nil, errors.New("nothing to deliver images to: no buildset_registry (neither the parameter nor secret_data in zuul.executor.result_data_file), no Docker daemon (docker_host) and no oci_layout_dir")
	}

	rep := &Result{LogFile: req.LogFile, Images: []ImageResult{}}
	for _, p := range plans {
		if p.cache != nil {
			for _, n := range p.cache.notes {
				b.warn("%s", n)
			}
		}
	}
	defer func() { rep.Warnings = append(rep.Warnings, b.warnings...) }()
	if b.check {
		for _, p := range plans {
			r := ImageResult{Repository: p.image.Repository, References: nonNil(p.push), Platforms: nonNil(p.spec.Platforms),
				CacheFrom: []string{}}
			if p.cache != nil {
				for _, s := range p.cache.imports {
					r.CacheFrom = append(r.CacheFrom, s.ref)
				}
				r.CacheTo = p.cache.export
			}
			if eng != nil {
				r.DockerNames = p.dockerNames
			}
			r.DockerNames = nonNil(r.DockerNames)
			r.Changed = true
			rep.Images = append(rep.Images, r)
		}
		rep.Changed = true
		return rep, nil
	}

	c, native, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	var reg *registry
	creds := map[string]Credential{}
	if req.Registry != nil {
		pool, err := pki.CertPool([]byte(req.Registry.Cert))
		if err != nil {
			return nil, fmt.Errorf("buildset_registry.cert: %w", err)
		}
		if sys, err := x509.SystemCertPool(); err == nil {
			for _, c := range []string{req.Registry.Cert} {
				sys.AppendCertsFromPEM([]byte(c))
			}
			pool = sys
		}
		cred := Credential{Username: req.Registry.Username, Password: req.Registry.Password}
		for _, h := range []string{req.Registry.Address(), req.Registry.Location()} {
			creds[h] = cred
		}
		reg = newRegistry(pool, creds)
	}
	if err := b.planSBOM(ctx, req, reg, pushHost, plans); err != nil {
		return nil, err
	}

	if err := b.openLayout(req); err != nil {
		return nil, err
	}

	logw, closeLog, err := openLog(req.LogFile)
	if err != nil {
		return nil, err
	}
	defer closeLog()
	if b.progress != nil {
		logw = io.MultiWriter(logw, b.progress)
	}

	for _, p := range plans {
		r, err := b.buildOne(ctx, c, native, reg, eng, creds, logw, p)
		if r != nil {
			rep.Images = append(rep.Images, *r)
			rep.Changed = rep.Changed || r.Changed
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// buildOne builds, pushes and loads one image.
func (b *builder) buildOne(ctx context.Context, c *client.Client, native string, reg *registry,
	eng store, creds map[string]Credential, logw io.Writer, p *plan) (*ImageResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeouts.Image)
	defer cancel()
	start := time.Now()
	fmt.Fprintf(logw, "\n==== %s %s: building %s\n", start.UTC().Format(time.RFC3339), p.name, strings.Join(p.push, ", "))
	res := &ImageResult{Repository: p.image.Repository, References: nonNil(p.push), DockerNames: []string{},
		Platforms: nonNil(p.spec.Platforms), CacheFrom: []string{}}
	if len(res.Platforms) == 0 {
		res.Platforms = []string{native}
	}

	// What the registry holds now, to observe whether the push changes it.
	before := map[string]string{}
	if reg != nil {
		for _, ref := range p.push {
			d, err := reg.digest(ctx, ref)
			if err != nil {
				b.log.Warn("reading the current digest", "ref", ref, "err", err)
				d = "unknown"
			}
			before[ref] = d
		}
	}

	if len(p.siblings) > 0 {
		cleanup, err := copySiblings(p.contextDir, p.siblings)
		if err != nil {
			return nil, &ImageError{Image: p.name, Err: err}
		}
		defer func() {
			if err := cleanup(); err != nil {
				b.log.Warn("removing siblings", "dir", p.contextDir, "err", err)
			}
		}()
	}

	if p.spec.Provenance {
		d, err := ContextDigest(ctx, p.spec.ContextDir, filepath.Join(p.spec.DockerfileDir, p.spec.Dockerfile))
		if err != nil {
			return nil, &ImageError{Image: p.name, Err: err}
		}
		p.spec.Labels[LabelContextDigest] = d
		fmt.Fprintf(logw, "provenance: %s, context %s\n", ProvenanceMode, d)
	}

	// With a registry, build and push first; the docker export follows as
	// a second, fully cached solve, and only when dockerd lacks the image
	// (a multi-platform index cannot be loaded into dockerd at all: its
	// export is the node's own platform). Without a registry the one solve
	// exports to dockerd.
	if b.layout != nil {
		return b.buildToLayout(ctx, c, native, eng, creds, logw, p, res, start)
	}
	spec := p.spec
	multi := len(spec.Platforms) > 1
	var load *dockerLoad
	if eng != nil && len(spec.Push) == 0 {
		load = &dockerLoad{eng: eng, names: p.dockerNames}
		if multi {
			if !slices.Contains(spec.Platforms, native) {
				return nil, &ImageError{Image: p.name, Err: fmt.Errorf("%w: no buildset registry to push the %s index to, and %s can only load %s", ErrInvalidImage, strings.Join(spec.Platforms, ", "), eng, native)}
			}
			spec.Platforms = []string{native}
			res.Platforms = spec.Platforms
		}
		spec.DockerNames, spec.Docker = eng.archiveNames(p.dockerNames), load.output(ctx)
	}
	if reg != nil && p.cache != nil {
		spec.CacheImports = b.usableCaches(ctx, reg, p, logw)
		spec.CacheExport = p.cache.export
	}
	resp, prog, err := b.solve(ctx, c, &spec, creds, logw)
	if err != nil && retryWithoutCache(&spec, err) {
		b.warn("%s: the build failed with the imported cache (%s): %v; building again without it", p.name, strings.Join(spec.CacheImports, ", "), err)
		// buildkitd keeps what it imported for the steps' keys: the
		// second build ignores every cache, and so does a later load.
		spec.CacheImports, spec.NoCache, p.spec.NoCache = nil, true, true
		resp, prog, err = b.solve(ctx, c, &spec, creds, logw)
	}
	res.CacheFrom = nonNil(spec.CacheImports)
	res.BuildTime = time.Since(start).Seconds()
	if prog != nil {
		res.CacheHits, res.Steps = prog.cacheHits(), len(prog.steps)
	}
	if err != nil {
		return nil, b.solveError(p, prog, err)
	}
	if len(spec.Push) > 0 {
		res.Digest = resp.ExporterResponse[respImageDigest]
		if res.Digest == "" {
			return res, &ImageError{Image: p.name, Err: errors.New("buildkitd reported no image digest for the push")}
		}
		for _, ref := range p.push {
			if before[ref] != res.Digest {
				res.Changed = true
			}
		}
		res.CacheTo = b.checkExport(ctx, reg, p)
		if eng != nil {
			load, err = b.loadAfterPush(ctx, c, native, eng, creds, logw, p, resp.ExporterResponse[respConfigDigest])
			if err != nil {
				return res, err
			}
		}
	}
	if load != nil {
		if err := load.wait(); err != nil {
			return res, &ImageError{Image: p.name, Err: err}
		}
		res.DockerNames = p.dockerNames
		res.Changed = res.Changed || load.loaded
	}
	res.BuildTime = time.Since(start).Seconds()
	fmt.Fprintf(logw, "==== %s: done in %.1fs, digest %s, %d of %d steps cached\n", p.name, res.BuildTime, res.Digest, res.CacheHits, res.Steps)
	return res, nil
}

// solve runs one BuildKit solve, draining the status stream into the log.
func (b *builder) solve(ctx context.Context, c *client.Client, spec *Spec, creds map[string]Credential, logw io.Writer) (*client.SolveResponse, *progress, error) {
	opt, err := spec.solveOpt([]session.Attachable{newAuthProvider(creds)})
	if err != nil {
		return nil, nil, err
	}
	// A stable key per context directory lets buildkitd reuse the context
	// it received last time and transfer only what changed.
	opt.SharedKey = "imagegate:" + spec.ContextDir
	ch := make(chan *client.SolveStatus)
	prog := newProgress(logw)
	var resp *client.SolveResponse
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		var err error
		resp, err = c.Solve(ectx, nil, opt, ch)
		return err
	})
	eg.Go(func() error {
		prog.consume(ch)
		return nil
	})
	if err := eg.Wait(); err != nil {
		return nil, prog, err
	}
	return resp, prog, nil
}

func (b *builder) solveError(p *plan, prog *progress, err error) error {
	ie := &ImageError{Image: p.name, Err: fmt.Errorf("build failed, nothing was pushed for this image: %w", err)}
	if prog != nil {
		if s := prog.failed(); s != nil {
			ie.Step, ie.Output = s.name, s.tail
		}
	}
	return ie
}
