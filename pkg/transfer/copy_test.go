package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
)

func newClient(t *testing.T, opts ...transfer.Option) *transfer.Client {
	t.Helper()
	c, err := transfer.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func endpoints(regs ...transfertest.Registry) []transfer.Option {
	var o []transfer.Option
	for _, r := range regs {
		o = append(o, transfer.WithEndpoint(r.Endpoint()))
	}
	return o
}

// checkSame fails unless dst holds exactly the manifest bytes of src.
func checkSame(t *testing.T, srcReg transfertest.Registry, src string, dstReg transfertest.Registry, dst string) string {
	t.Helper()
	a, da := transfertest.Manifest(t, srcReg, src)
	b, db := transfertest.Manifest(t, dstReg, dst)
	if !bytes.Equal(a, b) || da != db {
		t.Fatalf("%s (%s) and %s (%s) differ", src, da, dst, db)
	}
	return da
}

func TestCopyImageAndIndex(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	img := transfertest.Image(t, false, transfertest.Layer(1, 100_000), transfertest.Layer(2, 50_000))
	ociImg := transfertest.Image(t, true, transfertest.Layer(3, 70_000))
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, transfertest.Layer(4, 60_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, transfertest.Layer(5, 60_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, transfertest.Layer(6, 60_000)))
	list := transfertest.Index(t, false, img, transfertest.PlatformImage(t, false, v1.Platform{OS: "linux", Architecture: "s390x"}, transfertest.Layer(7, 10_000)))
	transfertest.Push(t, src, src.Host+"/myorg/docker:latest", img)
	transfertest.Push(t, src, src.Host+"/myorg/oci:v1", ociImg)
	transfertest.Push(t, src, src.Host+"/myorg/multi:latest", idx)
	transfertest.Push(t, src, src.Host+"/quay.io/myorg/list:1.0", list)

	c := newClient(t, endpoints(src, dst)...)
	cases := []struct {
		src, dst  string
		manifests int
		blobs     int
	}{
		{"myorg/docker:latest", "myorg/docker:latest", 0, 3},
		{"myorg/oci:v1", "other/oci:build_v1", 0, 2},
		{"myorg/multi:latest", "myorg/multi:latest", 3, 6},
		{"quay.io/myorg/list:1.0", "quay.io/myorg/list:1.0", 2, 5},
	}
	var jobs []transfer.Job
	for _, tc := range cases {
		jobs = append(jobs, transfer.Job{Src: src.Host + "/" + tc.src, Dst: dst.Host + "/" + tc.dst})
	}
	rs, err := c.CopyAll(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		r := rs[i]
		d := checkSame(t, src, jobs[i].Src, dst, jobs[i].Dst)
		if r.Digest != d || !r.Changed || r.Manifests != tc.manifests {
			t.Errorf("%s: result %+v, want digest %s, changed, %d manifests", tc.src, r, d, tc.manifests)
		}
		if got := r.BlobsCopied + r.BlobsMounted + r.BlobsExisting; got != tc.blobs {
			t.Errorf("%s: %d blobs placed (%+v), want %d", tc.src, got, r, tc.blobs)
		}
	}
	// The index's children are in the target by digest too.
	for _, m := range mustIndexManifest(t, idx).Manifests {
		if _, d := transfertest.Manifest(t, dst, dst.Host+"/myorg/multi@"+m.Digest.String()); d != m.Digest.String() {
			t.Errorf("child %s missing", m.Digest)
		}
	}

	// A second copy finds every target up to date and writes nothing.
	rs, err = c.CopyAll(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Changed || r.BlobsCopied+r.BlobsMounted+r.BlobsExisting != 0 {
			t.Errorf("second copy of %s: %+v", r.Src, r)
		}
	}
}

func mustIndexManifest(t *testing.T, idx v1.ImageIndex) *v1.IndexManifest {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMountWithinRegistry(t *testing.T) {
	t.Parallel()
	r := transfertest.Distribution(t)
	img := transfertest.Image(t, true, transfertest.Layer(10, 200_000), transfertest.Layer(11, 200_000))
	transfertest.Push(t, r, r.Host+"/a/app:latest", img)
	p, viaProxy := transfertest.Proxy(t, r, "", faultproxy.Config{})
	c := newClient(t, endpoints(viaProxy)...)
	res, err := c.Copy(context.Background(), viaProxy.Host+"/a/app:latest", viaProxy.Host+"/b/app:promoted")
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, r, r.Host+"/a/app:latest", r, r.Host+"/b/app:promoted")
	if res.BlobsMounted != 3 || res.BlobsCopied != 0 || res.BytesCopied != 0 {
		t.Errorf("result %+v: want 3 blobs mounted, none copied", res)
	}
	if st := p.Stats(); st.ByKind["GET blob"] != 0 || st.BytesUp > 10_000 {
		t.Errorf("a copy within one registry read %d blobs and sent %d bytes", st.ByKind["GET blob"], st.BytesUp)
	}
}

// TestSharedLayersUploadedOnce copies images sharing base layers to a
// fresh registry in one operation: each layer crosses the wire once, and
// every other target repository mounts it.
func TestSharedLayersUploadedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		src, dst func(testing.TB) transfertest.Registry
	}{
		{"distribution to distribution", transfertest.Distribution, transfertest.Distribution},
		{"distribution to imagegate", transfertest.Distribution, transfertest.Ours},
		{"imagegate to distribution", transfertest.Ours, transfertest.Distribution},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testSharedLayers(t, tc.src(t), tc.dst(t))
		})
	}
}

