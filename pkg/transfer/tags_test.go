package transfer_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/faultproxy"
	"github.com/imagegate/imagegate/internal/testenv"
	"github.com/imagegate/imagegate/internal/transfertest"
	"github.com/imagegate/imagegate/pkg/transfer"
)

func pushTags(t *testing.T, r transfertest.Registry, repo string, n int) []string {
	t.Helper()
	img := transfertest.Image(t, false, transfertest.Layer(70, 1000))
	var tags []string
	for i := range n {
		tag := "t" + strconv.Itoa(i)
		transfertest.Push(t, r, r.Host+"/"+repo+":"+tag, img)
		tags = append(tags, tag)
	}
	return tags
}

// TestPagedTagsOnLoopbackPrivateAndIPv6 lists the tags of a TLS registry
// two to a page at 127.0.0.1, at [::1] and at the machine's private
// address: the addresses go-containerregistry speaks plain HTTP to when
// it builds URLs, which breaks its paged listing there.
func TestPagedTagsOnLoopbackPrivateAndIPv6(t *testing.T) {
	t.Parallel()
	if !testenv.HasIPv6Loopback() {
		t.Fatal("::1 cannot be bound: the test machine needs IPv6 on loopback")
	}
	r := transfertest.Ours(t)
	want := pushTags(t, r, "org/app", 7)
	listens := []string{"[::1]:0"}
	if ip := testenv.LocalIP(); ip != "127.0.0.1" {
		listens = append(listens, ip+":0")
	}
	opts := []transfer.Option{transfer.WithEndpoint(r.Endpoint()), transfer.WithPageSize(2)}
	hosts := []string{r.Host}
	var proxies []*faultproxy.Proxy
	for _, l := range listens {
		p, via := transfertest.Proxy(t, r, l, faultproxy.Config{})
		proxies = append(proxies, p)
		hosts = append(hosts, via.Host)
		opts = append(opts, transfer.WithEndpoint(via.Endpoint()))
	}
	c := newClient(t, opts...)
	for _, h := range hosts {
		tags, err := c.ListTags(context.Background(), h+"/org/app")
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		slices.Sort(tags)
		if !slices.Equal(tags, want) {
			t.Errorf("%s: tags %v, want %v", h, tags, want)
		}
	}
	for i, p := range proxies {
		if pages := p.Stats().ByKind["GET tags"]; pages != 4 {
			t.Errorf("%s: listing 7 tags two to a page took %d requests, want 4", hosts[i+1], pages)
		}
	}
	// Copies between the names of the registry, through the token flow.
	for i, h := range hosts {
		to := hosts[(i+1)%len(hosts)]
		dst := fmt.Sprintf("%s/copies/app:from%d", to, i)
		if _, err := c.Copy(context.Background(), h+"/org/app:t0", dst); err != nil {
			t.Fatalf("copy from %s to %s: %v", h, to, err)
		}
		checkSame(t, r, r.Host+"/org/app:t0", r, strings.Replace(dst, to, r.Host, 1))
	}
}

// TestDistributionOnEveryAddress copies between the names of one
// docker-registry (listening on every address): 127.0.0.1, [::1], the
// private address.
func TestDistributionOnEveryAddress(t *testing.T) {
	t.Parallel()
	r := transfertest.Distribution(t)
	want := pushTags(t, r, "org/app", 3)
	port := strings.TrimPrefix(r.Host, "127.0.0.1:")
	hosts := []string{"127.0.0.1:" + port, "[::1]:" + port}
	if ip := testenv.LocalIP(); ip != "127.0.0.1" {
		hosts = append(hosts, ip+":"+port)
	}
	var opts []transfer.Option
	for _, h := range hosts {
		rh := r
		rh.Host = h
		opts = append(opts, transfer.WithEndpoint(rh.Endpoint()))
	}
	c := newClient(t, opts...)
	for i, h := range hosts {
		tags, err := c.ListTags(context.Background(), h+"/org/app")
		slices.Sort(tags)
		if err != nil || !slices.Equal(tags, want) {
			t.Errorf("%s: tags %v, %v", h, tags, err)
		}
		to := hosts[(i+1)%len(hosts)]
		dst := fmt.Sprintf("%s/copies/app:from%d", to, i)
		if _, err := c.Copy(context.Background(), h+"/org/app:t0", dst); err != nil {
			t.Fatalf("copy from %s to %s: %v", h, to, err)
		}
		checkSame(t, r, r.Host+"/org/app:t0", r, strings.Replace(dst, to, r.Host, 1))
	}
}
