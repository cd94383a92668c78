package build

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// SiblingsDir is the directory, inside an image's context, that siblings
// are copied to for the build (upstream's name, so Dockerfiles written for
// zuul-jobs work unchanged).
const SiblingsDir = ".zuul-siblings"

// SiblingsArg is the build argument that lists the siblings, space-separated.
const SiblingsArg = "ZUUL_SIBLINGS"

// plan is one validated docker_images entry, ready to build.
type plan struct {
	index int
	name  string // docker_images[i] (repository), for messages
	image zuul.Image
	spec  Spec
	// contextDir is <zuul_work_dir>/<context>; siblings are copied below it.
	contextDir string
	// siblings maps each sibling name to its source directory.
	siblings    []sibling
	push        []string
	dockerNames []string
	// cache is what the build imports and exports (cache.go); nil for
	// none.
	cache *cachePlan
}

type sibling struct {
	name string // as listed, e.g. opendev.org/org/proj
	src  string
}

var buildArgKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// knownArches are the architectures a linux platform may name; upstream
// documents amd64, arm64, riscv64, ppc64le, s390x, 386, arm/v7 and arm/v6.
var knownArches = []string{"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"}

// planImage validates one image and computes what building it means. Every
// problem is reported at once, each naming what to fix.
func (b *builder) planImage(req *Request, workDir, pushHost string, i int, im zuul.Image) (*plan, error) {
	param := req.family.images()
	p := &plan{index: i, image: im, name: fmt.Sprintf("%s[%d] (%s)", param, i, im.Repository)}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	// Names first: the repository must be a valid reference name.
	repo := strings.TrimSpace(im.Repository)
	if named, err := reference.ParseNormalizedNamed(repo); err != nil {
		bad("repository %q is not a valid image name (%v); use lower-case [registry/]namespace/name without a tag", im.Repository, err)
	} else if !reference.IsNameOnly(named) {
		bad("repository %q carries a tag or digest; give the bare name and list tags in tags", im.Repository)
	}
	if err := req.family.checkRepository(repo); err != nil {
		bad("%v", err)
	}
	if err := im.CheckTags(param, i); err != nil {
		bad("%s", strings.TrimPrefix(err.Error(), p.name+": "))
	}

	// Files: context, path and Dockerfile must exist.
	p.contextDir = filepath.Join(workDir, im.Context)
	if !isDir(p.contextDir) {
		bad("context directory %s does not exist (context %q is relative to zuul_work_dir %s)", p.contextDir, im.Context, workDir)
	}
	buildDir := p.contextDir
	if im.Path != "" {
		buildDir = filepath.Join(p.contextDir, im.Path)
		if !isDir(buildDir) {
			bad("path %s does not exist (path %q is relative to the context directory)", buildDir, im.Path)
		}
	}
	dockerfile := im.Dockerfile
	if dockerfile == "" {
		dockerfile = req.family.defaultFile(p.contextDir)
	}
	dfPath := filepath.Join(p.contextDir, dockerfile)
	if isDir(p.contextDir) {
		if err := checkDockerfile(dfPath, im.Target); err != nil {
			bad("%v", err)
		}
	}
	p.spec = Spec{
		ContextDir:       buildDir,
		DockerfileDir:    filepath.Dir(dfPath),
		Dockerfile:       filepath.Base(dfPath),
		Target:           im.Target,
		BuildArgs:        map[string]string{},
		Labels:           map[string]string{},
		CompressionLevel: b.compressionLevel,
	}

	for j, a := range im.BuildArgs {
		k, v, hasValue := strings.Cut(a, "=")
		if !buildArgKey.MatchString(k) {
			bad("build_args[%d] %q is not KEY=value or KEY (KEY: letters, digits and _, not starting with a digit)", j, a)
			continue
		}
		if !hasValue {
			// As docker build --build-arg KEY: the value comes from the
			// environment (the task's environment:), and an unset KEY is
			// not passed, so the Dockerfile's ARG default applies.
			var set bool
			if v, set = b.lookupEnv(k); !set {
				b.log.Info("build argument not passed: not set in the environment", "image", p.name, "arg", k)
				continue
			}
		}
		p.spec.BuildArgs[k] = v
	}
	for j, l := range im.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.TrimSpace(k) == "" {
			bad("labels[%d] %q is not key=value", j, l)
			continue
		}
		p.spec.Labels[k] = v
	}
	for k, v := range req.Zuul.Labels() {
		p.spec.Labels[k] = v
	}
	if im.Provenance {
		// The provenance names the build through its labels (the
		// contract of docker_image_promote's provenance check); the
		// context digest is added once siblings are in place.
		p.spec.Provenance = true
		for k, v := range req.Zuul.ProvenanceLabels() {
			p.spec.Labels[k] = v
		}
	}

	for j, a := range im.Arch {
		pl, err := parsePlatform(a)
		if err != nil {
			bad("arch[%d] %q is not a valid platform (%v); use os/arch[/variant], e.g. linux/amd64 or linux/arm64", j, a, err)
			continue
		}
		if slices.Contains(p.spec.Platforms, pl) {
			bad("arch[%d] %q is listed twice", j, a)
			continue
		}
		p.spec.Platforms = append(p.spec.Platforms, pl)
	}

	// Siblings: upstream copies ~/src/<sibling> into <context>/.zuul-siblings
	// and refuses a context that already has that directory.
	if len(im.Siblings) > 0 {
		if _, err := os.Lstat(filepath.Join(p.contextDir, SiblingsDir)); err == nil {
			bad("%s already exists in the context directory %s; remove it (siblings are copied there for the build)", SiblingsDir, p.contextDir)
		}
		if _, ok := p.spec.BuildArgs[SiblingsArg]; ok {
			bad("build_args sets %s, which siblings sets; remove one", SiblingsArg)
		}
	}
	for j, s := range im.Siblings {
		clean := filepath.Clean(s)
		if s == "" || filepath.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "..") {
			bad("siblings[%d] %q must be a project path relative to ~/src, e.g. opendev.org/org/project", j, s)
			continue
		}
		src := siblingSource(req, clean)
		if !isDir(src) {
			bad("siblings[%d] %q: %s does not exist; list the project in the job's required-projects", j, s, src)
			continue
		}
		p.siblings = append(p.siblings, sibling{name: clean, src: src})
	}
	if len(p.siblings) > 0 {
		names := make([]string, len(p.siblings))
		for j, s := range p.siblings {
			names[j] = s.name
		}
		p.spec.BuildArgs[SiblingsArg] = strings.Join(names, " ")
	}

	// References: <registry>/<repository>:<tag> and the staging tag, both
	// pushed; the same names, with docker_registry, loaded into dockerd.
	if len(errs) == 0 {
		for _, tag := range im.Tags {
			staging, err := req.Zuul.StagingTag(tag)
			if err != nil {
				bad("%v; pass the job's zuul variable", err)
				break
			}
			for _, t := range []string{tag, staging} {
				if req.Registry != nil {
					ref := pushHost + "/" + zuul.StripDockerIO(repo) + ":" + t
					if _, err := reference.ParseNamed(ref); err != nil {
						bad("reference %s is not valid: %v", ref, err)
					}
					p.push = append(p.push, ref)
				}
				local := repo + ":" + t
				if req.DockerRegistry != "" {
					local = strings.TrimSuffix(req.DockerRegistry, "/") + "/" + local
				}
				if _, err := reference.ParseNormalizedNamed(local); err != nil {
					bad("local name %s is not valid (check docker_registry): %v", local, err)
				}
				p.dockerNames = append(p.dockerNames, local)
			}
		}
	}
	if len(errs) > 0 {
		return nil, &ImageError{Image: p.name, Err: fmt.Errorf("%w: %w", ErrInvalidImage, errors.Join(errs...))}
	}
	p.spec.Push = p.push
	return p, nil
}

