package buildset

import (
	"net"
	"slices"
	"strings"
	"testing"
)

func TestSpecNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    Spec
		want    Spec
		wantErr string
	}{
		{name: "defaults", spec: Spec{Root: "/r/", Port: 5000, Host: "h"},
			want: Spec{State: Started, Root: "/r", Port: 5000, Host: "h"}},
		{name: "bracketed IPv6 host", spec: Spec{Root: "/r", Port: 5000, Host: "[fd00:0::2]"},
			want: Spec{State: Started, Root: "/r", Port: 5000, Host: "fd00::2"}},
		{name: "listen deduplicated and canonical", spec: Spec{Root: "/r", Port: 5000, Host: "node1.example.org", Listen: []string{"127.0.0.1", "[::1]", "0:0::1"}},
			want: Spec{State: Started, Root: "/r", Port: 5000, Host: "node1.example.org", Listen: []string{"127.0.0.1", "::1"}}},
		{name: "stop needs no host", spec: Spec{State: Stopped, Root: "/r", Port: 5000},
			want: Spec{State: Stopped, Root: "/r", Port: 5000}},
		{name: "bad state", spec: Spec{State: "running", Root: "/r"}, wantErr: `state "running": must be one of started, stopped, absent`},
		{name: "relative root", spec: Spec{Root: "registry", Host: "h"}, wantErr: `buildset_registry_root "registry" is not an absolute path`},
		{name: "slash root", spec: Spec{Root: "//", Host: "h"}, wantErr: "buildset_registry_root must not be /"},
		{name: "empty root", spec: Spec{Host: "h"}, wantErr: "buildset_registry_root is empty"},
		{name: "port too large", spec: Spec{Root: "/r", Port: 70000, Host: "h"}, wantErr: "buildset_registry_port 70000 is not a TCP port: use 1-65535"},
		{name: "port 0 is refused, not read as the default", spec: Spec{Root: "/r", Port: 0, Host: "h"}, wantErr: "buildset_registry_port 0 is not a TCP port: use 1-65535"},
		{name: "negative port", spec: Spec{Root: "/r", Port: -1, Host: "h"}, wantErr: "buildset_registry_port -1 is not a TCP port"},
		{name: "host with port", spec: Spec{Root: "/r", Port: 5000, Host: "h:5000"}, wantErr: `buildset_registry_host "h:5000" is not a host name or IP address`},
		{name: "host with scheme", spec: Spec{Root: "/r", Port: 5000, Host: "https://h"}, wantErr: "without scheme, port or path"},
		{name: "host with space", spec: Spec{Root: "/r", Port: 5000, Host: "a b"}, wantErr: "buildset_registry_host"},
		{name: "listen not an IP", spec: Spec{Root: "/r", Port: 5000, Host: "h", Listen: []string{"127.0.0.1", "localhost"}}, wantErr: `buildset_registry_listen[1] "localhost" is not an IP address`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.spec.normalize()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tc.want.State || got.Root != tc.want.Root || got.Port != tc.want.Port ||
				got.Host != tc.want.Host || !slices.Equal(got.Listen, tc.want.Listen) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDefaultHost(t *testing.T) {
	t.Parallel()
	h, err := DefaultHost()
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(h)
	if ip == nil || ip.IsLoopback() || !ip.IsGlobalUnicast() {
		t.Fatalf("DefaultHost() = %q, want a routable address of this node", h)
	}
	var found bool
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ip) {
			found = true
		}
	}
	if !found {
		t.Errorf("DefaultHost() = %s is not an address of this node (%v)", h, addrs)
	}
	s, err := Spec{Root: "/r", Port: 5000}.normalize()
	if err != nil || s.Host != h {
		t.Errorf("normalize without host: %+v, %v; want host %s", s, err, h)
	}
}

func TestNewPassword(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		pw, err := newPassword()
		if err != nil {
			t.Fatal(err)
		}
		// 24 bytes of randomness in unpadded base64: 32 characters, 192 bits.
		if len(pw) != 32 || strings.ContainsAny(pw, ":@/+= ") {
			t.Fatalf("password %q: want 32 URL-safe characters", pw)
		}
		if seen[pw] {
			t.Fatal("password repeated")
		}
		seen[pw] = true
	}
}
