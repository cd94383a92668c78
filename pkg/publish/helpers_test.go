package publish_test

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/hubtest"
	"github.com/imagegate/imagegate/internal/registrytest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// registry is a registry a test pushes to (Push) and inspects (Digest),
// with repository:tag references.
type registry = transfertest.Registry

// image is a busybox image whose content is unique to content, labelled
// as the build labels an image of a change, created at created.
func image(t testing.TB, change, content string, created time.Time) v1.Image {
	t.Helper()
	return testenv.ChangeImage(t, change, "amd64", created, contentLayer(content))
}

// index is a two-platform OCI index of images of a change.
func index(t testing.TB, change, content string, created time.Time) v1.ImageIndex {
	t.Helper()
	return testenv.ChangeIndex(t, change, created, func(arch string) [][]byte { return [][]byte{contentLayer(content + "-" + arch)} })
}

func contentLayer(content string) []byte {
	return testenv.FileLayer("content.txt", []byte(content+"\n"))
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
	return publish.Target{Registry: "docker.io", URL: "https://" + hub.RegistryHost, Cert: string(hub.CACert)}
}

// buildsetRegistry is imagegate's registry as a buildset registry, with the
// connection data the buildset_registry module returns.
func buildsetRegistry(t testing.TB) (registry, *zuul.BuildsetRegistry) {
	t.Helper()
	r := registrytest.New(t)
	return registry{Host: r.Host, Username: r.Username, Password: r.Password, CA: r.CAPEM},
		&zuul.BuildsetRegistry{Host: "127.0.0.1", Port: r.Port, Username: r.Username, Password: r.Password, Cert: string(r.CAPEM)}
}

// checkError fails t unless err is an error whose message holds each of
// want and not secret.
func checkError(t testing.TB, err error, secret string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
	if secret != "" && strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the password: %v", err)
	}
}
