// Package s3 is the storage.Driver that keeps a registry's data in a bucket
// of any S3-compatible object store (AWS S3, Ceph RGW, SeaweedFS,
// versitygw, ...), so several stateless registry replicas can serve one
// bucket.
//
// Object layout, under an optional key prefix:
//
//	blobs/<alg>/<hex>                      blob content (manifests included), immutable
//	repositories/<name>/_<table>/<key>     one entry of a repository: the object's body is its value
//	catalog/<name>/_                       marker: the repository holds (or held) a manifest
//	uploads/<id>/session                   upload session record (JSON), replaced by conditional PUT
//	uploads/<id>/segments/<offset>-<nonce> content received by the session, in segments
//	probe/<random>                         written and deleted by New to check write access
//
// Every object appears whole or not at all: small objects are single PUTs,
// large blobs are multipart uploads completed only after the content has
// been read to its end (and so verified by the registry). A failed or
// cancelled write aborts its multipart upload and leaves nothing under a
// final name.
//
// # Upload sessions
//
// A session is a record in the bucket, not in a process, so any replica can
// continue it. Each chunk (AppendUpload) is stored as new segment objects
// under a random nonce, then the record is replaced with a conditional PUT
// (If-Match on the ETag read before): of two replicas appending at the same
// offset, exactly one wins, and the loser deletes its segments. Segments
// are PartSize bytes, except a small remainder at the end of a chunk; small
// trailing segments are merged into the next full segment when more data
// arrives (read back from the bucket, never buffered across requests), so
// every segment but the trailing ones is at least 5 MiB, the S3 minimum
// part size. A commit assembles the blob server-side: a multipart upload
// on the blob's key whose parts are copies of the segments (UploadPartCopy),
// the small trailing ones merged into the last part. No layer is ever held
// in memory: a request buffers at most two segments.
//
// # Listings
//
// Some S3 implementations keep deleted keys or prefixes in listings for
// minutes (SeaweedFS keeps an emptied prefix for about two). So a listing is
// not trusted alone: every key ListEntries returns is confirmed with a
// HEAD request, and Repositories confirms each catalog marker against the
// repository's manifests, unless Config.ConsistentListing says the store's
// listings are exact. The catalog markers exist because deriving the
// repository names from the entries would mean listing every entry of the
// registry.
package s3

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// MinPartSize is the smallest part S3 accepts in a multipart upload, except
// the last one.
const MinPartSize = 5 << 20

// DefaultPartSize is the size of the segments and parts the driver writes
// unless Config.PartSize says otherwise.
const DefaultPartSize = 8 << 20

// DefaultURLExpiry is how long a presigned blob URL is valid unless
// Config.URLExpiry says otherwise: long enough for a client to follow the
// redirect it came in, even after retries, and short-lived as a capability.
const DefaultURLExpiry = 20 * time.Minute

// MaxURLExpiry is the longest validity S3 allows for a presigned URL
// (signature version 4).
const MaxURLExpiry = 7 * 24 * time.Hour

// maxParts is the number of parts a multipart upload may have.
const maxParts = 10000

// Config says which bucket to use and how to reach it.
type Config struct {
	// Bucket is the bucket's name (required). It must exist: the driver
	// never creates it.
	Bucket string
	// Prefix is prepended to every key ("" for the bucket's root; a
	// trailing slash is added when missing).
	Prefix string
	// Region is the bucket's region (default us-east-1, which S3-compatible
	// stores accept whatever their own setting).
	Region string
	// Endpoint is the store's URL (https://s3.example.org:9000); empty
	// for AWS S3.
	Endpoint string
	// PathStyle addresses the bucket as <endpoint>/<bucket>/<key> instead
	// of the virtual-host form <bucket>.<endpoint>/<key>. Most
	// self-hosted stores need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are static credentials. When both
	// are empty the AWS default chain is used (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, the shared credentials file, web identity,
	// the instance role).
	AccessKeyID, SecretAccessKey string
	// SessionToken goes with temporary static credentials.
	SessionToken string
	// CAFile is a PEM file of CAs to trust for the endpoint, in addition
	// to the system's.
	CAFile string
	// PartSize is the size of segments and multipart parts, at least
	// MinPartSize (default DefaultPartSize). A request buffers at most two.
	PartSize int64
	// ConsistentListing trusts the store's listings to drop deleted keys at
	// once (AWS S3 has since December 2020; versitygw and Ceph RGW do), so
	// listed entries are not confirmed one by one with HEAD requests. Leave
	// it false for stores whose listings lag behind deletes (SeaweedFS).
	ConsistentListing bool
	// URLExpiry is how long the presigned URLs of BlobURL are valid
	// (default DefaultURLExpiry, at most MaxURLExpiry). URLs signed with
	// temporary credentials stop working when those expire, if sooner.
	URLExpiry time.Duration
}

