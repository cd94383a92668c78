package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// descriptor is the part of an OCI descriptor the registry reads.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Data         []byte            `json:"data,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifestDoc is the part of an image manifest or index the registry reads.
type manifestDoc struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptor       `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Manifests     []descriptor      `json:"manifests"`
	Subject       *descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// resolve returns the digest a manifest reference names: the digest itself,
// or the tag's target.
func (rg *Registry) resolve(ctx context.Context, name, ref string) (digest.Digest, error) {
	if isDigestRef(ref) {
		return parseDigest(ref)
	}
	if err := checkTag(ref); err != nil {
		return "", err
	}
	v, err := rg.driver.GetEntry(ctx, name, storage.Tags, ref)
	if errors.Is(err, storage.ErrNotFound) {
		return "", manifestUnknown(name, ref)
	} else if err != nil {
		return "", storageError("reading tag", err)
	}
	dg, err := digest.Parse(string(v))
	if err != nil {
		return "", storageError("reading tag", fmt.Errorf("tag %s of %s holds %q: %w", ref, name, v, err))
	}
	return dg, nil
}

// getManifest serves GET and HEAD /v2/<name>/manifests/<reference> (spec §
// "Pulling manifests"): the manifest as pushed, with the media type it was
// pushed with, whatever the Accept header (a tag names one manifest), and
// Docker-Content-Digest on both methods.
//
// In a repository of an upstream namespace (WithUpstreams), a manifest the
// registry does not hold is pulled through from the upstream (proxy.go).
func (rg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	dg, err := rg.resolve(ctx, rt.name, rt.ref)
	if err == nil {
		err = rg.serveManifest(w, r, rt, dg)
	}
	ns, upRepo := rg.proxy.lookup(rt.name)
	if ns == nil || !oci.HasCode(err, oci.CodeManifestUnknown) {
		return err
	}
	dg, warn, err := rg.pullManifest(ctx, ns, upRepo, rt.name, rt.ref)
	if err != nil {
		return err
	}
	if warn != "" {
		// RFC 7234 §5.5: 110 Response is Stale (agent "imagegate").
		w.Header().Set("Warning", `110 imagegate "`+strings.ReplaceAll(warn, `"`, `'`)+`"`)
	}
	return rg.serveManifest(w, r, rt, dg)
}

// serveManifest sends stored manifest dg of repository rt.name.
func (rg *Registry) serveManifest(w http.ResponseWriter, r *http.Request, rt route, dg digest.Digest) error {
	ctx := r.Context()
	mt, err := rg.driver.GetEntry(ctx, rt.name, storage.Manifests, dg.String())
	if errors.Is(err, storage.ErrNotFound) {
		return manifestUnknown(rt.name, rt.ref)
	} else if err != nil {
		return storageError("reading manifest", err)
	}
	size, err := rg.driver.StatBlob(ctx, dg)
	if errors.Is(err, storage.ErrNotFound) {
		return manifestUnknown(rt.name, rt.ref)
	} else if err != nil {
		return storageError("reading manifest", err)
	}
	var rc io.ReadCloser
	if r.Method != http.MethodHead {
		rc, err = rg.driver.OpenBlob(ctx, dg, 0, -1)
		if errors.Is(err, storage.ErrNotFound) {
			return manifestUnknown(rt.name, rt.ref)
		} else if err != nil {
			return storageError("reading manifest", err)
		}
		defer rc.Close()
	}
	h := w.Header()
	h.Set("Content-Type", string(mt))
	h.Set("Docker-Content-Digest", dg.String())
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("ETag", `"`+dg.String()+`"`)
	if rc == nil {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		rg.log.WarnContext(ctx, "sending manifest failed", "digest", dg, "error", err)
	}
	return nil
}

