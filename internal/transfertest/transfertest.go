// Package transfertest provides fixtures for tests of image transfer:
// layers and images of pseudo-random content made quickly and
// reproducibly, real registries to put them in (imagegate's own, and
// Debian's docker-registry through internal/testenv), and fault-injecting
// proxies in front of them.
package transfertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
)

// Layer returns a gzip-compressed tar layer holding one file of size
// pseudo-random bytes drawn from seed. The content does not compress, and
// the gzip stream uses stored blocks, so making a large layer costs little
// CPU; the same seed gives the same layer, so images can share layers.
func Layer(seed uint64, size int) v1.Layer {
	rng := rand.NewChaCha8(seedBytes(seed))
	data := make([]byte, size)
	rng.Read(data)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data-%d", seed), Mode: 0o644,
		Size: int64(size), ModTime: time.Unix(0, 0)})
	tw.Write(data)
	tw.Close()
	var gzBuf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gzBuf, gzip.NoCompression)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	diffID, _, _ := v1.SHA256(bytes.NewReader(tarBuf.Bytes()))
	digest, _, _ := v1.SHA256(bytes.NewReader(gzBuf.Bytes()))
	return &layer{gz: gzBuf.Bytes(), tar: tarBuf.Bytes(), diffID: diffID, digest: digest}
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "imagegate transfertest")
	return s
}

type layer struct {
	gz, tar        []byte
	diffID, digest v1.Hash
}

func (l *layer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *layer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *layer) Size() (int64, error)                { return int64(len(l.gz)), nil }
func (l *layer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
func (l *layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.gz)), nil
}
func (l *layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}

// Image returns a linux/amd64 image of layers. oci selects the OCI
// manifest and config media types instead of Docker's.
func Image(t testing.TB, oci bool, layers ...v1.Layer) v1.Image {
	t.Helper()
	return PlatformImage(t, oci, v1.Platform{OS: "linux", Architecture: "amd64"}, layers...)
}

