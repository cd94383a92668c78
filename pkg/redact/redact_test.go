package redact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// TestAdd covers the modules' case: values the caller names secret (no_log
// parameters, passwords read from files), in every form a module prints
// them.
func TestAdd(t *testing.T) {
	t.Parallel()
	var s Set
	s.Add("hunter2", "abc", "ab", "", `pa"ss\word`, "line\nbreak", "hunter2-long")
	quoted, _ := json.Marshal(map[string]string{"msg": `login with pa"ss\word failed`})
	tests := []struct {
		name, in, want string
	}{
		{"raw", "password hunter2 here", "password " + Mask + " here"},
		{"three bytes", "x=abc", "x=" + Mask},
		{"shorter than MinLen", "ab cd", "ab cd"},
		{"longest first", "hunter2-long", Mask},
		{"JSON-escaped", string(quoted), `{"msg":"login with ` + Mask + ` failed"}`},
		{"Go-quoted", fmt.Sprintf("%q", "line\nbreak"), `"` + Mask + `"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.String(tc.in); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if got := string(s.Bytes([]byte(tc.in))); got != tc.want {
				t.Errorf("Bytes(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestAddTree covers the runner's case: Zuul secrets and secret_data,
// where the key tells what is secret.
func TestAddTree(t *testing.T) {
	t.Parallel()
	var s Set
	s.AddTree("docker_credentials", map[string]any{
		"username": "zuul", "password": "hunter2", "repository": "^myorg/",
		"nested": []any{map[string]any{"host": "registry.example.org", "port": 5000}},
	})
	s.AddTree("intermediate_registry", map[string]any{
		"host": "ir.example.org", "username": "zuul-ir", "password": "pw1", "cert": "-----BEGIN CERTIFICATE-----",
	})
	s.AddTree("", map[string]any{"buildset_registry": map[string]any{"password": "s3cret-data"}, "tokens": []any{"tk1", "tk2-long"}})
	s.AddTree("plain", "not-a-secret-at-all")
	for _, secret := range []string{"hunter2", "^myorg/", "registry.example.org", "pw1", "s3cret-data", "tk1", "tk2-long"} {
		if got := s.String("<" + secret + ">"); got != "<"+Mask+">" {
			t.Errorf("%q not redacted: %q", secret, got)
		}
	}
	for _, kept := range []string{"zuul", "5000", "ir.example.org", "zuul-ir", "-----BEGIN CERTIFICATE-----", "not-a-secret-at-all"} {
		if got := s.String(kept); got != kept {
			t.Errorf("%q redacted: %q", kept, got)
		}
	}
}

// TestWriter: a secret split between writes is caught, the last line is
// written by Flush, and secrets added while writing apply from the next
// line.
func TestWriter(t *testing.T) {
	t.Parallel()
	var s Set
	s.Add("hunter2")
	var out bytes.Buffer
	w := s.Writer(&out)
	for _, p := range []string{"first hun", "ter2 line\nsecond ", "line"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), "first "+Mask+" line\n"; got != want {
		t.Errorf("before Flush: %q, want %q", got, want)
	}
	s.Add("later-secret")
	fmt.Fprintf(w, " with later-secret")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "first "+Mask+" line\nsecond line with "+Mask+"\n"; got != want {
		t.Errorf("after Flush: %q, want %q", got, want)
	}
}

// TestWriterSlog: slog's text handler quotes a value with spaces or
// newlines; the secret is caught in its quoted form.
func TestWriterSlog(t *testing.T) {
	t.Parallel()
	var s Set
	s.Add("pass word\n2")
	var out bytes.Buffer
	w := s.Writer(&out)
	slog.New(slog.NewTextHandler(w, nil)).Info("login", "password", "pass word\n2")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "pass word") || !strings.Contains(out.String(), Mask) {
		t.Errorf("log: %q", out.String())
	}
}

// TestConcurrent: secrets are added while others redact (go test -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	var s Set
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.Add(fmt.Sprintf("secret-%d", i))
		}()
		go func() {
			defer wg.Done()
			_ = s.String("secret-1 secret-2")
		}()
	}
	wg.Wait()
	if got := s.String("secret-1 secret-7"); got != Mask+" "+Mask {
		t.Errorf("got %q", got)
	}
}
