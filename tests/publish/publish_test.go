// Package publish tests docker_image_upload and docker_image_promote end to
// end: the module binaries through real ansible-playbook, against
// imagegate's registry as buildset registry, and as target emulated Docker
// Hub (its web API emulated, in front of imagegate's registry) and Debian's
// docker-registry; through fault-injecting proxies; and a promote killed
// midway and run again.
package publish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/ansibletest"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
)

// lib holds both module binaries, built once as `make build` builds them,
// beside their documentation: ANSIBLE_LIBRARY.
var lib ansibletest.Library

func TestMain(m *testing.M) {
	ansibletest.Main(m, &lib, "docker_image_upload", "docker_image_promote")
}

// registry is a registry as a client sees it: tests push to it (Push) and
// inspect it (Digest) with repository:tag references.
type registry = transfertest.Registry

// image is a busybox image unique to content, labelled as the build labels
// an image of change, created at created.
func image(t testing.TB, change, content string, created time.Time) v1.Image {
	t.Helper()
	return testenv.ChangeImage(t, change, "amd64", created, contentLayer(content))
}

// index is a two-platform OCI index of images of change.
func index(t testing.TB, change, content string) v1.ImageIndex {
	t.Helper()
	return testenv.ChangeIndex(t, change, time.Now(), func(arch string) [][]byte { return [][]byte{contentLayer(content + "-" + arch)} })
}

func contentLayer(content string) []byte {
	return testenv.FileLayer("content.txt", []byte(content+"\n"))
}

// playbook runs a playbook of testdata on localhost with vars, and returns
// its output.
func playbook(t *testing.T, name string, vars map[string]any) string {
	t.Helper()
	return ansibletest.Playbook(t, lib, filepath.Join("testdata", name), vars, "-vvv")
}

// runModule runs a module binary on args, as Ansible does, and returns its
// result; it fails t when the module fails.
func runModule(t *testing.T, mod string, args map[string]any) map[string]any {
	t.Helper()
	res, out, err := runModuleErr(t, mod, args)
	if err != nil {
		t.Fatalf("%s: %v\n%s", mod, err, out)
	}
	return res
}

func runModuleErr(t *testing.T, mod string, args map[string]any) (map[string]any, []byte, error) {
	t.Helper()
	cmd, out := moduleCommand(t, mod, args)
	err := cmd.Run()
	var res map[string]any
	if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
		return nil, out.Bytes(), fmt.Errorf("output is not JSON (%v, exit %v)", jerr, err)
	}
	if failed, _ := res["failed"].(bool); failed {
		return res, out.Bytes(), fmt.Errorf("failed: %v", res["msg"])
	}
	return res, out.Bytes(), nil
}

// moduleCommand prepares a module run: the args file written, stdout
// collected in out, stderr discarded into the test log on failure.
func moduleCommand(t *testing.T, mod string, args map[string]any) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "args")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lib.Bin(mod), f)
	var out bytes.Buffer
	cmd.Stdout = &out
	return cmd, &out
}
