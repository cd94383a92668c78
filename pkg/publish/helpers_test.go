package publish_test

import (
	"crypto/tls"
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

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/tests/testenv"
)

// registry is a registry a test pushes to and inspects.
type registry struct {
	Host, Username, Password string
	CA                       []byte
}

func (r registry) transport(t testing.TB) http.RoundTripper {
	t.Helper()
	pool, err := pki.CertPool(r.CA)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
}

func (r registry) opts(t testing.TB) []remote.Option {
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}), remote.WithTransport(r.transport(t))}
}

func (r registry) ref(t testing.TB, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host + "/" + s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// push writes an image or an index under repo:tag.
func (r registry) push(t testing.TB, ref string, x any) {
	t.Helper()
	var err error
	switch v := x.(type) {
	case v1.Image:
		err = remote.Write(r.ref(t, ref), v, r.opts(t)...)
	case v1.ImageIndex:
		err = remote.WriteIndex(r.ref(t, ref), v, r.opts(t)...)
	default:
		t.Fatalf("push %T", x)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// digest returns the digest repo:tag points to, or "" if it does not exist.
func (r registry) digest(t testing.TB, ref string) string {
	t.Helper()
	d, err := remote.Head(r.ref(t, ref), r.opts(t)...)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

func distributionRegistry(t testing.TB) registry {
	t.Helper()
	d := testenv.StartDistribution(t, testenv.DistributionOptions{})
	return registry{Host: d.Host, Username: d.Username, Password: d.Password, CA: d.TLS.CA.CertPEM}
}

// image is a busybox image whose content is unique to content, labelled
// as the build labels an image of a change, created at created.
func image(t testing.TB, change, content string, created time.Time) v1.Image {
	t.Helper()
	img := testenv.BusyboxImage(t, testenv.FileLayer("content.txt", []byte(content+"\n")))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	if change != "" {
		cf.Config.Labels = map[string]string{"org.zuul-ci.change": change, "org.zuul-ci.change_url": "https://review.example/" + change}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// index is a two-platform OCI index of images of a change.
func index(t testing.TB, change, content string, created time.Time) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img := image(t, change, content+"-"+arch, created)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Architecture = arch
		img, _ = mutate.ConfigFile(img, cf)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

func digestOf(t testing.TB, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
