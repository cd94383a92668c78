package runner

import (
	"bufio"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// redactor replaces secret values in everything the runner writes or prints.
type redactor struct {
	mu     sync.Mutex
	values map[string]bool
	list   []string
}

func newRedactor() *redactor { return &redactor{values: map[string]bool{}} }

var secretKeyRE = regexp.MustCompile(`(?i)pass|token|secret|private|api_?key|auth|credential`)

// addSecret records the secret strings of v: every string under a key that
// names a secret (password, token, ...), and every string of a job secret
// whose key says so. Short values are ignored so that "zuul" or a port
// number is not blanked out everywhere.
func (r *redactor) addSecret(key string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.walk(key, v, false)
	sort.Slice(r.list, func(i, j int) bool { return len(r.list[i]) > len(r.list[j]) })
}

func (r *redactor) walk(key string, v any, secret bool) {
	secret = secret || secretKeyRE.MatchString(key)
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			r.walk(k, e, secret)
		}
	case []any:
		for _, e := range x {
			r.walk(key, e, secret)
		}
	case string:
		if secret && len(x) >= 6 && !r.values[x] {
			r.values[x] = true
			r.list = append(r.list, x)
		}
	}
}

func (r *redactor) redact(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.list {
		s = strings.ReplaceAll(s, v, "********")
	}
	return s
}

// writer returns a line-buffered writer that redacts before writing to w,
// so a secret split across two writes is still caught.
func (r *redactor) writer(w io.Writer) *redactWriter {
	return &redactWriter{r: r, w: bufio.NewWriter(w), out: w}
}

type redactWriter struct {
	mu   sync.Mutex
	r    *redactor
	w    *bufio.Writer
	out  io.Writer
	part string
}

func (rw *redactWriter) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	s := rw.part + string(p)
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		rw.part = s
		return len(p), nil
	}
	rw.part = s[i+1:]
	if _, err := rw.w.WriteString(rw.r.redact(s[:i+1])); err != nil {
		return 0, err
	}
	return len(p), rw.w.Flush()
}

// Flush writes what is left without a final newline.
func (rw *redactWriter) Flush() {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.part != "" {
		_, _ = rw.w.WriteString(rw.r.redact(rw.part) + "\n")
		rw.part = ""
	}
	_ = rw.w.Flush()
}
