// Package metrics measures imagegate's registry for Prometheus: an HTTP
// middleware counting requests by route, method and status, request and
// response bytes and durations (blob uploads in their own histogram), a
// storage.Driver decorator counting storage operations and failures, and
// the handler serving them in the Prometheus text exposition format
// (version 0.0.4).
//
// The format is written here rather than with client_golang: the registry
// needs a dozen counters and two histograms, the format is small and
// stable, and the server binary stays free of client_golang's dependency
// tree. Label values are bounded: routes are the API's endpoint kinds (never
// repository names or digests), methods the HTTP verbs the API uses, and
// statuses the codes the registry answers with.
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagegate/imagegate/pkg/registry"
)

// Metrics holds the registry's counters. Create it with New; it is safe
// for concurrent use.
type Metrics struct {
	mu        sync.Mutex
	requests  map[[3]string]uint64 // route, method, status
	bytesIn   map[string]uint64    // route
	bytesOut  map[string]uint64    // route
	durations map[[2]string]*histogram
	uploads   map[string]*histogram // method
	storOps   map[string]uint64     // operation
	storErrs  map[[2]string]uint64  // operation, kind
	inflight  int64
	started   time.Time
}

// DurationBuckets are the upper bounds (seconds) of the request duration
// histogram.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// UploadBuckets are the upper bounds (seconds) of the blob upload duration
// histogram: layers take longer than API calls.
var UploadBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// New returns empty metrics.
func New() *Metrics {
	return &Metrics{
		requests:  map[[3]string]uint64{},
		bytesIn:   map[string]uint64{},
		bytesOut:  map[string]uint64{},
		durations: map[[2]string]*histogram{},
		uploads:   map[string]*histogram{},
		storOps:   map[string]uint64{},
		storErrs:  map[[2]string]uint64{},
		started:   time.Now(),
	}
}

// knownMethods bounds the method label.
var knownMethods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true,
	http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true}

func methodLabel(m string) string {
	if knownMethods[m] {
		return m
	}
	return "OTHER"
}

// Handler wraps next (the registry) and records every request.
func (m *Metrics) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route, method := registry.Route(r.URL.Path), methodLabel(r.Method)
		m.mu.Lock()
		m.inflight++
		m.mu.Unlock()
		var in *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			in = &countingBody{ReadCloser: r.Body}
			r.Body = in
		}
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			d := time.Since(start).Seconds()
			m.mu.Lock()
			defer m.mu.Unlock()
			m.inflight--
			m.requests[[3]string{route, method, strconv.Itoa(cw.status)}]++
			if in != nil {
				m.bytesIn[route] += uint64(in.n)
			}
			m.bytesOut[route] += uint64(cw.n)
			key := [2]string{route, method}
			h := m.durations[key]
			if h == nil {
				h = newHistogram(DurationBuckets)
				m.durations[key] = h
			}
			h.observe(d)
			if isUpload(route, method) {
				u := m.uploads[method]
				if u == nil {
					u = newHistogram(UploadBuckets)
					m.uploads[method] = u
				}
				u.observe(d)
			}
		}()
		next.ServeHTTP(cw, r)
	})
}

// isUpload reports whether a request carries blob content: a monolithic
// POST, a PATCH chunk or the closing PUT.
func isUpload(route, method string) bool {
	return (route == "uploads" && method == http.MethodPost) ||
		(route == "upload" && (method == http.MethodPatch || method == http.MethodPut))
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
	wrote  bool
}

func (c *countingWriter) WriteHeader(status int) {
	if !c.wrote {
		c.status, c.wrote = status, true
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.wrote = true
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's copy path for blob bodies.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	c.wrote = true
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(c.ResponseWriter, src)
	}
	c.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// storageOp records a storage operation and, when err is a failure of the
// store (not an expected answer such as "not found"), its kind.
func (m *Metrics) storageOp(op string, kind string) {
	m.mu.Lock()
	m.storOps[op]++
	if kind != "" {
		m.storErrs[[2]string{op, kind}]++
	}
	m.mu.Unlock()
}

// ServeHTTP serves the metrics in the Prometheus text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, m.Text())
}