func testSharedLayers(t *testing.T, src, dst transfertest.Registry) {
	base := []v1.Layer{transfertest.Layer(20, 300_000), transfertest.Layer(21, 300_000), transfertest.Layer(22, 300_000)}
	var jobs []transfer.Job
	distinct := map[string]int64{}
	for i := range 6 {
		own := transfertest.Layer(uint64(100+i), 50_000)
		img := transfertest.Image(t, false, append(append([]v1.Layer{}, base...), own)...)
		ref := fmt.Sprintf("/org/img%d:latest", i)
		transfertest.Push(t, src, src.Host+ref, img)
		jobs = append(jobs, transfer.Job{Src: src.Host + ref})
		m, _ := img.Manifest()
		distinct[m.Config.Digest.String()] = m.Config.Size
		for _, l := range m.Layers {
			distinct[l.Digest.String()] = l.Size
		}
	}
	var want int64
	for _, s := range distinct {
		want += s
	}
	p, viaProxy := transfertest.Proxy(t, dst, "", faultproxy.Config{})
	for i := range jobs {
		jobs[i].Dst = viaProxy.Host + strings.TrimPrefix(jobs[i].Src, src.Host)
	}
	c := newClient(t, endpoints(src, viaProxy)...)
	rs, err := c.CopyAll(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	var copied, mounted int
	var bytesCopied int64
	for _, r := range rs {
		checkSame(t, src, r.Src, dst, strings.Replace(r.Dst, viaProxy.Host, dst.Host, 1))
		copied += r.BlobsCopied
		mounted += r.BlobsMounted
		bytesCopied += r.BytesCopied
	}
	if copied != len(distinct) || bytesCopied != want {
		t.Errorf("uploaded %d blobs, %d bytes; want each of the %d distinct blobs once, %d bytes", copied, bytesCopied, len(distinct), want)
	}
	if mounted != 6*3-3 {
		t.Errorf("mounted %d blobs, want %d (the shared layers in every target but the first)", mounted, 6*3-3)
	}
	// The proxy saw the bytes: blobs once, plus the manifests.
	if up := p.Stats().BytesUp; up < want || up > want+6*4096 {
		t.Errorf("%d bytes reached the target registry, want %d plus manifests", up, want)
	}
}

func TestSkipsBlobsTheTargetHas(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	shared := transfertest.Layer(30, 120_000)
	transfertest.Push(t, dst, dst.Host+"/org/app:old", transfertest.Image(t, false, shared))
	transfertest.Push(t, src, src.Host+"/org/app:new", transfertest.Image(t, false, shared, transfertest.Layer(31, 1000)))
	c := newClient(t, endpoints(src, dst)...)
	res, err := c.Copy(context.Background(), src.Host+"/org/app:new", dst.Host+"/org/app:new")
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsExisting != 1 || res.BlobsCopied != 2 {
		t.Errorf("result %+v: want the shared layer found, layer and config copied", res)
	}
}

func TestPlanWritesNothing(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	d := transfertest.Push(t, src, src.Host+"/org/app:latest", transfertest.Image(t, false, transfertest.Layer(40, 1000)))
	c := newClient(t, endpoints(src, dst)...)
	jobs := []transfer.Job{{Src: src.Host + "/org/app:latest", Dst: dst.Host + "/org/app:latest"}}
	rs, err := c.Plan(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	if !rs[0].Changed || rs[0].Digest != d {
		t.Errorf("plan %+v, want a change to %s", rs[0], d)
	}
	if _, err := c.Resolve(context.Background(), jobs[0].Dst); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("after Plan the target exists or another error: %v", err)
	}
	if _, err := c.CopyAll(context.Background(), jobs); err != nil {
		t.Fatal(err)
	}
	if rs, err = c.Plan(context.Background(), jobs); err != nil || rs[0].Changed {
		t.Errorf("plan after copy: %+v %v", rs, err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	transfertest.Push(t, src, src.Host+"/org/app:latest", transfertest.Image(t, false, transfertest.Layer(50, 1000)))
	wrong := dst
	wrong.Password = "not-the-password"
	tests := []struct {
		name   string
		regs   []transfertest.Registry
		job    transfer.Job
		is     error
		step   transfer.Step
		status int
		msg    string
	}{
		{"missing tag", []transfertest.Registry{src, dst}, transfer.Job{Src: src.Host + "/org/app:nope", Dst: dst.Host + "/org/app:x"},
			oci.ErrNotFound, transfer.StepSourceManifest, 404, src.Host + "/org/app:nope"},
		{"wrong password", []transfertest.Registry{src, wrong}, transfer.Job{Src: src.Host + "/org/app:latest", Dst: dst.Host + "/org/app:x"},
			oci.ErrDenied, transfer.StepTargetManifest, 401, "check the username and password"},
		{"untrusted certificate", []transfertest.Registry{src}, transfer.Job{Src: src.Host + "/org/app:latest", Dst: dst.Host + "/org/app:x"},
			nil, transfer.StepConnect, 0, "certificate"},
		{"no registry host", nil, transfer.Job{Src: "org/app:latest", Dst: dst.Host + "/org/app:x"},
			nil, transfer.StepParse, 0, "name the registry host"},
		{"transport prefix", nil, transfer.Job{Src: "docker://" + src.Host + "/org/app:latest", Dst: dst.Host + "/org/app:x"},
			nil, transfer.StepParse, 0, "without a transport prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, endpoints(tc.regs...)...)
			_, err := c.Copy(context.Background(), tc.job.Src, tc.job.Dst)
			t.Log(err)
			var te *transfer.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v (%T) is not a *transfer.Error", err, err)
			}
			if te.Step != tc.step || te.StatusCode() != tc.status || (tc.is != nil && !errors.Is(err, tc.is)) ||
				!strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q: step %q status %d; want step %q status %d, matching %v, containing %q",
					err, te.Step, te.StatusCode(), tc.step, tc.status, tc.is, tc.msg)
			}
		})
	}
	t.Run("duplicate target", func(t *testing.T) {
		t.Parallel()
		c := newClient(t)
		_, err := c.CopyAll(context.Background(), []transfer.Job{
			{Src: src.Host + "/a:1", Dst: dst.Host + "/x:1"}, {Src: src.Host + "/b:1", Dst: dst.Host + "/x:1"}})
		if err == nil || !strings.Contains(err.Error(), "jobs 0 and 1 both write this target") {
			t.Errorf("error %v", err)
		}
	})
}

