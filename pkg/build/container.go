package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Container commands: where container_image_build leaves the images for
// the job (upstream's container_command).
const (
	CommandPodman = "podman"
	CommandDocker = "docker"
)

// ContainerRequest is what container_image_build builds, the build of the
// container-image family (zuul-jobs' build-container-image); its fields are
// the module's parameters. The images are built with BuildKit as Request's
// are, pushed to the buildset registry the same way, and left where
// container_command says the job expects them: podman's local store, or
// dockerd.
type ContainerRequest struct {
	// Images are container_images: repository includes the registry
	// (quay.io/org/app), registry names the credentials of the upload.
	Images []zuul.Image `ansible:"container_images,required"`
	Zuul   zuul.Vars    `ansible:"zuul,raw,required"`
	// WorkDir is zuul_work_dir, as Request's.
	WorkDir string `ansible:"zuul_work_dir,path"`
	// Registry is the buildset registry, as Request's; without one the
	// images only land in the local store.
	Registry *zuul.BuildsetRegistry `ansible:"buildset_registry"`
	// Command is container_command: podman loads the images into podman's
	// store (of the user the module runs as), docker into dockerd.
	Command string `ansible:"container_command" default:"podman" choices:"podman,docker"`
	// Filename is container_filename, the container file of images that
	// name none; when empty, Containerfile or Dockerfile, whichever the
	// context has (podman prefers Containerfile, docker Dockerfile).
	Filename string `ansible:"container_filename"`
	// ExtraEnv is container_build_extra_env: the environment the build
	// takes bare build arguments (KEY without =value) from, over the
	// module's own.
	ExtraEnv map[string]string `ansible:"container_build_extra_env"`
	// BuildkitAddr is the buildkitd to build with, as Request's.
	BuildkitAddr string `ansible:"buildkit_addr" default:"unix:///run/buildkit/buildkitd.sock"`
	// DockerHost is the Docker daemon of container_command docker: ""
	// means DefaultDockerHost, "none" loads nothing. Not used with podman.
	DockerHost string `ansible:"docker_host"`
	// LogFile receives the build log (appended); empty writes none.
	LogFile string `ansible:"log_file,path" default:"~/zuul-output/logs/container_image_build.log"`
	// Cache is Request's: the BuildKit cache through the buildset
	// registry (docs/cache.md).
	Cache bool `ansible:"cache" default:"true"`
	// SBOMScanner is Request's: the SBOM scanner's OCI image layout.
	SBOMScanner string `ansible:"sbom_scanner,path" default:"~/.imagegate/sbom-scanner"`
	// Home is the user's home directory, as Request's. Not a parameter.
	Home string
}

// ContainerResult is the outcome of BuildContainer.
type ContainerResult struct {
	ansible.Outcome
	Images []ContainerImageResult `json:"images"`
	// Command is the container command the images were left for.
	Command string `json:"container_command"`
	LogFile string `json:"log_file"`
}