// PlatformImage is Image for another platform.
func PlatformImage(t testing.TB, oci bool, p v1.Platform, layers ...v1.Layer) v1.Image {
	t.Helper()
	base := empty.Image
	if oci {
		base = mutate.MediaType(base, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Index returns an index of images, each described with its config's
// platform. oci selects the OCI index media type instead of Docker's list.
func Index(t testing.TB, oci bool, images ...v1.Image) v1.ImageIndex {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	if !oci {
		idx = mutate.IndexMediaType(idx, types.DockerManifestList)
	}
	for _, img := range images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	return idx
}

// Registry is a registry as a client sees it: where, as whom, trusting
// what.
type Registry struct {
	// Host is host:port, an IPv6 address in brackets.
	Host               string
	Username, Password string
	// CA is the PEM of the CA that signed the registry's certificate.
	CA []byte
}

// Endpoint is the registry as a transfer.Endpoint, trusting only its CA.
func (r Registry) Endpoint() transfer.Endpoint {
	return transfer.Endpoint{Host: r.Host, Username: r.Username, Password: r.Password, CA: r.CA, NoSystemRoots: true}
}

// Roots is a pool holding the registry's CA.
func (r Registry) Roots() *x509.CertPool {
	p, err := pki.CertPool(r.CA)
	if err != nil {
		panic(err)
	}
	return p
}

// Distribution starts Debian's docker-registry with TLS and htpasswd
// authentication (internal/testenv) and returns it as a Registry on
// 127.0.0.1.
func Distribution(t testing.TB) Registry {
	t.Helper()
	d := testenv.StartDistribution(t, testenv.DistributionOptions{})
	return Registry{Host: d.Host, Username: d.Username, Password: d.Password, CA: d.TLS.CA.CertPEM}
}

// Ours starts imagegate's own registry (internal/registrytest: token
// authentication, filesystem storage) and returns it as a Registry on
// 127.0.0.1.
func Ours(t testing.TB) Registry {
	t.Helper()
	rg := registrytest.New(t)
	return Registry{Host: rg.Host, Username: rg.Username, Password: rg.Password, CA: rg.CAPEM}
}

// Push writes an image or index to ref (host/repository:tag, on r) with
// go-containerregistry, and returns its digest.
func Push(t testing.TB, r Registry, ref string, content remote.Taggable) string {
	t.Helper()
	nref, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(r.authenticator()), remote.WithTransport(r.transport())}
	var d v1.Hash
	switch c := content.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(nref, c, opts...)
		d, _ = c.Digest()
	case v1.Image:
		err = remote.Write(nref, c, opts...)
		d, _ = c.Digest()
	default:
		t.Fatalf("Push: %T is neither an image nor an index", content)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return d.String()
}

// Manifest fetches the raw manifest of ref and its digest with
// go-containerregistry: an independent check of what a copy wrote.
func Manifest(t testing.TB, r Registry, ref string) (raw []byte, digest string) {
	t.Helper()
	desc, err := ManifestErr(r, ref)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return desc.Manifest, desc.Digest.String()
}

// ManifestErr is Manifest returning the error, for checks that something
// is absent.
func ManifestErr(r Registry, ref string) (*remote.Descriptor, error) {
	nref, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, err
	}
	return remote.Get(nref, remote.WithAuth(r.authenticator()), remote.WithTransport(r.transport()))
}

// CheckBlobs reads back every blob of the image or index at ref (host/
// repository:tag on r: configs and layers of every platform) and fails
// the test unless each has the size and digest its manifest gives. It
// hashes each digest once: blobs seen by an earlier call with the same
// seen map are only checked to be there. It returns the bytes read.
func CheckBlobs(t testing.TB, r Registry, ref string, seen map[string]bool) int64 {
	t.Helper()
	nref, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(r.authenticator()), remote.WithTransport(r.transport())}
	desc, err := remote.Get(nref, opts...)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	var images []v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatalf("%s: child %s: %v", ref, m.Digest, err)
			}
			images = append(images, img)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, img)
	}
	var n int64
	for _, img := range images {
		m, err := img.Manifest()
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			blob, err := remote.Layer(nref.Context().Digest(d.Digest.String()), opts...)
			if err != nil {
				t.Fatalf("%s: blob %s: %v", ref, d.Digest, err)
			}
			if seen[d.Digest.String()] {
				if size, err := blob.Size(); err != nil || size != d.Size {
					t.Fatalf("%s: blob %s: size %d (%v), want %d", ref, d.Digest, size, err, d.Size)
				}
				continue
			}
			rc, err := blob.Compressed()
			if err != nil {
				t.Fatalf("%s: blob %s: %v", ref, d.Digest, err)
			}
			h := sha256.New()
			got, err := io.Copy(h, rc)
			rc.Close()
			// The registry's own reader checks too; the hash here is
			// independent of it.
			if err != nil || got != d.Size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.Digest.String() {
				t.Fatalf("%s: blob %s reads back %d bytes with sha256 %x (%v), want %d bytes", ref, d.Digest, got, h.Sum(nil), err, d.Size)
			}
			seen[d.Digest.String()] = true
			n += got
		}
	}
	return n
}

func (r Registry) authenticator() authn.Authenticator {
	if r.Username == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.Username, Password: r.Password}
}

func (r Registry) transport() http.RoundTripper {
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.Roots(), MinVersion: tls.VersionTLS12}}
}

// Proxy starts a fault-injecting proxy in front of r on listen (default
// 127.0.0.1:0) and returns the proxy and the registry as seen through it:
// same credentials, the proxy's own CA. The proxy stops at the end of the
// test.
func Proxy(t testing.TB, r Registry, listen string, cfg faultproxy.Config) (*faultproxy.Proxy, Registry) {
	t.Helper()
	ca, err := pki.NewCA("faultproxy test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue(pki.HostNames(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := sc.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(r.Host, faultproxy.Options{Listen: listen, Certificate: cert, UpstreamRoots: r.Roots()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, Registry{Host: p.Host(), Username: r.Username, Password: r.Password, CA: ca.CertPEM}
}
