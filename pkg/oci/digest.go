package oci

import (
	// sha256 and sha512 are the digest algorithms of OCI content (image-spec,
	// "Digests"); go-digest computes only those registered here.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// IsDigest reports whether a manifest reference is a digest rather than a
// tag: tags cannot hold a colon (distribution-spec, "Pulling manifests").
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

// ParseDigest parses a digest of an algorithm imagegate computes (sha256 or
// sha512).
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", err
	}
	if !d.Algorithm().Available() {
		return "", fmt.Errorf("digest %s: unsupported algorithm %s", s, d.Algorithm())
	}
	return d, nil
}

// Verify checks content b against the digest want. It returns the digest of
// b (with want's algorithm) and an error when they differ.
func Verify(want digest.Digest, b []byte) (digest.Digest, error) {
	if !want.Algorithm().Available() {
		return "", fmt.Errorf("digest %s: unsupported algorithm %s", want, want.Algorithm())
	}
	got := want.Algorithm().FromBytes(b)
	if got != want {
		return got, fmt.Errorf("content has digest %s, not %s", got, want)
	}
	return got, nil
}
