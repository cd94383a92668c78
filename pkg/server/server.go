// Package server runs imagegate's registry as a long-lived service (the
// intermediate registry): configuration (config.go), storage, TLS (operator
// certificates or a CA of its own under the state directory), listeners, a
// health endpoint, Prometheus metrics, scheduled prune and graceful
// shutdown. cmd/imagegate-registry is a thin command over it.
//
// Endpoints, on every registry address:
//
//	/v2/..., /auth/token   the registry (pkg/registry)
//	/healthz               200 "ok" when the storage answers, 503 otherwise and while shutting down
//	/metrics               Prometheus text format (pkg/registry/metrics)
//
// and, on monitoring.listen (plain HTTP, for scrapers and load balancers),
// /healthz and /metrics only.
//
// Shutdown (the context given to Run ends, on SIGTERM or SIGINT): /healthz
// turns 503 so load balancers stop sending, requests are still served for
// shutdown_delay (default 0) while they notice, the listeners close, in-flight
// requests may finish until shutdown_timeout; then their connections are
// closed and their contexts cancelled, which makes the storage drivers
// abort what they were writing (nothing partial becomes visible), and Run
// waits for the handlers to return.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/metrics"
	"github.com/imagegate/imagegate/pkg/registry/prune"
	"github.com/imagegate/imagegate/pkg/registry/storage"
	"github.com/imagegate/imagegate/pkg/registry/storage/filesystem"
	"github.com/imagegate/imagegate/pkg/registry/storage/s3"
	"github.com/imagegate/imagegate/pkg/registry/storage/swift"
	"github.com/imagegate/imagegate/pkg/registry/upstream"
)

// Server is a configured registry service. Create it with New, run it
// with Run.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	driver   storage.Driver // the unwrapped driver (prune)
	metrics  *metrics.Metrics
	handler  http.Handler
	tlsCert  tls.Certificate
	caFile   string
	shutdown atomic.Bool
	inflight sync.WaitGroup
	bound    chan struct{}
	addrs    []net.Addr
	monAddr  net.Addr
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// OpenStorage opens the configured storage driver. The S3 and Swift
// drivers check the bucket or container and the credentials first.
func OpenStorage(ctx context.Context, cfg *Config, log *slog.Logger) (storage.Driver, error) {
	switch cfg.Storage.Driver {
	case "s3":
		c := cfg.Storage.S3
		sc := s3.Config{Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region, Endpoint: c.Endpoint, PathStyle: c.PathStyle,
			AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, CAFile: c.CAFile, PartSize: int64(c.PartSize),
			ConsistentListing: c.ConsistentListing, URLExpiry: time.Duration(c.RedirectExpiry)}
		if c.SessionTokenEnv != "" {
			sc.SessionToken = os.Getenv(c.SessionTokenEnv)
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		d, err := s3.New(ctx, sc, s3.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("storage.s3: %w", err)
		}
		return d, nil
	case "swift":
		c := cfg.Storage.Swift
		sc := swift.Config{Container: c.Container, CAFile: c.CAFile, SegmentSize: int64(c.SegmentSize),
			ConsistentListing: c.ConsistentListing, Redirect: c.Redirect, TempURLKey: c.TempURLKey,
			URLExpiry: time.Duration(c.RedirectExpiry),
			Auth: swift.Auth{Cloud: c.Cloud, CloudsFile: c.CloudsFile, AuthURL: c.AuthURL, User: c.User, Key: c.Key,
				Region: c.Region, Interface: c.Interface}}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		d, err := swift.New(ctx, sc, swift.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("storage.swift: %w", err)
		}
		return d, nil
	default:
		d, err := filesystem.New(cfg.Storage.Filesystem.Root)
		if err != nil {
			return nil, fmt.Errorf("storage.filesystem.root: %w", err)
		}
		return d, nil
	}
}

// New opens the storage, prepares TLS and builds the registry. It fails,
// naming the setting, when the storage or the certificate is unusable.
func New(ctx context.Context, cfg *Config, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, metrics: metrics.New(), bound: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if s.driver, err = OpenStorage(ctx, cfg, s.log); err != nil {
		return nil, err
	}
	if err := s.setupTLS(); err != nil {
		return nil, err
	}
	ropts := []registry.Option{registry.WithAnonymousRead(*cfg.AnonymousRead), registry.WithLogger(s.log)}
	for _, u := range cfg.Users {
		ropts = append(ropts, registry.WithUsers(registry.User{Name: u.Name, Password: u.Password, Access: u.Access}))
	}
	if cfg.TokenKey != "" {
		ropts = append(ropts, registry.WithTokenKey([]byte(cfg.TokenKey)))
	}
	if cfg.PublicURL != "" {
		ropts = append(ropts, registry.WithRealm(cfg.PublicURL+"/auth/token"))
	}
	if cfg.Storage.Driver == "s3" && cfg.Storage.S3.Redirect {
		ropts = append(ropts, registry.WithBlobRedirect(true))
		s.log.Info("blob GETs redirect to presigned URLs of the store: clients must reach and trust it",
			"endpoint", cfg.Storage.S3.Endpoint, "expiry", time.Duration(cfg.Storage.S3.RedirectExpiry))
	}
	if sd, ok := s.driver.(*swift.Driver); ok && cfg.Storage.Swift.Redirect {
		ropts = append(ropts, registry.WithBlobRedirect(true))
		s.log.Info("blob GETs redirect to temp URLs of the container: clients must reach and trust Swift",
			"storage_url", sd.StorageURL(), "expiry", time.Duration(cfg.Storage.Swift.RedirectExpiry))
	}
	if len(cfg.PullThrough.Upstreams) > 0 {
		popts, err := pullThroughOptions(cfg.PullThrough)
		if err != nil {
			return nil, err
		}
		ropts = append(ropts, popts...)
		for _, u := range cfg.PullThrough.Upstreams {
			s.log.Info("pull-through cache", "registry", u.Registry, "upstream", u.URL, "account", u.Username != "")
		}
	}
	reg, err := registry.New(s.metrics.Driver(s.driver), ropts...)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.Handle("/metrics", s.metrics)
	mux.Handle("/", s.metrics.Handler(reg))
	s.handler = s.track(mux)
	return s, nil
}

// setupTLS loads the operator's certificate, or issues one from the
// server's own CA under <state_dir>/tls.
func (s *Server) setupTLS() error {
	if s.cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.Cert, s.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("tls.cert, tls.key: %w", err)
		}
		s.tlsCert = cert
		return nil
	}
	dir := filepath.Join(s.cfg.StateDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		if _, statErr := os.Stat(caCert); statErr == nil {
			return fmt.Errorf("state_dir: %s exists but cannot be used: %w", caCert, err)
		}
		if ca, err = pki.NewCA("imagegate registry CA", 10*365*24*time.Hour); err != nil {
			return err
		}
		if err := ca.WriteFiles(caCert, caKey); err != nil {
			return fmt.Errorf("state_dir: writing the CA: %w", err)
		}
		s.log.Info("generated a CA: clients must trust it", "ca", caCert)
	}
	sc, err := ca.Issue(pki.HostNames(s.cfg.TLS.Hosts...), 397*24*time.Hour)
	if err != nil {
		return err
	}
	if s.tlsCert, err = sc.TLSCertificate(); err != nil {
		return err
	}
	s.caFile = caCert
	return nil
}

