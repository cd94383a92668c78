package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

// PEM block types of private keys cosign reads and writes.
const (
	// PEMSigstoreEncrypted is what cosign generate-key-pair writes.
	PEMSigstoreEncrypted = "ENCRYPTED SIGSTORE PRIVATE KEY"
	// PEMCosignEncrypted is what cosign releases before 2.0 wrote.
	PEMCosignEncrypted = "ENCRYPTED COSIGN PRIVATE KEY"
	pemPKCS8           = "PRIVATE KEY"
	pemEC              = "EC PRIVATE KEY"
	pemRSA             = "RSA PRIVATE KEY"
	pemPublic          = "PUBLIC KEY"
)

// Signer signs with one private key as cosign does.
type Signer struct {
	key crypto.Signer
}

// ParsePrivateKey reads a PEM private key: cosign's encrypted format
// (password required; an empty password is tried when none is given,
// since cosign generate-key-pair accepts one), or an unencrypted PKCS #8,
// SEC 1 (EC PRIVATE KEY) or PKCS #1 (RSA PRIVATE KEY) key. Errors match
// ErrKey or ErrPassword and never hold the key or password.
func ParsePrivateKey(pemBytes, password []byte) (*Signer, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found (give the PEM text of the private key)", ErrKey)
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, fmt.Errorf("%w: more than one PEM block (give exactly one private key)", ErrKey)
	}
	var key any
	var err error
	switch block.Type {
	case PEMSigstoreEncrypted, PEMCosignEncrypted:
		der, derr := encrypted.Decrypt(block.Bytes, password)
		if derr != nil {
			if len(password) == 0 {
				return nil, fmt.Errorf("%w: the key is encrypted (%s) and no password was given", ErrPassword, block.Type)
			}
			return nil, fmt.Errorf("%w: decrypting the %s failed (wrong password, or a damaged key)", ErrPassword, block.Type)
		}
		key, err = x509.ParsePKCS8PrivateKey(der)
	case pemPKCS8:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemEC:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case pemRSA:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case pemPublic:
		return nil, fmt.Errorf("%w: this is a public key; signing needs the private key", ErrKey)
	default:
		return nil, fmt.Errorf("%w: unsupported PEM type %q (want %s, %s, %s or %s)", ErrKey, block.Type, PEMSigstoreEncrypted, pemPKCS8, pemEC, pemRSA)
	}
	if err != nil {
		// x509's messages describe the structure, never the key bytes.
		return nil, fmt.Errorf("%w: parsing the %s: %v", ErrKey, block.Type, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return &Signer{key: k}, nil
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits; use at least 2048", ErrKey, k.N.BitLen())
		}
		return &Signer{key: k}, nil
	case ed25519.PrivateKey:
		return &Signer{key: k}, nil
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T (want ECDSA, RSA or Ed25519)", ErrKey, key)
	}
}

// Sign signs msg: ECDSA and RSA sign its SHA-256, Ed25519 the message.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	if k, ok := s.key.(ed25519.PrivateKey); ok {
		return ed25519.Sign(k, msg), nil
	}
	h := sha256.Sum256(msg)
	return s.key.Sign(rand.Reader, h[:], crypto.SHA256)
}

// Verifier returns the verifier of the signer's public key.
func (s *Signer) Verifier() *Verifier { return &Verifier{key: s.key.Public()} }

// PublicKeyPEM is the signer's public key as cosign writes it (cosign.pub).
func (s *Signer) PublicKeyPEM() []byte { return s.Verifier().PEM() }

// Verifier checks signatures with one public key as cosign verify --key
// does.
type Verifier struct {
	key crypto.PublicKey
}

// ParsePublicKey reads a PEM public key (PKIX, as cosign.pub holds), or
// takes the public key of a certificate.
func ParsePublicKey(pemBytes []byte) (*Verifier, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found (give the PEM text of the public key, as cosign.pub holds)", ErrKey)
	}
	var key any
	var err error
	switch block.Type {
	case pemPublic:
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = c.PublicKey
		}
	case PEMSigstoreEncrypted, PEMCosignEncrypted, pemPKCS8, pemEC, pemRSA:
		return nil, fmt.Errorf("%w: this is a private key; verification takes the public key (cosign.pub)", ErrKey)
	default:
		return nil, fmt.Errorf("%w: unsupported PEM type %q (want PUBLIC KEY)", ErrKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: parsing the %s: %v", ErrKey, block.Type, err)
	}
	switch key.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return &Verifier{key: key}, nil
	}
	return nil, fmt.Errorf("%w: unsupported public key type %T", ErrKey, key)
}

// Verify checks sig over msg; a mismatch is ErrBadSignature.
func (v *Verifier) Verify(msg, sig []byte) error {
	h := sha256.Sum256(msg)
	ok := false
	switch k := v.key.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, h[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}

// PEM is the public key in PKIX PEM.
func (v *Verifier) PEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(v.key)
	if err != nil {
		return nil // the types accepted all marshal
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der})
}

// KeyID is a short, stable name of the public key for messages: the first
// 16 hex digits of the SHA-256 of its PKIX encoding.
func (v *Verifier) KeyID() string {
	der, _ := x509.MarshalPKIXPublicKey(v.key)
	h := sha256.Sum256(der)
	return fmt.Sprintf("%x", h[:8])
}
