// Package redact keeps secret values out of what imagegate prints and
// writes: module results and logs (pkg/ansible) and the runner's job logs
// and output (pkg/runner) use the one Set.
//
// A value is a secret when its caller says so (Add: a no_log parameter, a
// password read from a file), or when it is a string found in a structure
// under a key that names a secret (AddTree: a Zuul secret, secret_data).
// Each is replaced by Mask wherever it appears: as written, and in the
// escaped forms JSON and Go quoting give it (a JSON result, slog's text
// handler), so a secret holding quotes, backslashes or newlines is caught
// too.
package redact

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Mask replaces a secret.
const Mask = "********"

// MinLen is the length under which a secret is not redacted: a value of one
// or two bytes would blank unrelated text everywhere and protect nothing.
const MinLen = 3

// MinLenInTree is the length under which a string that is only inside a
// secret (docker_credentials.username), not itself under a key naming a
// secret (docker_credentials.password), is not redacted: such structures
// also carry user names, hosts and ports, and blanking "zuul" or "5000"
// everywhere would make logs unreadable.
const MinLenInTree = 6

var secretKey = regexp.MustCompile(`(?i)pass|token|secret|private|api_?key|auth|credential`)

// SecretKey reports whether a key names a secret: password, token, secret,
// private key, API key, auth, credentials.
func SecretKey(key string) bool { return secretKey.MatchString(key) }

// Set is a set of secrets, safe for concurrent use. The zero value is an
// empty set.
type Set struct {
	mu   sync.Mutex
	seen map[string]bool
	// forms holds every form of every secret, longest first. It is
	// replaced, never changed in place, so a reader may use the slice it
	// got while secrets are added.
	forms []string
	added []string
}

// Add records secret values. Values shorter than MinLen are ignored.
func (s *Set) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		s.add(v, MinLen)
	}
	s.commit()
}

// AddTree records the secrets of v, a value decoded from YAML or JSON
// (maps, lists, scalars) found under key: every string whose key names a
// secret (SecretKey; list elements have their list's key) from MinLen
// bytes, and every other string below such a key from MinLenInTree bytes.
func (s *Set) AddTree(key string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.walk(key, v, false)
	s.commit()
}

func (s *Set) walk(key string, v any, inSecret bool) {
	named := SecretKey(key)
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			s.walk(k, e, inSecret || named)
		}
	case []any:
		for _, e := range x {
			s.walk(key, e, inSecret)
		}
	case string:
		switch {
		case named:
			s.add(x, MinLen)
		case inSecret:
			s.add(x, MinLenInTree)
		}
	}
}

func (s *Set) add(v string, min int) {
	if len(v) < min || s.seen[v] {
		return
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[v] = true
	s.added = append(s.added, forms(v)...)
}

// commit publishes the forms added: a new list, longer forms first, so a
// secret containing another is replaced whole.
func (s *Set) commit() {
	if len(s.added) == 0 {
		return
	}
	next := append(slices.Clone(s.forms), s.added...)
	s.added = nil
	sort.SliceStable(next, func(i, j int) bool { return len(next[i]) > len(next[j]) })
	s.forms = next
}

// forms returns v as written, JSON-escaped and Go-quoted (without the
// quotes), each once.
func forms(v string) []string {
	out := []string{v}
	esc, _ := json.Marshal(v)
	if e := string(esc[1 : len(esc)-1]); !slices.Contains(out, e) {
		out = append(out, e)
	}
	if q := strconv.Quote(v); !slices.Contains(out, q[1:len(q)-1]) {
		out = append(out, q[1:len(q)-1])
	}
	return out
}

func (s *Set) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forms
}

// String returns text with every secret replaced by Mask.
func (s *Set) String(text string) string {
	for _, f := range s.list() {
		text = strings.ReplaceAll(text, f, Mask)
	}
	return text
}

// Bytes returns b with every secret replaced by Mask.
func (s *Set) Bytes(b []byte) []byte {
	for _, f := range s.list() {
		b = bytes.ReplaceAll(b, []byte(f), []byte(Mask))
	}
	return b
}

// Writer redacts what is written through it before writing it to the
// underlying writer, a line at a time, so that a secret split between two
// writes is still caught. Call Flush when done, for a last line without a
// newline.
type Writer struct {
	mu   sync.Mutex
	s    *Set
	w    *bufio.Writer
	part string
}

// Writer returns a Writer writing to w, redacting the secrets of s known
// when each line is written.
func (s *Set) Writer(w io.Writer) *Writer {
	return &Writer{s: s, w: bufio.NewWriter(w)}
}

// Write writes the complete lines of what was written so far, redacted,
// and keeps the rest.
func (rw *Writer) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	text := rw.part + string(p)
	i := strings.LastIndexByte(text, '\n')
	if i < 0 {
		rw.part = text
		return len(p), nil
	}
	rw.part = text[i+1:]
	if _, err := rw.w.WriteString(rw.s.String(text[:i+1])); err != nil {
		return 0, err
	}
	if err := rw.w.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is left, redacted and ended with a newline.
func (rw *Writer) Flush() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.part != "" {
		if _, err := rw.w.WriteString(rw.s.String(rw.part) + "\n"); err != nil {
			return err
		}
		rw.part = ""
	}
	return rw.w.Flush()
}