// CAFile returns the CA clients must trust when the server generated its
// certificate ("" with an operator certificate).
func (s *Server) CAFile() string { return s.caFile }

// Driver returns the storage driver.
func (s *Server) Driver() storage.Driver { return s.driver }

// Metrics returns the server's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Addrs returns the addresses the registry listens on, once Run has bound
// them (it blocks until then, or until ctx ends).
func (s *Server) Addrs(ctx context.Context) []net.Addr {
	select {
	case <-s.bound:
		return s.addrs
	case <-ctx.Done():
		return nil
	}
}

// MonitoringAddr returns the monitoring listener's address once bound (nil
// without one).
func (s *Server) MonitoringAddr(ctx context.Context) net.Addr {
	select {
	case <-s.bound:
		return s.monAddr
	case <-ctx.Done():
		return nil
	}
}

// track counts in-flight requests, so that an abandoning shutdown can
// wait for their handlers to return.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Done()
		h.ServeHTTP(w, r)
	})
}

// healthDigest names a blob that never exists: asking for it checks that
// the storage answers.
var healthDigest = digest.FromString("imagegate health check")

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.shutdown.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "shutting down\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.driver.StatBlob(ctx, healthDigest); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.Warn("health check: storage failed", "error", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "storage unavailable\n")
		return
	}
	io.WriteString(w, "ok\n")
}

