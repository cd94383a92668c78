// Package pki generates the TLS material of the registries imagegate starts:
// a private certificate authority, and server certificates it signs whose
// subject alternative names cover every name a client may use.
//
// The buildset registry's clients trust the CA, not the server certificate,
// so a restarted registry can issue a new server certificate (for a new
// address, say) without reconfiguring clients. Keys are ECDSA P-256: fast to
// generate (the registry must start in well under a second) and accepted by
// docker, podman, containerd, buildkit and Go clients.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/atomicfile"
)

// BuildsetAlias is the host name the use-buildset-registry role maps to the
// registry's IP address in /etc/hosts, because docker cannot parse an IPv6
// literal in an image reference (moby#39033). Every server certificate
// covers it.
const BuildsetAlias = "zuul-jobs.buildset-registry"

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is the PEM encoding of Cert, what clients must trust.
	CertPEM []byte
}

// NewCA generates a certificate authority valid for validity, named cn.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	key, tmpl, err := newTemplate("CA", cn, validity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// KeyPEM returns the PEM encoding of the CA's private key.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// LoadCA reads a CA written by WriteFiles.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("loading CA: key is not ECDSA")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("loading CA: %s is not a CA certificate", certFile)
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: b}, nil
}

// ServerCert is a server certificate and key, in PEM.
type ServerCert struct {
	CertPEM []byte // leaf certificate followed by the CA certificate
	KeyPEM  []byte
	// Names are the DNS names and IP addresses the certificate covers.
	Names []string
}

// TLSCertificate returns the pair for a tls.Config.
func (s *ServerCert) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(s.CertPEM, s.KeyPEM)
}

// Issue signs a server certificate for hosts (DNS names or IP addresses),
// valid for validity.
func (ca *CA) Issue(hosts []string, validity time.Duration) (*ServerCert, error) {
	key, tmpl, err := newTemplate("server", firstOr(hosts, "imagegate registry"), validity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	var names []string
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.Trim(strings.TrimSpace(h), "[]")
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		names = append(names, h)
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing server certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	chain := append(pemBlock("CERTIFICATE", der), ca.CertPEM...)
	return &ServerCert{CertPEM: chain, KeyPEM: kp, Names: names}, nil
}

// HostNames returns the names a registry on this host may be reached by:
// the host name, every address of every interface, localhost, 127.0.0.1,
// ::1 and BuildsetAlias, plus extra. The result is sorted and free of
// duplicates.
func HostNames(extra ...string) []string {
	set := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, BuildsetAlias: true}
	if h, err := os.Hostname(); err == nil && h != "" {
		set[h] = true
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				set[ipn.IP.String()] = true
			}
		}
	}
	for _, e := range extra {
		if e = strings.Trim(strings.TrimSpace(e), "[]"); e != "" {
			set[e] = true
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CertPool returns a pool holding the certificates in pemData.
func CertPool(pemData []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// newTemplate generates a P-256 key and the part of a certificate template
// every imagegate certificate shares: a random serial, the subject cn of
// organisation imagegate, and validity from five minutes ago (clock skew)
// for validity. what names the certificate in errors.
func newTemplate(what, cn string, validity time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating %s key: %w", what, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	return key, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"imagegate"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
	}, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func firstOr(l []string, d string) string {
	if len(l) > 0 && l[0] != "" {
		return l[0]
	}
	return d
}

// WriteFiles writes the CA certificate (mode 0644) and key (mode 0600), each
// atomically: a reader sees the old file or the new one, never a partial one.
func (ca *CA) WriteFiles(certFile, keyFile string) error {
	kp, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(keyFile, kp, 0o600); err != nil {
		return err
	}
	return atomicfile.WriteFile(certFile, ca.CertPEM, 0o644)
}

func writeFile(path string, data []byte) error { return atomicfile.WriteFile(path, data, 0o600) }