// putManifest serves PUT /v2/<name>/manifests/<reference> (spec § "Pushing
// Manifests"). The manifest is validated completely (size limit, JSON,
// media type, digests, referenced blobs and manifests present in the
// repository, tags) before anything is written; it is then stored as a blob
// under its digest, listed in the repository, recorded as a referrer of its
// subject, and tagged with the reference (when a tag) and any tag query
// parameters.
func (rg *Registry) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if r.ContentLength > rg.maxManifest {
		return manifestTooLarge(rg.maxManifest)
	}
	body, err := io.ReadAll(io.LimitReader(requestBody(r), rg.maxManifest+1))
	if err != nil {
		return uploadError("reading manifest", err)
	}
	if int64(len(body)) > rg.maxManifest {
		return manifestTooLarge(rg.maxManifest)
	}
	var tags []string
	var dg digest.Digest
	if isDigestRef(rt.ref) {
		if dg, err = parseDigest(rt.ref); err != nil {
			return err
		}
		if got := dg.Algorithm().FromBytes(body); got != dg {
			return newError(oci.CodeDigestInvalid, "the manifest's digest is %s, not %s", got, dg).
				WithDetail(map[string]string{"digest": dg.String()})
		}
	} else {
		if err := checkTag(rt.ref); err != nil {
			return err
		}
		tags = append(tags, rt.ref)
		dg = digest.FromBytes(body)
	}
	for _, t := range r.URL.Query()["tag"] {
		if err := checkTag(t); err != nil {
			return err
		}
		tags = append(tags, t)
	}
	mt, doc, err := parseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	if err := rg.checkReferences(ctx, rt.name, mt, doc); err != nil {
		return err
	}

	if err := rg.driver.PutBlob(ctx, dg, int64(len(body)), bytes.NewReader(body)); err != nil {
		return storageError("storing manifest", err)
	}
	if err := rg.driver.PutEntry(ctx, rt.name, storage.Manifests, dg.String(), []byte(mt)); err != nil {
		return storageError("storing manifest", err)
	}
	h := w.Header()
	if doc.Subject != nil {
		subject, _ := digest.Parse(doc.Subject.Digest) // checked by parseManifest
		ref, _ := json.Marshal(referrerDescriptor(mt, dg, int64(len(body)), doc))
		if err := rg.driver.PutEntry(ctx, rt.name, storage.Referrers(subject), dg.String(), ref); err != nil {
			return storageError("storing referrer", err)
		}
		h.Set("OCI-Subject", subject.String())
	}
	for _, t := range tags {
		if err := rg.driver.PutEntry(ctx, rt.name, storage.Tags, t, []byte(dg.String())); err != nil {
			return storageError("storing tag", err)
		}
		if t != rt.ref {
			h.Add("OCI-Tag", t)
		}
	}
	h.Set("Location", "/v2/"+rt.name+"/manifests/"+dg.String())
	h.Set("Docker-Content-Digest", dg.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// parseManifest checks a manifest's media type and structure and returns
// the media type it is stored with: the Content-Type (without parameters),
// or the document's mediaType when the client sent a generic type or none.
func parseManifest(contentType string, body []byte) (string, *manifestDoc, error) {
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", nil, newError(oci.CodeManifestInvalid, "the manifest is not valid JSON: %v", err)
	}
	mt := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return "", nil, newError(oci.CodeManifestInvalid, "invalid Content-Type %q: %v", contentType, err)
		}
		mt = parsed
	}
	if oci.IsGeneric(mt) {
		mt = doc.MediaType
	}
	if mt == "" {
		switch {
		case doc.Manifests != nil:
			mt = oci.MediaTypeOCIIndex
		case doc.Config != nil:
			mt = oci.MediaTypeOCIManifest
		}
	}
	if doc.MediaType != "" && doc.MediaType != mt {
		return "", nil, newError(oci.CodeManifestInvalid, "the manifest's mediaType %q does not match Content-Type %q", doc.MediaType, mt)
	}
	if doc.SchemaVersion == nil || *doc.SchemaVersion != 2 {
		return "", nil, newError(oci.CodeManifestInvalid, "schemaVersion must be 2 (Docker schema 1 manifests are not supported)")
	}
	switch mt {
	case oci.MediaTypeOCIManifest, oci.MediaTypeDockerManifest:
		if doc.Config == nil {
			return "", nil, newError(oci.CodeManifestInvalid, "an image manifest needs a config descriptor")
		}
		if doc.Manifests != nil {
			return "", nil, newError(oci.CodeManifestInvalid, "an image manifest cannot list manifests")
		}
		if err := checkDescriptor("config", *doc.Config); err != nil {
			return "", nil, err
		}
		for i, l := range doc.Layers {
			if err := checkDescriptor(fmt.Sprintf("layers[%d]", i), l); err != nil {
				return "", nil, err
			}
		}
	case oci.MediaTypeOCIIndex, oci.MediaTypeDockerList:
		if doc.Config != nil || doc.Layers != nil {
			return "", nil, newError(oci.CodeManifestInvalid, "an index cannot have a config or layers")
		}
		for i, m := range doc.Manifests {
			if err := checkDescriptor(fmt.Sprintf("manifests[%d]", i), m); err != nil {
				return "", nil, err
			}
		}
	default:
		return "", nil, newError(oci.CodeManifestInvalid, "unsupported manifest media type %q: use %s, %s, %s or %s",
			mt, oci.MediaTypeOCIManifest, oci.MediaTypeOCIIndex, oci.MediaTypeDockerManifest, oci.MediaTypeDockerList)
	}
	if doc.Subject != nil {
		if err := checkDescriptor("subject", *doc.Subject); err != nil {
			return "", nil, err
		}
	}
	return mt, &doc, nil
}

