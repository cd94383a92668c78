package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher/ignorefile"
	"github.com/tonistiigi/fsutil"
)

// Provenance: BuildKit writes an SLSA provenance attestation per platform
// (attest:provenance=mode=max,version=v1, what buildx
// --provenance=mode=max,version=v1 asks) into
// the pushed index, as an attestation manifest beside each platform image
// (annotated vnd.docker.reference.type: attestation-manifest). It records
// every frontend attribute among the build's parameters, so the Zuul labels
// (zuul.Vars.ProvenanceLabels) and LabelContextDigest name the change, its
// gate build and the context; its materials are the base images with the
// digests buildkitd resolved (from the buildset registry, for a speculative
// one, through the registry mirror use-buildset-registry configures).
// BuildKit records a local context by name only, hence LabelContextDigest.

// ProvenanceMode is the attest:provenance value: max records the build's
// full parameters and LLB definition (min leaves out the parameters the
// promote check reads); version v1 is SLSA provenance v1, BuildKit's
// default since v0.24, stated so that a buildkitd of another version
// writes the same (cosign verify-attestation --type slsaprovenance1).
const ProvenanceMode = "mode=max,version=v1"

// LabelContextDigest is the label carrying ContextDigest of the build
// context when provenance is on.
const LabelContextDigest = "org.zuul-ci.context-digest"

// attrProvenance is the frontend attribute asking for provenance.
const attrProvenance = "attest:provenance"

// ContextDigest is a digest of what the build context sends to buildkitd:
// the files of dir less those .dockerignore excludes (Dockerfile's own
// <Dockerfile>.dockerignore beside it first, as the dockerfile frontend
// reads it). It is the SHA-256 of one line per entry, in lexical order of
// the slash-separated path: "<path> <mode, octal> <sha256 of the content>"
// for a regular file, "<path> <mode> -> <target>" for a symbolic link,
// "<path> <mode>" for a directory. Owners and times are left out, so the
// same checkout gives the same digest on every node.
func ContextDigest(ctx context.Context, dir, dockerfile string) (string, error) {
	excludes, err := dockerignore(dir, dockerfile)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	err = fsutil.Walk(ctx, dir, &fsutil.FilterOpt{ExcludePatterns: excludes}, func(path string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(path)
		switch {
		case fi.Mode().IsRegular():
			sum, err := fileDigest(filepath.Join(dir, path))
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s %o %s\n", rel, fi.Mode(), sum)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(dir, path))
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s %o -> %s\n", rel, fi.Mode(), target)
		default:
			fmt.Fprintf(h, "%s %o\n", rel, fi.Mode())
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("computing the digest of the build context %s: %w", dir, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// dockerignore reads the exclude patterns of a build: <dockerfile>.dockerignore,
// else the context's .dockerignore; none when neither exists.
func dockerignore(dir, dockerfile string) ([]string, error) {
	for _, p := range []string{dockerfile + ".dockerignore", filepath.Join(dir, ".dockerignore")} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		pats, err := ignorefile.ReadAll(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		return pats, nil
	}
	return nil, nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
