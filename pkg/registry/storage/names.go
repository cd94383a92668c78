package storage

import (
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
	case Blobs, Manifests, Tags:
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