// Driver is a storage.Driver on an S3 bucket.
type Driver struct {
	client    *s3.Client
	bucket    string
	prefix    string
	partSize  int64
	log       *slog.Logger
	bufs      sync.Pool
	parallel  int
	transport http.RoundTripper
	trustList bool
	presign   *s3.PresignClient
	urlExpiry time.Duration
}

var (
	_ storage.Driver           = (*Driver)(nil)
	_ storage.ChunkMinLengther = (*Driver)(nil)
	_ storage.BlobURLer        = (*Driver)(nil)
)

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets the logger for warnings about cleanups that failed
// (the operation itself succeeded). Default: discard.
func WithLogger(l *slog.Logger) Option { return func(d *Driver) { d.log = l } }

// WithParallelism sets how many requests one operation sends at once when
// it confirms listings or copies parts (default 16).
func WithParallelism(n int) Option { return func(d *Driver) { d.parallel = max(n, 1) } }

// WithTransport sets the HTTP transport (tests: fault injection). Default:
// a transport trusting the system CAs and Config.CAFile.
func WithTransport(rt http.RoundTripper) Option { return func(d *Driver) { d.transport = rt } }

// New returns a driver on cfg's bucket after checking that the bucket
// exists and that the credentials can read and write it (a HeadBucket, a
// one-key listing, and an object written and deleted under probe/). The
// errors name the setting to fix.
func New(ctx context.Context, cfg Config, opts ...Option) (*Driver, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 storage: bucket is not set")
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, errors.New("s3 storage: access_key_id and secret_access_key must be set together (or neither, for the AWS default credential chain)")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize || cfg.PartSize > 5<<30 {
		return nil, fmt.Errorf("s3 storage: part size %d is outside [%d, %d] (5 MiB to 5 GiB)", cfg.PartSize, MinPartSize, 5<<30)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.URLExpiry == 0 {
		cfg.URLExpiry = DefaultURLExpiry
	}
	if cfg.URLExpiry < time.Second || cfg.URLExpiry > MaxURLExpiry {
		return nil, fmt.Errorf("s3 storage: URL expiry %s is outside [1s, %s] (S3 accepts presigned URLs valid for at most 7 days)", cfg.URLExpiry, MaxURLExpiry)
	}
	prefix := strings.TrimPrefix(cfg.Prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	d := &Driver{bucket: cfg.Bucket, prefix: prefix, partSize: cfg.PartSize, parallel: 16, trustList: cfg.ConsistentListing,
		urlExpiry: cfg.URLExpiry}
	for _, o := range opts {
		o(d)
	}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d.bufs.New = func() any { b := make([]byte, d.partSize); return &b }

	httpClient, err := d.httpClient(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.Region),
		config.WithHTTPClient(httpClient),
		config.WithRetryMaxAttempts(3),
	}
	if cfg.AccessKeyID != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: loading the AWS configuration: %w", err)
	}
	d.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// S3-compatible stores do not all speak the trailing-checksum
		// (aws-chunked) encoding the SDK uses by default; the payload is
		// signed with its SHA-256 instead, and TLS protects it on the wire.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
		if d.transport != nil {
			// Set here rather than in LoadDefaultConfig, which insists on
			// a buildable client when AWS_CA_BUNDLE is set.
			o.HTTPClient = &http.Client{Transport: d.transport}
		}
	})
	// The presign client signs with the client's options: the same
	// endpoint, addressing style and credentials.
	d.presign = s3.NewPresignClient(d.client, s3.WithPresignExpires(d.urlExpiry))
	if err := d.probe(ctx, cfg); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Driver) httpClient(caFile string) (*awshttp.BuildableClient, error) {
	var pool *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("s3 storage: ca_file: %w", err)
		}
		pool, err = x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 storage: ca_file %s holds no PEM certificate", caFile)
		}
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 64
		if pool != nil {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = pool
		}
	}), nil
}

