package zuul

import (
	"fmt"
	"strings"
)

// Image is one entry of docker_images or container_images, with upstream's
// keys. The build, upload, promote and intermediate-registry modules share
// it, so one YAML anchor serves every job, as the upstream docs suggest.
type Image struct {
	// Context is the build context, relative to zuul_work_dir.
	Context string `ansible:"context,required" json:"context"`
	// Repository is the target repository; for container_images it
	// includes the registry host.
	Repository string `ansible:"repository,required" json:"repository"`
	// Tags are the final tags; staging tags are derived from them.
	Tags []string `ansible:"tags" default:"latest" json:"tags"`
	// Path is the directory passed to the build as its context, relative
	// to Context; the Dockerfile is still looked up in Context.
	Path string `ansible:"path" json:"path,omitempty"`
	// Dockerfile is the Dockerfile's name, relative to Context.
	Dockerfile string   `ansible:"dockerfile" aliases:"container_filename" json:"dockerfile,omitempty"`
	Target     string   `ansible:"target" json:"target,omitempty"`
	BuildArgs  []string `ansible:"build_args" json:"build_args,omitempty"`
	Labels     []string `ansible:"labels" json:"labels,omitempty"`
	Siblings   []string `ansible:"siblings" json:"siblings,omitempty"`
	// Arch lists platforms (linux/amd64, linux/arm64, ...) for a
	// multi-platform build that produces one index.
	Arch []string `ansible:"arch" json:"arch,omitempty"`
	// Registry names the credentials entry of a container_images item.
	Registry string `ansible:"registry" json:"registry,omitempty"`
	// Provenance asks BuildKit for an SLSA provenance attestation per
	// platform, naming the Zuul build (ProvenanceLabels). Go callers get
	// false unless they ask; the modules' default is true.
	Provenance bool `ansible:"provenance" default:"true" json:"provenance"`
	// SBOM asks the build for an SPDX SBOM of every platform, attached as
	// an attestation. Go callers get false unless they ask.
	SBOM bool `ansible:"sbom" default:"true" json:"sbom"`
}

// CheckTags fails on an empty tag list or duplicate tags, naming the image.
func (im *Image) CheckTags(param string, i int) error {
	if len(im.Tags) == 0 {
		return fmt.Errorf("%s[%d] (%s): tags is empty; give at least one tag", param, i, im.Repository)
	}
	seen := map[string]bool{}
	for _, t := range im.Tags {
		if t == "" || strings.ContainsAny(t, ":/@ ") {
			return fmt.Errorf("%s[%d] (%s): tag %q is not a valid tag", param, i, im.Repository, t)
		}
		if seen[t] {
			return fmt.Errorf("%s[%d] (%s): tag %q is listed twice", param, i, im.Repository, t)
		}
		seen[t] = true
	}
	return nil
}
