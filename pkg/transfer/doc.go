// Package transfer is imagegate's registry client layer: every module that
// talks to a registry does so through a Client. It copies container images
// and indexes between registries over the OCI distribution API, as skopeo
// copy --all and crane copy do (the intermediate registry sync, upload),
// and opens repositories for manifest-level work that moves no blob
// (promote's GET and PUT of manifest bytes under another tag, tag deletion
// and listing, push checks). The protocol's vocabulary (media types, error
// codes and *oci.Error, challenges, Link pagination) is package oci's.
//
// The files follow the layers of a request: endpoint.go builds the one
// transport stack of a registry (TLS trust, plain HTTP refused, retries,
// user agent); auth.go pings the registry and exchanges credentials for
// tokens; repository.go speaks the distribution API to one repository;
// client.go holds endpoints, transports and options; copy.go, blobs.go and
// manifest.go are the copy engine.
//
// A copy preserves the manifest bytes, so the digest is the same on both
// sides, and carries every platform of an index. Blobs the target already
// holds are skipped (HEAD first); inside one registry they are mounted from
// the source repository (distribution spec, "Mounting a blob from another
// repository"). Across registries a Client does what go-containerregistry
// alone does not: when several images of one operation share layers, each
// layer is uploaded once, and every other target repository mounts it from
// the repository that received it. Blob transfers run in parallel (bounded
// by WithJobs) and stream from source to target: no layer is held in memory.
//
// Every request goes through the retrying transport of NewTransport
// (go-retryablehttp): network errors and 408/429/500/502/503/504 are retried
// with exponential backoff and jitter, Retry-After is honoured up to a cap,
// and 401/403/404 are never retried. Bodies that cannot be replayed (streamed
// layers) bypass the retry layer, so nothing buffers them; a failed blob
// transfer is restarted as a whole instead. Every operation has a deadline.
//
// Registries are always spoken to over TLS. go-containerregistry treats
// localhost, 127.0.0.0/8 and private addresses as plain-HTTP registries when
// it builds URLs; this package builds its own URLs, always with https, and
// refuses plain HTTP, so TLS registries on loopback, private and IPv6
// addresses work, including paginated tag listing. Credentials and CA
// certificates are per registry and held in memory (Endpoint): nothing is
// read from or written to ~/.docker/config.json or /etc/docker/certs.d. How
// a registry is reached is decided in one function, newEndpointTransport:
// conventions such as certs.d trust or client certificates belong there.
package transfer