// Text returns the metrics in the Prometheus text format.
func (m *Metrics) Text() string {
	var b strings.Builder
	m.mu.Lock()
	defer m.mu.Unlock()

	header(&b, "imagegate_registry_requests_total", "counter", "Requests answered, by API route, method and status.")
	for _, k := range sortedKeys(m.requests) {
		sample(&b, "imagegate_registry_requests_total", labels("route", k[0], "method", k[1], "status", k[2]), float64(m.requests[k]))
	}
	header(&b, "imagegate_registry_request_bytes_total", "counter", "Bytes received in request bodies, by API route.")
	for _, k := range sortedKeys(m.bytesIn) {
		sample(&b, "imagegate_registry_request_bytes_total", labels("route", k), float64(m.bytesIn[k]))
	}
	header(&b, "imagegate_registry_response_bytes_total", "counter", "Bytes sent in response bodies, by API route.")
	for _, k := range sortedKeys(m.bytesOut) {
		sample(&b, "imagegate_registry_response_bytes_total", labels("route", k), float64(m.bytesOut[k]))
	}
	header(&b, "imagegate_registry_request_duration_seconds", "histogram", "Time to answer a request, by API route and method.")
	for _, k := range sortedKeys(m.durations) {
		m.durations[k].write(&b, "imagegate_registry_request_duration_seconds", labels("route", k[0], "method", k[1]))
	}
	header(&b, "imagegate_registry_upload_duration_seconds", "histogram", "Time to receive blob content (monolithic POST, PATCH chunk, closing PUT), by method.")
	for _, k := range sortedKeys(m.uploads) {
		m.uploads[k].write(&b, "imagegate_registry_upload_duration_seconds", labels("method", k))
	}
	header(&b, "imagegate_registry_inflight_requests", "gauge", "Requests being answered.")
	sample(&b, "imagegate_registry_inflight_requests", "", float64(m.inflight))
	header(&b, "imagegate_registry_storage_operations_total", "counter", "Storage driver calls, by operation.")
	for _, k := range sortedKeys(m.storOps) {
		sample(&b, "imagegate_registry_storage_operations_total", labels("operation", k), float64(m.storOps[k]))
	}
	header(&b, "imagegate_registry_storage_errors_total", "counter", "Storage driver failures (outages, timeouts, refusals; not answers such as not found), by operation and kind.")
	for _, k := range sortedKeys(m.storErrs) {
		sample(&b, "imagegate_registry_storage_errors_total", labels("operation", k[0], "kind", k[1]), float64(m.storErrs[k]))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	header(&b, "imagegate_registry_goroutines", "gauge", "Goroutines of the process.")
	sample(&b, "imagegate_registry_goroutines", "", float64(runtime.NumGoroutine()))
	header(&b, "imagegate_registry_heap_bytes", "gauge", "Bytes of allocated heap objects.")
	sample(&b, "imagegate_registry_heap_bytes", "", float64(ms.HeapAlloc))
	header(&b, "imagegate_registry_start_time_seconds", "gauge", "Start time of the process, in seconds since the epoch.")
	sample(&b, "imagegate_registry_start_time_seconds", "", float64(m.started.UnixNano())/1e9)
	return b.String()
}

func header(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func sample(b *strings.Builder, name, lbls string, v float64) {
	b.WriteString(name)
	if lbls != "" {
		b.WriteString("{" + lbls + "}")
	}
	b.WriteByte(' ')
	b.WriteString(formatFloat(v))
	b.WriteByte('\n')
}

// labels formats name="value" pairs, escaping values as the format asks.
func labels(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+`="`+escape(kv[i+1])+`"`)
	}
	return strings.Join(parts, ",")
}

var escaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(s string) string { return escaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds))}
}

func (h *histogram) observe(v float64) {
	for i, ub := range h.bounds {
		if v <= ub {
			h.counts[i]++
			break
		}
	}
	h.sum += v
	h.count++
}

func (h *histogram) write(b *strings.Builder, name, lbls string) {
	sep := ""
	if lbls != "" {
		sep = ","
	}
	var cum uint64
	for i, ub := range h.bounds {
		cum += h.counts[i]
		sample(b, name+"_bucket", lbls+sep+`le="`+formatFloat(ub)+`"`, float64(cum))
	}
	sample(b, name+"_bucket", lbls+sep+`le="+Inf"`, float64(h.count))
	sample(b, name+"_sum", lbls, h.sum)
	sample(b, name+"_count", lbls, float64(h.count))
}

type keyLike interface {
	~string | ~[2]string | ~[3]string
}

func sortedKeys[K keyLike, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}