// ContainerImageResult is the outcome for one image.
type ContainerImageResult struct {
	Repository string `json:"repository"`
	// Digest is the pushed manifest (or index) digest; empty without a
	// buildset registry.
	Digest string `json:"digest,omitempty"`
	// References are the buildset registry references pushed.
	References []string `json:"references"`
	// LocalNames are the names the image has in the local store of the
	// container command.
	LocalNames []string `json:"local_names"`
	Platforms  []string `json:"platforms"`
	BuildTime  float64  `json:"build_time"`
	CacheFrom  []string `json:"cache_from"`
	CacheTo    string   `json:"cache_to"`
	CacheHits  int      `json:"cache_hits"`
	Steps      int      `json:"steps"`
	Changed    bool     `json:"changed"`
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// BuildContainer validates every image of container_images, then builds
// and pushes them one by one to the buildset registry, and loads each into
// the local store of the container command: podman's or dockerd's. A
// multi-platform image is pushed as one index; the local store gets the
// node's own platform (podman and dockerd keep one image per name).
func BuildContainer(ctx context.Context, req ContainerRequest, opts ...Option) (*ContainerResult, error) {
	var errs []error
	switch req.Command {
	case CommandPodman:
		if req.DockerHost != "" {
			errs = append(errs, fmt.Errorf("docker_host is set, but container_command is podman: the images go to podman's store; set container_command: docker to load them into that dockerd"))
		}
	case CommandDocker:
	default:
		errs = append(errs, fmt.Errorf("container_command %q: want podman or docker (where the job expects the images)", req.Command))
	}
	for k := range req.ExtraEnv {
		if !envName.MatchString(k) {
			errs = append(errs, fmt.Errorf("container_build_extra_env: %q is not an environment variable name (letters, digits and _, not starting with a digit)", k))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was built: %w", errors.Join(errs...))
	}
	images := make([]zuul.Image, len(req.Images))
	for i, im := range req.Images {
		if im.Dockerfile == "" {
			im.Dockerfile = req.Filename
		}
		images[i] = im
	}
	dr := Request{Images: images, Zuul: req.Zuul, WorkDir: req.WorkDir, Registry: req.Registry,
		BuildkitAddr: req.BuildkitAddr, DockerHost: req.DockerHost, LogFile: req.LogFile, Home: req.Home, Cache: req.Cache, SBOMScanner: req.SBOMScanner,
		family: family{container: true, command: req.Command}}
	if req.Command == CommandPodman {
		dr.DockerHost = "none"
	}
	extra := req.ExtraEnv
	opts = append(opts, func(o *options) {
		outer := o.lookupEnv
		if outer == nil {
			return // Build refuses a nil lookup
		}
		o.lookupEnv = func(k string) (string, bool) {
			if v, ok := extra[k]; ok {
				return v, true
			}
			return outer(k)
		}
	})
	res, err := Build(ctx, dr, opts...)
	if res == nil {
		return nil, err
	}
	out := &ContainerResult{Outcome: res.Outcome, Command: req.Command, LogFile: res.LogFile, Images: []ContainerImageResult{}}
	for _, r := range res.Images {
		out.Images = append(out.Images, ContainerImageResult{Repository: r.Repository, Digest: r.Digest,
			References: r.References, LocalNames: r.DockerNames, Platforms: r.Platforms, BuildTime: r.BuildTime,
			CacheFrom: r.CacheFrom, CacheTo: r.CacheTo, CacheHits: r.CacheHits, Steps: r.Steps, Changed: r.Changed})
	}
	return out, err
}

// family is what differs between the docker_images build (the zero value)
// and the container_images build.
type family struct {
	container bool
	command   string // container_command, for container_images
}

// images is the parameter that lists the images.
func (f family) images() string {
	if f.container {
		return "container_images"
	}
	return "docker_images"
}

// checkRepository applies the family's rule on repositories: a
// container_images repository is a full reference, with its registry, as
// upstream requires (it fails on a repository without /).
func (f family) checkRepository(repo string) error {
	if f.container && !strings.Contains(repo, "/") {
		return fmt.Errorf("repository %q has no registry: container_images repositories include it, for example quay.io/%s", repo, repo)
	}
	return nil
}

// defaultFile is the container file of an image that names none:
// Dockerfile for docker_images; for container_images Containerfile or
// Dockerfile, whichever contextDir has, the command's own first (podman
// build looks for Containerfile first, docker build for Dockerfile).
func (f family) defaultFile(contextDir string) string {
	if !f.container {
		return "Dockerfile"
	}
	order := []string{"Containerfile", "Dockerfile"}
	if f.command == CommandDocker {
		order = []string{"Dockerfile", "Containerfile"}
	}
	for _, n := range order {
		if fi, err := os.Stat(filepath.Join(contextDir, n)); err == nil && !fi.IsDir() {
			return n
		}
	}
	return order[0]
}

// store is a local image store the build loads images into: dockerd's
// (engine) or podman's.
type store interface {
	// imageID is the ID (config digest) of the image name, "" when the
	// store has none.
	imageID(ctx context.Context, name string) (string, error)
	// load streams a docker-format image tarball into the store, the
	// image whose ID is id, to have names; Close waits for the store and
	// returns its error.
	load(ctx context.Context, id string, names []string) io.WriteCloser
	// archiveNames are the names to write into the tarball.
	archiveNames(names []string) []string
	// String names the store in messages.
	String() string
}

// dockerStore is dockerd as a store.
type dockerStore struct{ *engine }

func (d dockerStore) String() string { return "dockerd" }

// archiveNames: dockerd names the image from the tarball (the docker
// exporter writes the names as Docker does, docker.io/ left out).
func (d dockerStore) archiveNames(names []string) []string { return names }

func (d dockerStore) load(ctx context.Context, _ string, _ []string) io.WriteCloser {
	return d.engine.load(ctx)
}

// localStore is the store the request's images are loaded into, nil for
// none: podman's for container_command podman, else the Docker daemon of
// docker_host (for container_command docker one must answer unless
// docker_host is none).
func (b *builder) localStore(ctx context.Context, req *Request) (store, error) {
	if req.family.container && req.family.command == CommandPodman {
		p, err := newPodman(ctx, b.timeouts.Connect)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	host := req.DockerHost
	if req.family.container && host == "" {
		host = DefaultDockerHost
	}
	e, err := b.dockerEngine(ctx, host)
	if err != nil || e == nil {
		return nil, err
	}
	return dockerStore{e}, nil
}
