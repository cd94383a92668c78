package runner

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// BuildHistory is every build of the queue items a Runner has finished,
// served as Zuul's builds API (BuildsHandler), so a later item's job can
// find an earlier one's builds as in Zuul: promote-container-image's
// intermediate-registry method asks it for the change's gate build. It is
// safe for concurrent use.
type BuildHistory struct {
	mu     sync.Mutex
	builds []zuul.Build
}

// record adds the builds of a finished item.
func (h *BuildHistory) record(it *itemRun) {
	var ref string
	c := it.change
	switch {
	case c.Change > 0:
		ref = fmt.Sprintf("refs/changes/%02d/%d/%d", c.Change%100, c.Change, c.Patchset)
	default:
		ref = "refs/heads/" + c.Branch
	}
	project := c.Project
	if it.own != nil {
		project = it.own.Name
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range it.report.Builds {
		if b.UUID == "" {
			continue // never started (skipped, or failed a requirement)
		}
		zb := zuul.Build{UUID: b.UUID, JobName: b.Job, Result: b.Result, Voting: b.Voting, Pipeline: c.Pipeline,
			Project: project, Branch: c.Branch, Ref: ref, Final: true,
			StartTime: b.Start.UTC().Format(zuul.BuildTime), EndTime: b.Start.Add(b.Duration).UTC().Format(zuul.BuildTime),
			Duration: b.Duration.Seconds(), Buildset: &zuul.BuildsetRef{UUID: it.report.Buildset},
			Artifacts: []zuul.BuildArtifact{}, Provides: []any{}}
		if c.Change > 0 {
			zb.SetChange(strconv.Itoa(c.Change), strconv.Itoa(c.Patchset))
		}
		for _, a := range b.Artifacts() {
			ba := zuul.BuildArtifact{}
			ba.Name, _ = a["name"].(string)
			ba.URL, _ = a["url"].(string)
			ba.Metadata, _ = a["metadata"].(map[string]any)
			zb.Artifacts = append(zb.Artifacts, ba)
		}
		h.builds = append(h.builds, zb)
	}
}

// Builds returns every build recorded, newest first.
func (h *BuildHistory) Builds() []zuul.Build {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Newest first: by start time, then the later record first (Zuul
	// orders by build id).
	idx := make([]int, len(h.builds))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		x, y := h.builds[idx[a]].StartTime, h.builds[idx[b]].StartTime
		if x != y {
			return x > y
		}
		return idx[a] > idx[b]
	})
	out := make([]zuul.Build, len(idx))
	for i, k := range idx {
		out[i] = h.builds[k]
	}
	return out
}

// buildFilters are the query parameters of Zuul's builds API the handler
// understands; each may be given several times (any matches).
var buildFilters = map[string]func(b *zuul.Build) string{
	"uuid":     func(b *zuul.Build) string { return b.UUID },
	"job_name": func(b *zuul.Build) string { return b.JobName },
	"result":   func(b *zuul.Build) string { return b.Result },
	"pipeline": func(b *zuul.Build) string { return b.Pipeline },
	"project":  func(b *zuul.Build) string { return b.Project },
	"branch":   func(b *zuul.Build) string { return b.Branch },
	"change":   func(b *zuul.Build) string { return b.ChangeNumber() },
	"patchset": func(b *zuul.Build) string { return b.PatchsetNumber() },
	"ref":      func(b *zuul.Build) string { return b.Ref },
}

