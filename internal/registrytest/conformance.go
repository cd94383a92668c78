package registrytest

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
)

// ConformanceEnv enables every API and data option of the OCI
// distribution-spec conformance suite, except sparse manifests: the
// registry checks that what a manifest references exists (which the spec
// allows), and the suite's default leaves that data set off.
var ConformanceEnv = map[string]string{
	"OCI_VERSION":                     "1.1",
	"OCI_TLS":                         "enabled",
	"OCI_REPO1":                       "conformance/repo1",
	"OCI_REPO2":                       "conformance/repo2",
	"OCI_CACHE_AUTH":                  "true",
	"OCI_LOG":                         "warn",
	"OCI_API_PING":                    "true",
	"OCI_API_PULL":                    "true",
	"OCI_API_PUSH":                    "true",
	"OCI_API_BLOBS_ATOMIC":            "true",
	"OCI_API_BLOBS_DELETE":            "true",
	"OCI_API_BLOBS_DIGEST_HEADER":     "true",
	"OCI_API_BLOBS_MOUNT_ANONYMOUS":   "true",
	"OCI_API_BLOBS_UPLOAD_CANCEL":     "true",
	"OCI_API_MANIFESTS_ATOMIC":        "true",
	"OCI_API_MANIFESTS_DELETE":        "true",
	"OCI_API_MANIFESTS_DIGEST_HEADER": "true",
	"OCI_API_MANIFESTS_TAG_PARAM":     "true",
	"OCI_API_TAGS_ATOMIC":             "true",
	"OCI_API_TAGS_DELETE":             "true",
	"OCI_API_TAGS_LIST":               "true",
	"OCI_API_REFERRER":                "true",
	"OCI_DATA_IMAGE":                  "true",
	"OCI_DATA_INDEX":                  "true",
	"OCI_DATA_INDEX_LIST":             "true",
	"OCI_DATA_SPARSE":                 "false",
	"OCI_DATA_ARTIFACT":               "true",
	"OCI_DATA_SUBJECT":                "true",
	"OCI_DATA_SUBJECT_MISSING":        "true",
	"OCI_DATA_ARTIFACT_LIST":          "true",
	"OCI_DATA_SUBJECT_LIST":           "true",
	"OCI_DATA_DATA_FIELD":             "true",
	"OCI_DATA_NONDISTRIBUTABLE":       "true",
	"OCI_DATA_CUSTOM_FIELDS":          "true",
	"OCI_DATA_NO_LAYERS":              "true",
	"OCI_DATA_EMPTY_BLOB":             "true",
	"OCI_DATA_SHA512":                 "true",
}

// ConformanceOptions configure RunConformance.
type ConformanceOptions struct {
	// Timeout bounds the suite's run (default 15 minutes).
	Timeout time.Duration
	// Env overrides entries of ConformanceEnv (to turn an option off,
	// saying why at the call).
	Env map[string]string
}

var conformanceCountRE = regexp.MustCompile(`(?m)^\s+(Pass|FAIL|Error|Skip|Disabled|Total)\.*:\s+(\d+)$`)

// RunConformance runs the OCI distribution-spec conformance suite (the
// binary OCI_CONFORMANCE names, built by tests/setup/deps.sh) with
// ConformanceEnv (with opts.Env) against the registry at host (host:port,
// TLS), trusting only the CAs in caFile and logging in as username. It
// fails t on any failed, errored or skipped check, and when the suite
// reports nothing.
func RunConformance(t testing.TB, host, caFile, username, password string, opts ConformanceOptions) {
	t.Helper()
	bin := testenv.Tool(t, "OCI_CONFORMANCE", "conformance.test")
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Minute
	}
	results := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") && !strings.HasPrefix(kv, "SSL_CERT_") {
			env = append(env, kv)
		}
	}
	vars := maps.Clone(ConformanceEnv)
	maps.Copy(vars, opts.Env)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	env = append(env,
		"OCI_REGISTRY="+host,
		"OCI_USERNAME="+username,
		"OCI_PASSWORD="+password,
		"OCI_RESULTS_DIR="+results,
		"SSL_CERT_FILE="+caFile, // the suite trusts the system pool
	)
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestLegacy$", "-test.timeout="+opts.Timeout.String())
	cmd.Dir = results
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	out := stdout.String()

	counts := map[string]int{}
	for _, m := range conformanceCountRE.FindAllStringSubmatch(out, -1) {
		counts[m[1]], _ = strconv.Atoi(m[2])
	}
	summary := out
	if i := strings.Index(out, "OCI Conformance Result:"); i >= 0 {
		summary = out[i:]
	}
	t.Logf("conformance summary:\n%s", summary)
	if counts["Total"] == 0 {
		t.Fatalf("no results from %s (%v)\nstdout:\n%s\nstderr:\n%s", bin, runErr, out, stderr.String())
	}
	if counts["FAIL"] > 0 || counts["Error"] > 0 || counts["Skip"] > 0 || !strings.Contains(out, "OCI Conformance Result: Pass") {
		t.Errorf("conformance: %d failed, %d errors, %d skipped of %d (%v); failing checks:\n%s\nstderr:\n%s",
			counts["FAIL"], counts["Error"], counts["Skip"], counts["Total"], runErr, conformanceFailures(out), stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(results, "report.html")); err == nil && len(b) == 0 {
		t.Error("the suite wrote an empty report")
	}
}

// conformanceFailures returns the report lines of failed checks and their
// errors.
func conformanceFailures(report string) string {
	var b strings.Builder
	lines := strings.Split(report, "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, ": FAIL") || strings.HasSuffix(l, ": Error") || strings.HasSuffix(l, ": Skip") {
			b.WriteString(l + "\n")
			for j := i + 1; j < len(lines) && strings.Contains(lines[j], " - "); j++ {
				b.WriteString(lines[j] + "\n")
			}
		}
	}
	return b.String()
}