// probe checks the bucket and the credentials, and explains failures in
// terms of the configuration.
func (d *Driver) probe(ctx context.Context, cfg Config) error {
	where := fmt.Sprintf("bucket %q", cfg.Bucket)
	if cfg.Endpoint != "" {
		where += " at " + cfg.Endpoint
	}
	explain := func(op string, err error) error {
		code, status := errorCode(err)
		switch {
		case code == "NoSuchBucket" || (status == http.StatusNotFound && op == "HeadBucket"):
			return fmt.Errorf("s3 storage: %s does not exist: check bucket (and endpoint, region)", where)
		case code == "InvalidAccessKeyId":
			return fmt.Errorf("s3 storage: %s: the access key ID is unknown to the store: check access_key_id (or AWS_ACCESS_KEY_ID)", where)
		case code == "SignatureDoesNotMatch":
			return fmt.Errorf("s3 storage: %s: the secret access key is wrong: check secret_access_key (or AWS_SECRET_ACCESS_KEY)", where)
		case code == "AccessDenied" || status == http.StatusForbidden:
			return fmt.Errorf("s3 storage: access to %s denied (%s): check the credentials (access_key_id, secret_access_key) and the bucket's policy", where, op)
		case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || status == http.StatusMovedPermanently:
			return fmt.Errorf("s3 storage: %s is in another region: check region", where)
		case status == 0 && isNetworkError(err):
			return fmt.Errorf("s3 storage: cannot reach the store for %s: check endpoint: %w", where, err)
		}
		return fmt.Errorf("s3 storage: %s: %s: %w", where, op, err)
	}
	// HeadBucket has no body, so its 403 cannot tell a wrong key from a
	// policy; a listing returns the error code, so it goes first.
	if _, err := d.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: aws.String(d.prefix), MaxKeys: aws.Int32(1)}); err != nil {
		return explain("ListObjectsV2", err)
	}
	if _, err := d.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &d.bucket}); err != nil {
		return explain("HeadBucket", err)
	}
	key := d.key("probe/" + nonce())
	if _, err := d.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: &key, Body: strings.NewReader("probe")}); err != nil {
		return explain("PutObject", err)
	}
	if _, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: &key}); err != nil {
		return explain("DeleteObject", err)
	}
	return nil
}

// ChunkMinLength implements storage.ChunkMinLengther: the S3 minimum part
// size, so clients send chunks that map onto parts without merging.
func (d *Driver) ChunkMinLength() int64 { return MinPartSize }

// Bucket returns the bucket's name.
func (d *Driver) Bucket() string { return d.bucket }

// Client returns the S3 client (for tests and tools that inspect the
// bucket).
func (d *Driver) Client() *s3.Client { return d.client }

// key returns the full key of a relative key.
func (d *Driver) key(rel string) string { return d.prefix + rel }

// nonce returns 64 random bits, hex-encoded.
func nonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errorCode returns the S3 error code and HTTP status of err ("" and 0 when
// there was no response).
func errorCode(err error) (string, int) {
	var code string
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return code, re.HTTPStatusCode()
	}
	return code, 0
}

func isNetworkError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// isNotFound reports whether err is S3's answer for a missing key.
func isNotFound(err error) bool {
	code, status := errorCode(err)
	return status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound"
}

// isPreconditionFailed reports whether a conditional write lost.
func isPreconditionFailed(err error) bool {
	code, status := errorCode(err)
	return status == http.StatusPreconditionFailed || code == "PreconditionFailed" || status == http.StatusConflict || code == "ConditionalRequestConflict"
}

// wrap describes a failed S3 call: ErrNotFound for a missing key,
// ErrNoSpace for a full store, ErrUnavailable for an outage (no response,
// other 5xx, throttling), the
// context's error when it ended, the S3 error otherwise.
func wrap(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if isNotFound(err) {
		return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	code, status := errorCode(err)
	// 507 is how a store says it is full (MinIO's XMinioStorageFull,
	// Swift's S3 middleware); no retry fixes that.
	if status == http.StatusInsufficientStorage || code == "XMinioStorageFull" {
		return fmt.Errorf("%s: %w: %w", what, storage.ErrNoSpace, err)
	}
	if status == 0 || status >= 500 || status == http.StatusTooManyRequests {
		return fmt.Errorf("%s: %w: %w", what, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// cleanupContext returns a context for cleanups after a failure: not
// cancelled with the request's, but bounded.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}