// BuildsHandler serves the builds of h as Zuul's REST API does, for the
// tenant: GET /api/tenant/<tenant>/builds with the filters uuid, job_name,
// result, pipeline, project, branch, change, patchset and ref (each
// repeatable), limit (default 50) and skip, newest first; GET
// /api/tenant/<tenant>/build/<uuid> for one build. Unknown parameters are
// an error (400), so a query the runner cannot answer is never answered
// wrongly; so is another tenant (404).
func (h *BuildHistory) BuildsHandler(tenant string) http.Handler {
	prefix := "/api/tenant/" + tenant + "/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeAPIError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			writeAPIError(w, http.StatusNotFound, "unknown tenant or path (this runner serves tenant "+tenant+")")
			return
		}
		if uuid, ok := strings.CutPrefix(rest, "build/"); ok {
			for _, b := range h.Builds() {
				if b.UUID == uuid {
					writeAPIJSON(w, b)
					return
				}
			}
			writeAPIError(w, http.StatusNotFound, "build "+uuid+" not found")
			return
		}
		if rest != "builds" {
			writeAPIError(w, http.StatusNotFound, "not found")
			return
		}
		q := r.URL.Query()
		limit, skip := 50, 0
		for k, vs := range q {
			var err error
			switch k {
			case "limit":
				limit, err = strconv.Atoi(vs[0])
			case "skip":
				skip, err = strconv.Atoi(vs[0])
			default:
				if _, ok := buildFilters[k]; !ok {
					writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("unsupported query parameter %q", k))
					return
				}
			}
			if err != nil || limit < 0 || skip < 0 {
				writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("%s must be a non-negative integer", k))
				return
			}
		}
		out := []zuul.Build{}
		for _, b := range h.Builds() {
			match := true
			for k, vs := range q {
				f, ok := buildFilters[k]
				if !ok {
					continue
				}
				if !containsString(vs, f(&b)) {
					match = false
					break
				}
			}
			if match {
				out = append(out, b)
			}
		}
		out = out[min(skip, len(out)):]
		out = out[:min(limit, len(out))]
		writeAPIJSON(w, out)
	})
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeAPIJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_ = json.NewEncoder(w).Encode(v)
}

func writeAPIError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": msg, "code": status, "description": http.StatusText(status)})
}

// BuildsAPI is the builds API served over TLS: Zuul's REST API is https,
// and imagegate's clients refuse plain HTTP.
type BuildsAPI struct {
	// URL is the tenant's API, https://<addr>/api/tenant/<tenant>, as
	// promote_container_image_api takes it.
	URL string
	// CACert is the PEM certificate to trust for it (the generated CA, or
	// the certificate file given).
	CACert []byte
	srv    *http.Server
}

// ServeBuildsAPI serves h's builds for tenant on addr (host:port; port 0
// picks one). With certFile and keyFile it serves that certificate;
// without, a certificate of a new CA for the listening address and this
// machine's names, valid for a week.
func (h *BuildHistory) ServeBuildsAPI(addr, tenant, certFile, keyFile string) (*BuildsAPI, error) {
	if tenant == "" || strings.ContainsAny(tenant, "/?#") {
		return nil, fmt.Errorf("builds API: tenant %q is not a tenant name", tenant)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("builds API: %w", err)
	}
	api := &BuildsAPI{}
	var pair tls.Certificate
	switch {
	case certFile != "" && keyFile != "":
		pair, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err == nil {
			api.CACert, err = os.ReadFile(certFile)
		}
	case certFile != "" || keyFile != "":
		err = errors.New("give both the certificate and the key, or neither")
	default:
		var ca *pki.CA
		if ca, err = pki.NewCA("imagegate-runner builds API CA", 7*24*time.Hour); err != nil {
			break
		}
		host, _, _ := net.SplitHostPort(l.Addr().String())
		var sc *pki.ServerCert
		if sc, err = ca.Issue(pki.HostNames(host), 7*24*time.Hour); err != nil {
			break
		}
		pair, err = sc.TLSCertificate()
		api.CACert = ca.CertPEM
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("builds API certificate: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/tenant/", h.BuildsHandler(tenant))
	api.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	api.URL = "https://" + l.Addr().String() + "/api/tenant/" + tenant
	go api.srv.ServeTLS(l, "", "")
	return api, nil
}

// Close stops serving.
func (a *BuildsAPI) Close() error { return a.srv.Close() }
