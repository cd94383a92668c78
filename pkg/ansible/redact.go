package ansible

import (
	"bytes"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// secretSet holds values that must never be printed.
type secretSet struct {
	mu   sync.Mutex
	vals []string
}

func (s *secretSet) add(v string) {
	// Very short values would redact unrelated text and protect nothing.
	if len(v) < 3 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.vals {
		if e == v {
			return
		}
	}
	s.vals = append(s.vals, v)
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(s.vals, func(i, j int) bool { return len(s.vals[i]) > len(s.vals[j]) })
}

func (s *secretSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.vals...)
}

// redact replaces each secret in text, in its raw form and in the escaped
// forms that JSON and Go quoting (used by slog's text handler) produce.
func (s *secretSet) redact(text string) string {
	for _, v := range s.list() {
		for _, f := range forms(v) {
			text = strings.ReplaceAll(text, f, Redacted)
		}
	}
	return text
}

func forms(v string) []string {
	out := []string{v}
	esc, _ := json.Marshal(v)
	if e := string(esc[1 : len(esc)-1]); e != v {
		out = append(out, e)
	}
	if q := strconv.Quote(v); q[1:len(q)-1] != v && q[1:len(q)-1] != out[len(out)-1] {
		out = append(out, q[1:len(q)-1])
	}
	return out
}

// redactJSON replaces secrets in a JSON document: both the raw value and its
// JSON-escaped form, so a secret with quotes or backslashes is caught too.
func (s *secretSet) redactJSON(b []byte) []byte {
	for _, v := range s.list() {
		for _, f := range forms(v) {
			b = bytes.ReplaceAll(b, []byte(f), []byte(Redacted))
		}
	}
	return b
}

// redactWriter redacts secrets from each Write. Log records arrive whole, one
// Write per record, so a secret is never split between two writes by slog.
type redactWriter struct {
	mu sync.Mutex
	w  io.Writer
	s  *secretSet
}

func (r *redactWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.w, r.s.redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Redact returns text with every registered secret replaced by Redacted.
func (m *Module) Redact(text string) string { return m.secrets.redact(text) }
