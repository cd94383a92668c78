package testenv

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/imagegate/imagegate/pkg/pki"

	"github.com/imagegate/imagegate/internal/daemon"
)

// S3Server is an S3-compatible object store started for a test (versitygw
// or SeaweedFS), listening on loopback over TLS with a root key pair. It is
// stopped at the end of the test.
type S3Server struct {
	*daemon.Process
	// Kind is "versitygw" or "seaweedfs".
	Kind string
	// Endpoint is the URL clients use: https://127.0.0.1:<port>.
	Endpoint string
	// Port is the TCP port.
	Port int
	// Region is the region the server answers for.
	Region string
	// AccessKey and SecretKey are the root credentials (random).
	AccessKey, SecretKey string
	// CAFile is the PEM of the CA that signed the server's certificate.
	CAFile string
	// CAPEM is CAFile's content.
	CAPEM []byte
	// Dir is the server's private directory (data, logs, certificates).
	Dir string

	t     testing.TB
	start func() *daemon.Process
}

// StartVersitygw starts versitygw (VERSITYGW, built by tests/setup/deps.sh)
// with its posix backend on a temporary directory, over TLS on a free
// loopback port, with random root credentials and an internal IAM store
// (so tests can add users), and waits until it answers. It serves
// path-style requests on 127.0.0.1 and virtual-host requests on
// <bucket>.localhost (see DialLoopback).
func StartVersitygw(t testing.TB) *S3Server {
	t.Helper()
	bin := Tool(t, "VERSITYGW", "versitygw")
	dir := ShortTempDir(t)
	// *.localhost for virtual-host addressing (<bucket>.localhost).
	tl := NewTLS(t, dir, "*.localhost")
	s := &S3Server{Kind: "versitygw", Region: "us-east-1", Dir: dir, t: t,
		AccessKey: "ig" + RandomString(t, 8), SecretKey: RandomString(t, 20),
		CAFile: tl.CAFile, CAPEM: tl.CA.CertPEM}
	for _, d := range []string{"data", "iam"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.Port = FreePort(t)
	s.Endpoint = "https://127.0.0.1:" + strconv.Itoa(s.Port)
	args := []string{
		"--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", "127.0.0.1:" + strconv.Itoa(s.Port),
		"--cert", tl.CertFile, "--key", tl.KeyFile,
		"--region", s.Region,
		"--iam-dir", filepath.Join(dir, "iam"),
		"--virtual-domain", "localhost",
		"--quiet",
		"posix", filepath.Join(dir, "data"),
	}
	s.start = func() *daemon.Process {
		return StartProcess(t, "versitygw", exec.Command(bin, args...), dir)
	}
	s.Process = s.start()
	s.waitReady()
	return s
}

func (s *S3Server) waitReady() {
	s.t.Helper()
	client := s.HTTPClient()
	WaitFor(s.t, s.Kind, 60*time.Second, s.Process, func() error {
		resp, err := client.Get(s.Endpoint + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// Restart starts the server again after Stop, on the same port and data.
func (s *S3Server) Restart() {
	s.t.Helper()
	s.Process.Stop()
	s.Process = s.start()
	s.waitReady()
}

// HTTPClient returns an HTTP client trusting the server's CA.
func (s *S3Server) HTTPClient() *http.Client {
	pool, _ := pki.CertPool(s.CAPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr}
}

// Client returns an S3 client for the root user.
func (s *S3Server) Client() *s3.Client {
	return s.ClientFor(s.AccessKey, s.SecretKey)
}

// ClientFor returns an S3 client with the given credentials (path-style
// addressing, the server's endpoint and CA).
func (s *S3Server) ClientFor(access, secret string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     s.Region,
		BaseEndpoint:               aws.String(s.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(access, secret, ""),
		HTTPClient:                 s.HTTPClient(),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates a bucket owned by the root user and returns its
// name.
func (s *S3Server) CreateBucket(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("%s: creating bucket %s: %v", s.Kind, name, err)
	}
	return name
}

// NewBucket creates a bucket with a random name and returns the name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	return s.CreateBucket(t, "ig-"+RandomString(t, 6))
}

// CreateUser adds a user with no access to any bucket (role "user") and
// returns its key pair. Only versitygw supports it.
func (s *S3Server) CreateUser(t testing.TB) (access, secret string) {
	t.Helper()
	if s.Kind != "versitygw" {
		t.Fatalf("CreateUser: not supported on %s", s.Kind)
	}
	access, secret = "u"+RandomString(t, 8), RandomString(t, 20)
	bin := Tool(t, "VERSITYGW", "versitygw")
	Run(t, []string{"SSL_CERT_FILE=" + s.CAFile}, bin, "admin", "-a", s.AccessKey, "-s", s.SecretKey,
		"--er", s.Endpoint, "create-user", "-a", access, "-s", secret, "-r", "user")
	return access, secret
}

// waitWritable waits until an object can be written to a new bucket
// (SeaweedFS accepts requests before its volume server has registered).
func (s *S3Server) waitWritable() {
	s.t.Helper()
	bucket := "ig-ready-" + RandomString(s.t, 4)
	client := s.Client()
	created := false
	WaitFor(s.t, s.Kind+" writable", 2*time.Minute, s.Process, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if !created {
			if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
				return err
			}
			created = true
		}
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("ready"),
			Body: strings.NewReader("ready")})
		return err
	})
}

// DialLoopback is a DialContext that connects every host name to
// 127.0.0.1 (same port), so virtual-host S3 requests to
// <bucket>.localhost reach a test server whatever the resolver thinks of
// such names.
func DialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}
