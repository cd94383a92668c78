// Package ocilayout reads and writes an OCI image layout directory
// (image-spec, "OCI Image Layout Specification": oci-layout, index.json,
// blobs/<alg>/<hex>) in which images are named by the
// org.opencontainers.image.ref.name annotation of their index.json entry.
//
// It is where docker_image_build keeps what it built when there is no
// buildset registry, manifests and indexes exactly as BuildKit made them,
// and where docker_image_upload takes them from, so that what is uploaded
// has the digests that were built. An image is added from an OCI layout
// tarball (BuildKit's oci exporter) with Import.
package ocilayout

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/atomicfile"
)

// RefName is the annotation that names an image in index.json.
const RefName = "org.opencontainers.image.ref.name"

// ErrNotFound is a name the layout does not hold.
var ErrNotFound = errors.New("not in the image layout")

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      digest.Digest     `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    json.RawMessage   `json:"platform,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []Descriptor `json:"manifests"`
}

const (
	layoutFile    = "oci-layout"
	layoutVersion = `{"imageLayoutVersion":"1.0.0"}`
	indexFile     = "index.json"
	indexType     = "application/vnd.oci.image.index.v1+json"
)

// Layout is an image layout directory.
type Layout struct {
	dir string
}

// Open opens the layout at dir, which must exist and hold an oci-layout
// file.
func Open(dir string) (*Layout, error) {
	b, err := os.ReadFile(filepath.Join(dir, layoutFile))
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", dir, err)
	}
	var v struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Version == "" {
		return nil, fmt.Errorf("image layout %s: %s is not an OCI layout marker", dir, layoutFile)
	}
	return &Layout{dir: dir}, nil
}

// Create opens the layout at dir, making it (mode 0700: it may hold
// unpublished images) when it does not exist.
func Create(dir string) (*Layout, error) {
	if l, err := Open(dir); err == nil {
		return l, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700); err != nil {
		return nil, fmt.Errorf("creating the image layout %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, indexFile), []byte(`{"schemaVersion":2,"mediaType":"`+indexType+`","manifests":[]}`), 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, layoutFile), []byte(layoutVersion), 0o600); err != nil {
		return nil, err
	}
	return &Layout{dir: dir}, nil
}

// Dir is the layout's directory.
func (l *Layout) Dir() string { return l.dir }

func (l *Layout) readIndex() (*index, error) {
	p := filepath.Join(l.dir, indexFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", l.dir, err)
	}
	var ix index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("image layout %s: %s does not parse: %w", l.dir, p, err)
	}
	return &ix, nil
}

// Resolve returns the descriptor named name (RefName); an absent name is
// an error matching ErrNotFound.
func (l *Layout) Resolve(name string) (Descriptor, error) {
	ix, err := l.readIndex()
	if err != nil {
		return Descriptor{}, err
	}
	for i := len(ix.Manifests) - 1; i >= 0; i-- {
		if ix.Manifests[i].Annotations[RefName] == name {
			return ix.Manifests[i], nil
		}
	}
	return Descriptor{}, fmt.Errorf("%s: %w %s", name, ErrNotFound, l.dir)
}

// BlobPath is the file of a blob.
func (l *Layout) BlobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded()), nil
}

// Open opens the blob d; an absent one is an error matching ErrNotFound.
func (l *Layout) OpenBlob(d digest.Digest) (*os.File, error) {
	p, err := l.BlobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w %s", d, ErrNotFound, l.dir)
	}
	return f, err
}

// Import reads an OCI layout tarball (as BuildKit's oci exporter writes
// it, with one image or index in its index.json), adds its blobs (each
// checked against its digest), and names that image by every one of
// names, replacing what they named before. It returns the image's
// descriptor and, per name, the digest it named before ("" for none).
func (l *Layout) Import(r io.Reader, names []string) (Descriptor, map[string]digest.Digest, error) {
	tr := tar.NewReader(r)
	var top *index
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Descriptor{}, nil, fmt.Errorf("reading the image tarball: %w", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		switch {
		case name == indexFile:
			top = &index{}
			if err := json.NewDecoder(io.LimitReader(tr, 4<<20)).Decode(top); err != nil {
				return Descriptor{}, nil, fmt.Errorf("reading the image tarball's %s: %w", indexFile, err)
			}
		case strings.HasPrefix(name, "blobs/") && h.Typeflag == tar.TypeReg:
			parts := strings.Split(name, "/")
			if len(parts) != 3 {
				return Descriptor{}, nil, fmt.Errorf("image tarball: unexpected entry %s", name)
			}
			if err := l.addBlob(digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2]), tr); err != nil {
				return Descriptor{}, nil, err
			}
		}
	}
	if top == nil || len(top.Manifests) != 1 {
		return Descriptor{}, nil, errors.New("image tarball: want an index.json naming exactly one image")
	}
	d := top.Manifests[0]
	if _, err := l.BlobPath(d.Digest); err != nil {
		return Descriptor{}, nil, fmt.Errorf("image tarball: %w", err)
	}
	ix, err := l.readIndex()
	if err != nil {
		return Descriptor{}, nil, err
	}
	before := map[string]digest.Digest{}
	drop := map[string]bool{}
	for _, n := range names {
		drop[n] = true
		before[n] = ""
	}
	var kept []Descriptor
	for _, m := range ix.Manifests {
		if n := m.Annotations[RefName]; drop[n] {
			before[n] = m.Digest
			continue
		}
		kept = append(kept, m)
	}
	for _, n := range names {
		e := Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform,
			Annotations: map[string]string{RefName: n}}
		kept = append(kept, e)
	}
	ix.SchemaVersion, ix.MediaType, ix.Manifests = 2, indexType, kept
	b, err := json.Marshal(ix)
	if err != nil {
		return Descriptor{}, nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(l.dir, indexFile), b, 0o600); err != nil {
		return Descriptor{}, nil, err
	}
	d.Annotations = nil
	return d, before, nil
}

// addBlob writes the blob d from r unless the layout has it, checking its
// digest before it becomes visible.
func (l *Layout) addBlob(d digest.Digest, r io.Reader) error {
	p, err := l.BlobPath(d)
	if err != nil {
		return fmt.Errorf("image tarball: blob %s: %w", d, err)
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	v := d.Verifier()
	if _, err := io.Copy(io.MultiWriter(f, v), r); err != nil {
		f.Close()
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("image tarball: blob %s does not match its digest", d)
	}
	return os.Rename(f.Name(), p)
}
