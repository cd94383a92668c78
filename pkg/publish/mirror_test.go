package publish_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/publish"
)

// TestMirror copies an index (whole, every platform) and an image from
// Debian's docker-registry, read with its entry's credentials, and an
// image read anonymously (an entry with only a CA), to imagegate's
// registry: the destination digests are the sources', check mode writes
// nothing, a second run changes nothing.
func TestMirror(t *testing.T) {
	t.Parallel()
	src := transfertest.Distribution(t)
	anon := testenv.StartDistribution(t, testenv.DistributionOptions{NoAuth: true})
	dst := transfertest.Ours(t)
	now := time.Now()
	idx := index(t, "", "mirrored index", now)
	img := image(t, "", "mirrored image", now)
	pub := image(t, "", "public image", now)
	src.Push(t, "library/multi:1.0", idx)
	src.Push(t, "library/single:2.0", img)
	transfertest.Push(t, transfertest.Registry{Host: anon.Host, CA: anon.TLS.CA.CertPEM}, anon.Host+"/public/app:3", pub)
	spec := publish.MirrorSpec{
		Images: []publish.MirrorImage{
			{SrcRepository: src.Host + "/library/multi", SrcTag: "1.0", DestRepository: dst.Host + "/mirror/multi", DestTag: "1.0", DestRegistry: dst.Host},
			{SrcRepository: src.Host + "/library/single", SrcTag: "2.0", DestRepository: dst.Host + "/mirror/single", DestTag: "stable", DestRegistry: dst.Host},
			{SrcRepository: anon.Host + "/public/app", SrcTag: "3", DestRepository: dst.Host + "/mirror/app", DestTag: "3", DestRegistry: dst.Host},
		},
		Credentials: publish.ContainerCredentials{
			src.Host:  {Username: src.Username, Password: src.Password, RegistryEndpoint: publish.RegistryEndpoint{Cert: string(src.CA)}},
			anon.Host: {RegistryEndpoint: publish.RegistryEndpoint{Cert: string(anon.TLS.CA.CertPEM)}},
			dst.Host: {Username: dst.Username, Password: dst.Password, Repository: "^" + dst.Host + "/mirror/",
				RegistryEndpoint: publish.RegistryEndpoint{Cert: string(dst.CA)}},
		},
	}
	ctx := context.Background()
	res, err := publish.Mirror(ctx, spec, publish.WithCheckMode(true))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Images) != 3 || dst.Digest(t, "mirror/multi:1.0") != "" {
		t.Fatalf("check mode: %+v", res)
	}
	res, err = publish.Mirror(ctx, spec, publish.WithDiff(true))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"mirror/multi:1.0": testenv.DigestOf(t, idx), "mirror/single:stable": testenv.DigestOf(t, img), "mirror/app:3": testenv.DigestOf(t, pub)}
	for ref, d := range want {
		if got := dst.Digest(t, ref); got != d {
			t.Errorf("%s = %s, want %s", ref, got, d)
		}
	}
	if !res.Changed || res.Images[0].Manifests != 2 || res.Images[0].Digest != want["mirror/multi:1.0"] || !res.Images[0].Changed ||
		res.Images[1].BlobsCopied == 0 || len(res.Diff) != 1 {
		t.Errorf("result: %+v", res)
	}
	raw, _ := transfertest.Manifest(t, src, src.Host+"/library/multi:1.0")
	copied, _ := transfertest.Manifest(t, dst, dst.Host+"/mirror/multi:1.0")
	if string(raw) != string(copied) {
		t.Error("the index's bytes differ")
	}
	res, err = publish.Mirror(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Errorf("second run: %+v", res)
	}
}

