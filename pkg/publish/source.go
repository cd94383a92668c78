package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/imagegate/imagegate/pkg/ocilayout"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// uploadSource is where Upload takes the images from: the buildset
// registry, or, when the job has none (upstream's release pattern:
// build-docker-image then upload-docker-image on one node), the OCI image
// layout docker_image_build wrote on this host (oci_layout_dir), which
// holds every manifest and index exactly as built.
type uploadSource struct {
	br     *zuul.BuildsetRegistry
	layout string
}

// resolveSource decides the source: the buildset registry when one is
// known, else the image layout, which must exist.
func resolveSource(spec UploadSpec, redact func(string)) (*uploadSource, error) {
	br, err := zuul.ResolveBuildsetRegistry(spec.BuildsetRegistry, &spec.Zuul, redact)
	switch {
	case err == nil:
		return &uploadSource{br: br}, nil
	case !errors.Is(err, zuul.ErrNoBuildsetRegistry):
		return nil, err
	}
	if spec.LayoutDir == "" {
		return nil, err
	}
	if _, lerr := ocilayout.Open(spec.LayoutDir); lerr != nil {
		if errors.Is(lerr, os.ErrNotExist) {
			return nil, fmt.Errorf("%w; and there is no image layout at oci_layout_dir %s, which docker_image_build writes on the host "+
				"where it builds without a buildset registry: run upload-docker-image on the node that ran build-docker-image, after it", err, spec.LayoutDir)
		}
		return nil, fmt.Errorf("oci_layout_dir: %w", lerr)
	}
	return &uploadSource{layout: spec.LayoutDir}, nil
}

// job is the copy of repository:tag (as docker_images gives them) to dst,
// and how results name its source.
func (s *uploadSource) job(repository, tag, dst string) (transfer.Job, string) {
	if s.br == nil {
		name := repository + ":" + tag
		return transfer.Job{SrcLayout: s.layout, Src: name, Dst: dst}, "oci:" + s.layout + ":" + name
	}
	src := s.br.Address() + "/" + zuul.StripDockerIO(repository) + ":" + tag
	return transfer.Job{Src: src, Dst: dst}, src
}

// options are the transfer options the source needs.
func (s *uploadSource) options() []transfer.Option {
	if s.br == nil {
		return nil
	}
	br := s.br
	return []transfer.Option{transfer.WithEndpoint(transfer.Endpoint{Host: br.Address(), Username: br.Username,
		Password: br.Password, CA: []byte(br.Cert), NoSystemRoots: true})}
}

// check refuses a target that is the source.
func (s *uploadSource) check(t *target) error {
	if s.br != nil && strings.EqualFold(s.br.Address(), t.host) {
		return fmt.Errorf("nothing was uploaded: the target registry %s is the buildset registry", t.host)
	}
	return nil
}

// notFound explains a source image that is missing.
func (s *uploadSource) notFound(source string) string {
	if s.br == nil {
		return fmt.Sprintf("%s is not in the image layout %s (did build-docker-image build it on this host, without a buildset registry?)", source, s.layout)
	}
	return fmt.Sprintf("%s is not in the buildset registry (did the build job push it?)", source)
}

// name names the source in messages.
func (s *uploadSource) name() string {
	if s.br == nil {
		return "the image layout " + s.layout
	}
	return "the buildset registry"
}

// manifest reads the manifest or index dgst of the image an upload's
// source names (as job returned it), from the buildset registry or the
// image layout.
func (s *uploadSource) manifest(ctx context.Context, client *transfer.Client, source, dgst string) (*transfer.Manifest, error) {
	if s.br != nil {
		host := s.br.Address()
		r, err := client.Repository(ctx, host, sourceRepo(source, host), false)
		if err != nil {
			return nil, err
		}
		return r.Get(ctx, dgst)
	}
	return transfer.LayoutManifest(ctx, s.layout, dgst)
}
