package build

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/tonistiigi/fsutil"
)

// Spec is one BuildKit build with the dockerfile frontend, typed. It is the
// only place that knows BuildKit's string-keyed frontend and exporter
// attributes (see BuildKit's docs/reference for dockerfile.v0 and the image
// and docker exporters).
type Spec struct {
	// ContextDir is the build context directory.
	ContextDir string
	// DockerfileDir holds the Dockerfile, named Dockerfile.
	DockerfileDir string
	Dockerfile    string
	// Target is the stage to build; empty builds the last stage.
	Target    string
	BuildArgs map[string]string
	Labels    map[string]string
	// Platforms lists the platforms of a multi-platform build, which
	// produces one index; empty builds for buildkitd's own platform.
	Platforms []string
	// Push lists full references (registry/repository:tag) the image is
	// pushed to, all in one push.
	Push []string
	// Docker, when set, also exports a docker-format tarball of the image
	// under DockerNames, written to the writer Docker returns. Docker
	// receives the image's config digest (the docker image ID), so it can
	// return a discarding writer when the daemon already has the image.
	DockerNames []string
	Docker      func(configDigest string) (io.WriteCloser, error)
	// OCI, when set, also exports the image (the index of a
	// multi-platform build) as an OCI layout tarball, written to the
	// writer it returns.
	OCI func() (io.WriteCloser, error)
	// NoCache builds every step again.
	NoCache bool
	// CompressionLevel is the gzip level of new layers (0 for BuildKit's
	// default).
	CompressionLevel int
	// CacheImports are registry cache references to import; CacheExport
	// the one to export this build's cache to (cache.go).
	CacheImports []string
	CacheExport  string
	// Provenance asks BuildKit for SLSA provenance (ProvenanceMode) in
	// what is pushed or exported as OCI; a docker export for dockerd
	// alone, which keeps no attestations, gets none.
	Provenance bool
	// SBOMGenerator, when set, is the SBOM scanner image BuildKit runs on
	// each platform's result of a push, attaching its SPDX document as an
	// attestation (sbom.go).
	SBOMGenerator string
}

// BuildKit attribute names, in one place.
const (
	frontendDockerfile = "dockerfile.v0"
	localContext       = "context"
	localDockerfile    = "dockerfile"

	attrFilename   = "filename"
	attrTarget     = "target"
	attrPlatform   = "platform"
	attrNoCache    = "no-cache"
	attrBuildArg   = "build-arg:"
	attrLabel      = "label:"
	exporterImage  = client.ExporterImage
	exporterDock   = client.ExporterDocker
	expName        = "name"
	expPush        = "push"
	expCompLevel   = "compression-level"
	expCompression = "compression"

	// Keys of the exporter response and of the metadata the docker
	// exporter hands its output function.
	respImageDigest  = "containerimage.digest"
	respConfigDigest = "containerimage.config.digest"
)

// solveOpt converts the spec to BuildKit's SolveOpt, with the given session
// attachables (the auth provider).
func (s *Spec) solveOpt(attachables []session.Attachable) (client.SolveOpt, error) {
	ctxFS, err := fsutil.NewFS(s.ContextDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("opening build context %s: %w", s.ContextDir, err)
	}
	dfFS, err := fsutil.NewFS(s.DockerfileDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("opening Dockerfile directory %s: %w", s.DockerfileDir, err)
	}
	attrs := map[string]string{attrFilename: s.Dockerfile}
	if s.Target != "" {
		attrs[attrTarget] = s.Target
	}
	if len(s.Platforms) > 0 {
		attrs[attrPlatform] = strings.Join(s.Platforms, ",")
	}
	if s.NoCache {
		attrs[attrNoCache] = ""
	}
	if s.Provenance && (len(s.Push) > 0 || s.OCI != nil) {
		attrs[attrProvenance] = ProvenanceMode
	}
	for _, k := range slices.Sorted(maps.Keys(s.BuildArgs)) {
		attrs[attrBuildArg+k] = s.BuildArgs[k]
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		attrs[attrLabel+k] = s.Labels[k]
	}
	if s.SBOMGenerator != "" && len(s.Push) > 0 {
		attrs[attrSBOM] = sbomAttr(s.SBOMGenerator)
	}
	var exports []client.ExportEntry
	// The docker export goes first: the exporter responses are merged in
	// order, so the image exporter's digest (what was pushed) wins.
	if s.Docker != nil {
		out := s.Docker
		exports = append(exports, client.ExportEntry{
			Type: exporterDock,
			// Uncompressed layers: dockerd unpacks what it loads, and
			// gunzip in dockerd costs more than the larger local stream.
			Attrs: map[string]string{expName: strings.Join(s.DockerNames, ","), expCompression: "uncompressed"},
			Output: func(md map[string]string) (io.WriteCloser, error) {
				return out(md[respConfigDigest])
			},
		})
	}
	if len(s.Push) > 0 {
		a := map[string]string{expName: strings.Join(s.Push, ","), expPush: "true"}
		if s.CompressionLevel > 0 {
			a[expCompLevel] = strconv.Itoa(s.CompressionLevel)
		}
		exports = append(exports, client.ExportEntry{Type: exporterImage, Attrs: a})
	}
	if s.OCI != nil {
		out := s.OCI
		exports = append(exports, client.ExportEntry{Type: client.ExporterOCI,
			Output: func(map[string]string) (io.WriteCloser, error) { return out() }})
	}
	imports, cacheExports := s.cacheOptions()
	return client.SolveOpt{
		Frontend:      frontendDockerfile,
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{localContext: ctxFS, localDockerfile: dfFS},
		Exports:       exports,
		CacheImports:  imports,
		CacheExports:  cacheExports,
		Session:       attachables,
	}, nil
}