// Run serves until ctx ends, then shuts down gracefully. It returns an
// error when a listener cannot be opened or fails.
func (s *Server) Run(ctx context.Context) error {
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for i, a := range s.cfg.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen[%d]: %w", i, err)
		}
		listeners = append(listeners, l)
		s.addrs = append(s.addrs, l.Addr())
	}
	var mon net.Listener
	if s.cfg.Monitoring.Listen != "" {
		var err error
		if mon, err = net.Listen("tcp", s.cfg.Monitoring.Listen); err != nil {
			closeAll()
			return fmt.Errorf("monitoring.listen: %w", err)
		}
		s.monAddr = mon.Addr()
	}
	close(s.bound)

	// Request contexts derive from base, which ends only when in-flight
	// requests are abandoned, not when the listeners close.
	base, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	var servers []*http.Server
	errc := make(chan error, len(listeners)+1)
	for _, l := range listeners {
		srv := &http.Server{
			Handler:           s.handler,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.tlsCert}, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          errLog,
			BaseContext:       func(net.Listener) context.Context { return base },
		}
		servers = append(servers, srv)
		go func() { errc <- srv.ServeTLS(l, "", "") }()
		s.log.Info("serving the registry", "address", l.Addr().String())
	}
	if mon != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", s.serveHealth)
		mux.Handle("/metrics", s.metrics)
		srv := &http.Server{Handler: s.track(mux), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
			BaseContext: func(net.Listener) context.Context { return base }}
		servers = append(servers, srv)
		go func() { errc <- srv.Serve(mon) }()
		s.log.Info("serving metrics and health", "address", mon.Addr().String())
	}

	var pruneDone chan struct{}
	if sched := time.Duration(s.cfg.Prune.Schedule); sched > 0 {
		pruneDone = make(chan struct{})
		go s.schedulePrune(ctx, sched, pruneDone)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("serving: %w", err)
		}
	}
	s.stop(servers, abandon)
	if pruneDone != nil {
		<-pruneDone
	}
	return runErr
}

// stop shuts the servers down: stop accepting, let in-flight requests
// finish within the shutdown timeout, then abandon them and wait for their
// handlers.
func (s *Server) stop(servers []*http.Server, abandon context.CancelFunc) {
	s.shutdown.Store(true)
	if delay := time.Duration(s.cfg.ShutdownDelay); delay > 0 {
		s.log.Info("draining: /healthz answers 503, still serving until the delay is over", "delay", delay)
		time.Sleep(delay)
	}
	timeout := time.Duration(s.cfg.ShutdownTimeout)
	s.log.Info("shutting down", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				s.log.Warn("in-flight requests did not finish in time: abandoning them", "timeout", timeout)
				srv.Close()
			}
		}()
	}
	wg.Wait()
	abandon()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		s.log.Error("request handlers still running a minute after they were abandoned")
	}
	s.log.Info("stopped")
}

// schedulePrune runs prune every interval until ctx ends.
func (s *Server) schedulePrune(ctx context.Context, every time.Duration, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := s.Prune(ctx, false)
		if err != nil && ctx.Err() == nil {
			s.log.Error("scheduled prune failed", "error", err)
			continue
		}
		s.log.Info("scheduled prune", "report", rep.String())
	}
}

// Prune runs the configured retention policy once.
func (s *Server) Prune(ctx context.Context, dryRun bool) (prune.Report, error) {
	return RunPrune(ctx, s.cfg, s.driver, dryRun, s.log)
}

// RunPrune runs the configured retention policy once on driver.
func RunPrune(ctx context.Context, cfg *Config, driver storage.Driver, dryRun bool, log *slog.Logger) (prune.Report, error) {
	pol := prune.Policy{
		Expiration:   time.Duration(cfg.Prune.Expiration),
		GracePeriod:  time.Duration(cfg.Prune.GracePeriod),
		UploadMaxAge: time.Duration(cfg.Prune.UploadMaxAge),
		DryRun:       dryRun,
	}
	return prune.Run(ctx, driver, pol, prune.WithLogger(log))
}

// pullThroughOptions builds the registry's upstream namespaces: one
// client per upstream, with its account and CA. Upstream credentials live
// here only, in the intermediate registry's configuration: buildset
// registries read its cache anonymously.
func pullThroughOptions(pc PullThroughConfig) ([]registry.Option, error) {
	var nss []registry.UpstreamNamespace
	for i, u := range pc.Upstreams {
		var opts []upstream.Option
		if u.Username != "" {
			opts = append(opts, upstream.WithCredentials(u.Username, u.Password))
		}
		if u.CAFile != "" {
			pem, err := os.ReadFile(u.CAFile)
			if err != nil {
				return nil, fmt.Errorf("pull_through.upstreams[%d] (%s): ca_file: %w", i, u.Registry, err)
			}
			opts = append(opts, upstream.WithCA(pem))
		}
		c, err := upstream.New(u.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("pull_through.upstreams[%d] (%s): %w", i, u.Registry, err)
		}
		nss = append(nss, registry.UpstreamNamespace{Registry: u.Registry, Upstream: c})
	}
	out := []registry.Option{registry.WithUpstreams(nss...)}
	if pc.TagTTL != nil {
		out = append(out, registry.WithUpstreamTagTTL(time.Duration(*pc.TagTTL)))
	}
	if pc.FetchTimeout > 0 {
		out = append(out, registry.WithUpstreamFetchTimeout(time.Duration(pc.FetchTimeout)))
	}
	return out, nil
}