// checkDescriptor validates a descriptor's digest, size and, when present,
// embedded data.
func checkDescriptor(field string, d descriptor) error {
	dg, err := digest.Parse(d.Digest)
	if err != nil {
		return newError(oci.CodeManifestInvalid, "%s: invalid digest %q: %v", field, d.Digest, err)
	}
	if d.MediaType == "" {
		return newError(oci.CodeManifestInvalid, "%s: mediaType is missing", field)
	}
	if d.Size < 0 {
		return newError(oci.CodeManifestInvalid, "%s: negative size %d", field, d.Size)
	}
	if d.Data != nil {
		if int64(len(d.Data)) != d.Size {
			return newError(oci.CodeManifestInvalid, "%s: data holds %d bytes, size says %d", field, len(d.Data), d.Size)
		}
		if dg.Algorithm().Available() && dg.Algorithm().FromBytes(d.Data) != dg {
			return newError(oci.CodeManifestInvalid, "%s: data does not match digest %s", field, dg)
		}
	}
	return nil
}

// checkReferences checks that the repository holds what a manifest
// references (spec: a registry may reject such a manifest, with
// MANIFEST_BLOB_UNKNOWN): an image's config and distributable layers as
// blobs of the stated size, an index's manifests as manifests. The subject
// may be missing.
func (rg *Registry) checkReferences(ctx context.Context, name, mt string, doc *manifestDoc) error {
	type ref struct {
		d        descriptor
		manifest bool
	}
	var refs []ref
	if doc.Config != nil {
		refs = append(refs, ref{*doc.Config, false})
	}
	for _, l := range doc.Layers {
		if !oci.IsNonDistributable(l.MediaType) {
			refs = append(refs, ref{l, false})
		}
	}
	for _, m := range doc.Manifests {
		refs = append(refs, ref{m, true})
	}
	for _, rf := range refs {
		dg := digest.Digest(rf.d.Digest)
		table, what := storage.Blobs, "blob"
		if rf.manifest {
			table, what = storage.Manifests, "manifest"
		}
		unknown := newError(oci.CodeManifestBlobUnknown, "the manifest references %s %s, which this repository does not hold: push it first", what, dg).
			WithDetail(map[string]string{"digest": dg.String()})
		if _, err := rg.driver.GetEntry(ctx, name, table, dg.String()); errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalid) {
			return unknown
		} else if err != nil {
			return storageError("checking manifest references", err)
		}
		size, err := rg.driver.StatBlob(ctx, dg)
		if errors.Is(err, storage.ErrNotFound) {
			return unknown
		} else if err != nil {
			return storageError("checking manifest references", err)
		}
		if size != rf.d.Size {
			return newError(oci.CodeManifestInvalid, "the manifest gives %s %s a size of %d bytes; it holds %d", what, dg, rf.d.Size, size).
				WithDetail(map[string]string{"digest": dg.String()})
		}
	}
	return nil
}

// referrerDescriptor is the descriptor of a manifest in its subject's
// referrers list (spec § "Listing Referrers"): artifactType is the
// manifest's, or for an image manifest without one its config's media type;
// all annotations are copied.
func referrerDescriptor(mt string, dg digest.Digest, size int64, doc *manifestDoc) descriptor {
	at := doc.ArtifactType
	if at == "" && doc.Config != nil {
		at = doc.Config.MediaType
	}
	return descriptor{MediaType: mt, Digest: dg.String(), Size: size, ArtifactType: at, Annotations: doc.Annotations}
}

