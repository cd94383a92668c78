package sign

import "errors"

// Errors of package sign, for errors.Is.
var (
	// ErrKey is a key that does not parse, or of an unsupported type.
	ErrKey = errors.New("unusable key")
	// ErrPassword is an encrypted private key given without its password,
	// or with a wrong one.
	ErrPassword = errors.New("wrong or missing password for the encrypted private key")
	// ErrBadSignature is a signature that does not verify with the key.
	ErrBadSignature = errors.New("signature does not verify with the key")
	// ErrSubject is a payload or statement about another image.
	ErrSubject = errors.New("signed for another image")
	// ErrFormat is a payload, envelope or statement that does not parse.
	ErrFormat = errors.New("malformed signature data")
)
