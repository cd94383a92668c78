// Package oci is the vocabulary of the registry protocol, shared by every
// client imagegate has and by its registry server: manifest and layer media
// types (OCI image-spec, with Docker's schema 2 equivalents), the error
// codes of the distribution spec and the one error type a registry answer
// becomes, WWW-Authenticate challenges (RFC 9110, section 11.6.1), Link
// pagination (RFC 8288), digests, and the canonical form of a registry
// host.
//
// It is named for the specifications it spells, not for a client or a
// server: package transfer (the registry client layer), package dockerhub
// and package registry (the server) all speak through it, so a media type,
// a challenge or an error code exists once. It does no I/O of its own and
// imports nothing of imagegate.
package oci