// TestStreams copies a 48 MiB layer and checks the copy allocated far
// less than that (a copy that buffered it would allocate it at least
// once): layers stream from source to target.
func TestStreams(t *testing.T) {
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	const size = 48 << 20
	transfertest.Push(t, src, src.Host+"/org/big:latest", transfertest.Image(t, false, transfertest.Layer(60, size)))
	c := newClient(t, endpoints(src, dst)...)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := c.Copy(context.Background(), src.Host+"/org/big:latest", dst.Host+"/org/big:latest")
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if res.BytesCopied < size {
		t.Fatalf("copied %d bytes, want at least %d", res.BytesCopied, size)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("copying a %d MiB layer allocated %.1f MiB", size>>20, float64(alloc)/(1<<20))
	if alloc > size/2 {
		t.Errorf("copying a %d MiB layer allocated %d MiB: it is buffered, not streamed", size>>20, alloc>>20)
	}
}

// TestSameContentManyTargets copies one image and one index to several
// tags of the same repositories at once: the jobs must not place the same
// blob or child manifest in one repository concurrently (distribution's
// filesystem driver rewrites link files in place, and a concurrent reader
// then sees a torn link).
func TestSameContentManyTargets(t *testing.T) {
	t.Parallel()
	src, dst := transfertest.Distribution(t), transfertest.Distribution(t)
	base := transfertest.Layer(80, 100_000)
	img := transfertest.Image(t, false, base, transfertest.Layer(81, 20_000))
	idx := transfertest.Index(t, true,
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "amd64"}, base, transfertest.Layer(82, 10_000)),
		transfertest.PlatformImage(t, true, v1.Platform{OS: "linux", Architecture: "arm64"}, base, transfertest.Layer(83, 10_000)))
	transfertest.Push(t, src, src.Host+"/org/img:latest", img)
	transfertest.Push(t, src, src.Host+"/org/idx:latest", idx)
	c := newClient(t, endpoints(src, dst)...)
	for round := range 3 {
		var jobs []transfer.Job
		for _, repo := range []string{"x", "y"} {
			for _, tag := range []string{"a", "b", "c"} {
				for _, from := range []string{"img", "idx"} {
					jobs = append(jobs, transfer.Job{Src: src.Host + "/org/" + from + ":latest",
						Dst: fmt.Sprintf("%s/r%d/%s/%s:%s", dst.Host, round, repo, from, tag)})
				}
			}
		}
		rs, err := c.CopyAll(context.Background(), jobs)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		copied := 0
		for _, r := range rs {
			copied += r.BlobsCopied
			checkSame(t, src, r.Src, dst, r.Dst)
		}
		// img: config + 2 layers; idx: 2 configs + 2 own layers (base shared).
		if copied != 7 {
			t.Errorf("round %d: uploaded %d blobs, want the 7 distinct ones once", round, copied)
		}
	}
}
