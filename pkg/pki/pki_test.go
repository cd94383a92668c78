package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

func TestIssueVerifies(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hosts := HostNames("192.0.2.7", "[2001:db8::1]")
	sc, err := ca.Issue(hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"localhost", "127.0.0.1", "::1", BuildsetAlias, "192.0.2.7", "2001:db8::1"} {
		if !slices.Contains(sc.Names, want) {
			t.Errorf("certificate does not cover %s: %v", want, sc.Names)
		}
	}
	block, _ := pem.Decode(sc.CertPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := CertPool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", BuildsetAlias, "2001:db8::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "elsewhere.example", Roots: pool}); err == nil {
		t.Error("certificate verified for a name it does not cover")
	}
}

func TestServeTLS(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := sc.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	pool, _ := CertPool(ca.CertPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
	if _, _, err := net.SplitHostPort(srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCARoundTrip(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kp, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(dir+"/ca.crt", ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(dir+"/ca.key", kp); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCA(dir+"/ca.crt", dir+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) {
		t.Error("loaded CA differs")
	}
	if _, err := LoadCA(dir+"/ca.crt", dir+"/missing"); err == nil {
		t.Error("missing key accepted")
	}
}
