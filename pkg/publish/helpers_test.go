package publish_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/pkg/dockerhub/hubtest"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/publish/distribution"
	"github.com/imagegate/imagegate/pkg/registry/registrytest"
	"github.com/imagegate/imagegate/pkg/zuul"
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
	repo, tag, _ := strings.Cut(ref, ":")
	c, err := distribution.New(r.Host, distribution.WithTransport(r.transport(t)),
		distribution.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Repository(context.Background(), repo, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Head(context.Background(), tag)
	if errors.Is(err, distribution.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest
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

func imagegateRegistry(t testing.TB) registry {
	t.Helper()
	r := registrytest.New(t)
	return registry{Host: r.Host, Username: r.Username, Password: r.Password, CA: r.CAPEM}
}

// dockerHub is Docker Hub emulated in front of imagegate's registry: the
// registry API through hub.RegistryHost, the web API at hub.URL.
func dockerHub(t testing.TB) (registry, *hubtest.Server) {
	t.Helper()
	backend := registrytest.New(t)
	hub := hubtest.New(t, hubtest.Backend{Host: backend.Host, CA: backend.CAPEM, Username: backend.Username, Password: backend.Password})
	return registry{Host: hub.RegistryHost, Username: backend.Username, Password: backend.Password, CA: hub.CACert}, hub
}

func hubTarget(hub *hubtest.Server) publish.Target {
	return publish.Target{Registry: "docker.io", URL: "https://" + hub.RegistryHost, HubURL: hub.URL, CA: hub.CACert}
}

// buildsetRegistry is imagegate's registry as a buildset registry, with the
// connection data the buildset_registry module returns.
func buildsetRegistry(t testing.TB) (registry, *zuul.BuildsetRegistry) {
	t.Helper()
	r := registrytest.New(t)
	return registry{Host: r.Host, Username: r.Username, Password: r.Password, CA: r.CAPEM},
		&zuul.BuildsetRegistry{Host: "127.0.0.1", Port: r.Port, Username: r.Username, Password: r.Password, Cert: string(r.CAPEM)}
}