// deleteManifest serves DELETE /v2/<name>/manifests/<reference> (spec §
// "Deleting tags", "Deleting Manifests"): a tag reference removes only the
// tag; a digest removes the manifest, then the tags pointing to it and its
// referrer record. Reads tolerate a crash between those steps: a tag or
// referrer whose manifest is gone is not served.
func (rg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if !isDigestRef(rt.ref) {
		if err := checkTag(rt.ref); err != nil {
			return err
		}
		err := rg.driver.DeleteEntry(ctx, rt.name, storage.Tags, rt.ref)
		if errors.Is(err, storage.ErrNotFound) {
			return manifestUnknown(rt.name, rt.ref)
		} else if err != nil {
			return storageError("deleting tag", err)
		}
		return accepted(w)
	}
	dg, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	mt, err := rg.driver.GetEntry(ctx, rt.name, storage.Manifests, dg.String())
	if errors.Is(err, storage.ErrNotFound) {
		return manifestUnknown(rt.name, rt.ref)
	} else if err != nil {
		return storageError("deleting manifest", err)
	}
	subject := rg.subjectOf(ctx, dg, string(mt))
	if err := rg.driver.DeleteEntry(ctx, rt.name, storage.Manifests, dg.String()); errors.Is(err, storage.ErrNotFound) {
		return manifestUnknown(rt.name, rt.ref)
	} else if err != nil {
		return storageError("deleting manifest", err)
	}
	if subject != "" {
		if err := rg.driver.DeleteEntry(ctx, rt.name, storage.Referrers(subject), dg.String()); err != nil && !errors.Is(err, storage.ErrNotFound) {
			rg.log.WarnContext(ctx, "removing a referrer record failed", "repository", rt.name, "digest", dg, "error", err)
		}
	}
	if err := rg.untagDigest(ctx, rt.name, dg); err != nil {
		rg.log.WarnContext(ctx, "removing the tags of a deleted manifest failed", "repository", rt.name, "digest", dg, "error", err)
	}
	return accepted(w)
}

// subjectOf returns the subject of stored manifest dg, or "".
func (rg *Registry) subjectOf(ctx context.Context, dg digest.Digest, mt string) digest.Digest {
	rc, err := rg.driver.OpenBlob(ctx, dg, 0, -1)
	if err != nil {
		return ""
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, max(rg.maxManifest, DefaultMaxManifestSize)*4))
	if err != nil {
		return ""
	}
	var doc manifestDoc
	if json.Unmarshal(body, &doc) != nil || doc.Subject == nil {
		return ""
	}
	s, err := digest.Parse(doc.Subject.Digest)
	if err != nil {
		return ""
	}
	return s
}

// untagDigest removes the tags of repository name that point to dg.
func (rg *Registry) untagDigest(ctx context.Context, name string, dg digest.Digest) error {
	after := ""
	for {
		entries, err := rg.driver.ListEntries(ctx, name, storage.Tags, after, 1000)
		if err != nil {
			return err
		}
		for _, e := range entries {
			v, err := rg.driver.GetEntry(ctx, name, storage.Tags, e.Key)
			if err != nil {
				continue
			}
			if strings.TrimSpace(string(v)) == dg.String() {
				if err := rg.driver.DeleteEntry(ctx, name, storage.Tags, e.Key); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
			}
		}
		if len(entries) < 1000 {
			return nil
		}
		after = entries[len(entries)-1].Key
	}
}

func accepted(w http.ResponseWriter) error {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func manifestUnknown(name, ref string) error {
	return newError(oci.CodeManifestUnknown, "manifest %s is unknown to repository %s", ref, name).
		WithDetail(map[string]string{"name": name, "reference": ref})
}

func manifestTooLarge(limit int64) error {
	return newError(oci.CodeManifestInvalid, "the manifest is larger than the registry's limit of %d bytes", limit).
		WithStatus(http.StatusRequestEntityTooLarge).WithDetail(map[string]int64{"limit": limit})
}
