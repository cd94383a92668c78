// Package sign speaks cosign's formats, with no I/O: keys (cosign's
// encrypted private keys, PKCS#8, SEC 1 and PKCS#1 PEM, PKIX public keys),
// the simple-signing payload cosign signs for a container image, the
// manifests that carry signatures in a registry (an OCI 1.1 referrer, or
// cosign's sha256-<hex>.sig tag), and in-toto attestations in DSSE
// envelopes (cosign attest) with the Zuul facts of SLSA provenance.
//
// What it writes, `cosign verify --key` accepts; what cosign sign and
// cosign attest write with a key, Verifier accepts. The registry work (which
// form a registry takes, pushing, finding) is the caller's: package publish
// does it through package transfer.
//
// # Keys and hashes
//
// As cosign's key-based signing (sigstore's LoadSignerVerifier with
// SHA-256): ECDSA on any curve signs the SHA-256 of the message (ASN.1
// signature), RSA PKCS #1 v1.5 with SHA-256, Ed25519 the message itself.
// cosign generate-key-pair writes ECDSA P-256 keys encrypted with scrypt
// and NaCl secretbox (PEM type ENCRYPTED SIGSTORE PRIVATE KEY, or ENCRYPTED
// COSIGN PRIVATE KEY from older releases), decrypted here with
// go-securesystemslib's encrypted package, the one cosign uses.
//
// Keys and passwords never appear in errors.
package sign