// siblingSource is where a sibling project is checked out on the node: its
// src_dir from zuul.projects when Zuul lists it, else ~/src/<name>.
func siblingSource(req *Request, name string) string {
	for _, pr := range req.Zuul.Projects {
		if pr.CanonicalName == name && pr.SrcDir != "" {
			return resolveHome(req.Home, pr.SrcDir)
		}
	}
	return filepath.Join(req.Home, "src", name)
}

// checkDockerfile parses the Dockerfile as the dockerfile frontend will and
// checks that the target stage exists, so a syntax error or a wrong target
// fails before anything is built or pushed.
func checkDockerfile(path, target string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the Dockerfile %s does not exist (dockerfile is relative to the context directory)", path)
		}
		return fmt.Errorf("reading Dockerfile: %w", err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return fmt.Errorf("parsing the Dockerfile %s: %w", path, err)
	}
	stages, _, err := instructions.Parse(res.AST, &linter.Linter{})
	if err != nil {
		return fmt.Errorf("parsing the Dockerfile %s: %w", path, err)
	}
	if len(stages) == 0 {
		return fmt.Errorf("the Dockerfile %s has no FROM instruction", path)
	}
	if target == "" {
		return nil
	}
	var names []string
	for _, s := range stages {
		if s.Name != "" {
			if strings.EqualFold(s.Name, target) {
				return nil
			}
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("target stage %q is not in Dockerfile %s, which names no stages (FROM ... AS <name>)", target, path)
	}
	return fmt.Errorf("target stage %q is not in Dockerfile %s; its stages are: %s", target, path, strings.Join(names, ", "))
}

func parsePlatform(s string) (string, error) {
	p, err := platforms.Parse(s)
	if err != nil {
		return "", err
	}
	if !strings.Contains(s, "/") {
		return "", errors.New("no architecture given")
	}
	if p.OS != "linux" {
		return "", fmt.Errorf("OS %q: only linux images are built", p.OS)
	}
	if !slices.Contains(knownArches, p.Architecture) {
		return "", fmt.Errorf("unknown architecture %q (known: %s)", p.Architecture, strings.Join(knownArches, ", "))
	}
	return platforms.Format(platforms.Normalize(p)), nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// resolveHome makes a relative path relative to home, as Zuul's SSH
// connection runs tasks in the remote user's home directory.
func resolveHome(home, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(home, p)
}

// registryHost is the host:port images are pushed to. buildkitd trusts the
// registry's CA by that name in buildkitd.toml: use-buildset-registry
// configures the alias location (zuul-jobs.buildset-registry:<port> for an IP
// host, mapped in /etc/hosts), ensure-buildkit both names. The alias is used
// when it resolves on this node, the registry's own address otherwise.
func registryHost(br *zuul.BuildsetRegistry) string {
	if br.Alias() == strings.Trim(br.Host, "[]") {
		return br.Address()
	}
	if addrs, err := net.LookupHost(br.Alias()); err == nil && len(addrs) > 0 {
		return br.Location()
	}
	return br.Address()
}
