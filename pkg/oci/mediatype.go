package oci

import "strings"

// Manifest media types: OCI image-spec v1.1 and Docker image manifest v2,
// schema 2. Schema 1 is listed to be recognised and refused.
const (
	MediaTypeOCIManifest         = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex            = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest      = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList          = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// Layer media types whose content registries do not hold: OCI
// non-distributable layers (image-spec, "Non-Distributable Layers") and
// Docker's foreign layers. A manifest may reference them without the
// registry holding them, and copies skip them.
const (
	MediaTypeOCINondistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeOCINondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeOCINondistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerForeign           = "application/vnd.docker.image.rootfs.foreign.diff.tar"
	MediaTypeDockerForeignGzip       = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// AcceptManifests is the Accept header of a manifest request: every type a
// client of imagegate reads, indexes first, so that the registry never
// converts a manifest and a multi-platform tag is never reduced to one
// platform (distribution-spec, "Pulling manifests").
var AcceptManifests = strings.Join([]string{MediaTypeOCIIndex, MediaTypeDockerList, MediaTypeOCIManifest, MediaTypeDockerManifest}, ", ")

// IsIndex reports whether mediaType is a multi-platform index.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerList
}

// IsImageManifest reports whether mediaType is an image manifest (OCI or
// Docker schema 2).
func IsImageManifest(mediaType string) bool {
	return mediaType == MediaTypeOCIManifest || mediaType == MediaTypeDockerManifest
}

// IsSchema1 reports whether mediaType is a Docker schema 1 manifest, which
// cannot be copied or stored unchanged.
func IsSchema1(mediaType string) bool {
	return mediaType == MediaTypeDockerSchema1 || mediaType == MediaTypeDockerSchema1Signed
}

// IsNonDistributable reports whether a layer of mediaType is one registries
// do not hold.
func IsNonDistributable(mediaType string) bool {
	switch mediaType {
	case MediaTypeOCINondistributable, MediaTypeOCINondistributableGzip, MediaTypeOCINondistributableZstd,
		MediaTypeDockerForeign, MediaTypeDockerForeignGzip:
		return true
	}
	return false
}

// MediaType is the media type of a Content-Type header value: without its
// parameters, trimmed and lower-cased.
func MediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// IsGeneric reports whether a Content-Type's media type says nothing of a
// manifest's kind (none, JSON, bytes, text): the manifest's own mediaType
// field, or its shape, tells instead.
func IsGeneric(mediaType string) bool {
	switch mediaType {
	case "", "application/json", "application/octet-stream", "text/plain":
		return true
	}
	return false
}
