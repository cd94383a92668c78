package build

import (
	"context"
	"testing"

	"github.com/imagegate/imagegate/pkg/zuul"
)

func TestBuildPushScratch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.write(t, "app/Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n")
	e.write(t, "app/hello.txt", "hello\n")
	b, err := New(e.bk.Addr)
	if err != nil {
		t.Fatal(err)
	}
	req := e.request(zuul.Image{Context: "app", Repository: "myorg/app", Tags: []string{"latest", "v1"}})
	rep, err := b.Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	for _, tag := range []string{"latest", "v1", "change_42_latest", "change_42_v1"} {
		if d := e.digest(t, "myorg/app:"+tag); d != rep.Images[0].Digest {
			t.Errorf("%s: digest %s, reported %s", tag, d, rep.Images[0].Digest)
		}
	}
	rep2, err := b.Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep2)
	if rep2.Images[0].Digest != rep.Images[0].Digest || rep2.Changed {
		t.Errorf("rebuild: digest %s changed=%v", rep2.Images[0].Digest, rep2.Changed)
	}
}
