package storage

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// MaxRepositoryLength is the longest repository name accepted: the OCI
// distribution spec requires names under 256 characters.
const MaxRepositoryLength = 255

// repositoryRE is the repository name grammar of the OCI distribution spec
// (§ "Pulling manifests"): lower-case components separated by slashes. A
// component cannot be "." or "..", nor start with "_", so names map onto
// paths and keys without escaping and cannot climb out of a directory.
var repositoryRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// ValidateRepository checks a repository name against the OCI grammar.
func ValidateRepository(name string) error {
	if name == "" || len(name) > MaxRepositoryLength || !repositoryRE.MatchString(name) {
		return fmt.Errorf("%w: repository %q", ErrInvalid, name)
	}
	return nil
}

// ValidateKey checks a table key: non-empty, at most 255 bytes of
// [A-Za-z0-9_.:+=-], not starting with '.'. Tags and digests qualify.
func ValidateKey(key string) error {
	if key == "" || len(key) > 255 || key[0] == '.' {
		return fmt.Errorf("%w: key %q", ErrInvalid, key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_.:+=-", c) >= 0:
		default:
			return fmt.Errorf("%w: key %q", ErrInvalid, key)
		}
	}
	return nil
}

// ValidateTable checks a table name: one of the constants, or a Referrers
// table.
func ValidateTable(t Table) error {
	switch t {
	case Blobs, Manifests, Tags, UpstreamTags:
		return nil
	}
	rest, ok := strings.CutPrefix(string(t), "referrers/")
	if !ok {
		return fmt.Errorf("%w: table %q", ErrInvalid, t)
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok || ValidateKey(alg) != nil || ValidateKey(enc) != nil {
		return fmt.Errorf("%w: table %q", ErrInvalid, t)
	}
	return nil
}

// uploadIDRE matches the upload session IDs NewUploadID makes.
var uploadIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// NewUploadID returns a new upload session ID: a random (version 4) UUID,
// 122 random bits, so that a session cannot be guessed.
func NewUploadID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// ValidUploadID reports whether id has the shape NewUploadID gives: a
// driver refuses any other before it becomes a path or a key.
func ValidUploadID(id string) bool { return uploadIDRE.MatchString(id) }