// TestMirrorBadInput: each bad input fails before anything is copied,
// naming the image and the cause; no destination tag appears.
func TestMirrorBadInput(t *testing.T) {
	t.Parallel()
	src := transfertest.Ours(t)
	dst := transfertest.Ours(t)
	src.Push(t, "library/app:1", image(t, "", "bad input", time.Now()))
	base := func() publish.MirrorSpec {
		return publish.MirrorSpec{
			Images: []publish.MirrorImage{
				{SrcRepository: src.Host + "/library/app", SrcTag: "1", DestRepository: dst.Host + "/mirror/app", DestTag: "1", DestRegistry: dst.Host},
				{SrcRepository: src.Host + "/library/app", SrcTag: "1", DestRepository: dst.Host + "/mirror/other", DestTag: "1", DestRegistry: dst.Host},
			},
			Credentials: publish.ContainerCredentials{
				src.Host: {Username: src.Username, Password: src.Password, RegistryEndpoint: publish.RegistryEndpoint{Cert: string(src.CA)}},
				dst.Host: {Username: dst.Username, Password: dst.Password, Repository: "^" + dst.Host + "/mirror/",
					RegistryEndpoint: publish.RegistryEndpoint{Cert: string(dst.CA)}},
			},
		}
	}
	tests := []struct {
		name   string
		modify func(s *publish.MirrorSpec)
		want   string
	}{
		{"no credentials entry", func(s *publish.MirrorSpec) { s.Images[1].DestRegistry = "quay.io" },
			`mirror_container_images_images[1] (` + dst.Host + `/mirror/other): container_registry_credentials has no entry for registry "quay.io"`},
		{"destination outside the regex", func(s *publish.MirrorSpec) { s.Images[1].DestRepository = dst.Host + "/other/app" },
			`mirror_container_images_images[1]: ` + dst.Host + `/other/app not permitted by container_registry_credentials["` + dst.Host + `"].repository`},
		{"regex that does not compile", func(s *publish.MirrorSpec) {
			c := s.Credentials[dst.Host]
			c.Repository = "^(" + dst.Host
			s.Credentials[dst.Host] = c
		}, `container_registry_credentials["` + dst.Host + `"].repository "^(` + dst.Host + `" is not a valid regular expression`},
		{"destination in another registry", func(s *publish.MirrorSpec) {
			s.Images[1].DestRepository = "quay.io/mirror/app"
			c := s.Credentials[dst.Host]
			c.Repository = ""
			s.Credentials[dst.Host] = c
		}, `mirror_container_images_images[1] (quay.io/mirror/app:1): dest_repository must include its registry`},
		{"source without a registry", func(s *publish.MirrorSpec) { s.Images[1].SrcRepository = "library/app" },
			`src_repository "library/app" must include its registry`},
		{"missing source tag", func(s *publish.MirrorSpec) { s.Images[1].SrcTag = "2" },
			`mirror_container_images_images[1] (` + src.Host + `/library/app:2 -> ` + dst.Host + `/mirror/other:1)`},
		{"no password", func(s *publish.MirrorSpec) {
			c := s.Credentials[dst.Host]
			c.Password = ""
			s.Credentials[dst.Host] = c
		}, `container_registry_credentials["` + dst.Host + `"] needs username and password to push`},
		{"wrong password", func(s *publish.MirrorSpec) {
			c := s.Credentials[dst.Host]
			c.Password = "wrong-pw-1"
			s.Credentials[dst.Host] = c
		}, dst.Host},
		{"same destination twice", func(s *publish.MirrorSpec) { s.Images[1].DestRepository = s.Images[0].DestRepository },
			"is also the destination of mirror_container_images_images[0]"},
		{"invalid tag", func(s *publish.MirrorSpec) { s.Images[1].DestTag = "a b" }, `dest_tag "a b" is not a valid tag`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base()
			tc.modify(&spec)
			_, err := publish.Mirror(context.Background(), spec)
			checkError(t, err, dst.Password, "nothing was mirrored", tc.want)
			if err != nil && strings.Contains(err.Error(), src.Password) {
				t.Errorf("the error shows a password: %v", err)
			}
			if dst.Digest(t, "mirror/app:1") != "" {
				t.Error("an image was copied")
			}
		})
	}
}
