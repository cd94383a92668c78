package server_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/tests/testenv"
)

// conformanceEnv enables every API and data option of the OCI
// distribution-spec conformance suite, as pkg/registry's TestConformance
// does for the filesystem driver, except sparse manifests (the registry
// checks that what a manifest references exists, which the spec allows).
var conformanceEnv = map[string]string{
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

var countRE = regexp.MustCompile(`(?m)^\s+(Pass|FAIL|Error|Skip|Disabled|Total)\.*:\s+(\d+)$`)

// TestConformanceS3 runs the OCI distribution-spec conformance suite
// against the registry service on the S3 driver: versitygw in make test,
// SeaweedFS in make test-seaweedfs (IMAGEGATE_SEAWEEDFS=1). Any failed,
// errored or skipped check fails the test.
func TestConformanceS3(t *testing.T) {
	bin := testenv.Tool(t, "OCI_CONFORMANCE", "conformance.test")
	s3 := startS3(t)
	r := start(t, t.TempDir(), s3Storage(s3, s3.NewBucket(t)), map[string]string{"TEST_S3_SECRET": s3.SecretKey})
	runConformance(t, bin, r)
}

// TestConformanceFilesystem runs the suite against the service on the
// filesystem driver: the same code as pkg/registry's TestConformance, with
// the server's metrics, health and TLS around it.
func TestConformanceFilesystem(t *testing.T) {
	bin := testenv.Tool(t, "OCI_CONFORMANCE", "conformance.test")
	r := start(t, t.TempDir(), "", nil)
	runConformance(t, bin, r)
}

func runConformance(t *testing.T, bin string, r *running) {
	t.Helper()
	results := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") && !strings.HasPrefix(kv, "SSL_CERT_") {
			env = append(env, kv)
		}
	}
	for k, v := range conformanceEnv {
		env = append(env, k+"="+v)
	}
	env = append(env,
		"OCI_REGISTRY="+r.host,
		"OCI_USERNAME="+r.user,
		"OCI_PASSWORD="+r.password,
		"OCI_RESULTS_DIR="+results,
		"SSL_CERT_FILE="+r.srv.CAFile(),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestLegacy$", "-test.timeout=15m")
	cmd.Dir = results
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	out := stdout.String()
	counts := map[string]int{}
	for _, m := range countRE.FindAllStringSubmatch(out, -1) {
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
			counts["FAIL"], counts["Error"], counts["Skip"], counts["Total"], runErr, failures(out), stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(results, "report.html")); err == nil && len(b) == 0 {
		t.Error("the suite wrote an empty report")
	}
}

// failures returns the report lines of failed checks and their errors.
func failures(report string) string {
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
