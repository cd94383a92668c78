package ansibletest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
)

// recorder collects what a check reports instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

type item struct {
	Name string    `json:"name"`
	When time.Time `json:"when"`
}

type result struct {
	ansible.Outcome
	Items []item          `json:"items"`
	Count int             `json:"count"`
	Extra map[string]bool `json:"extra,omitempty"`
}

func body(context.Context, *ansible.Module, *struct{}) (*result, error) { return nil, nil }

func TestCheckReturn(t *testing.T) {
	t.Parallel()
	const good = `RETURN:
  items:
    description: The items.
    type: list
    elements: dict
    contains:
      name: {description: Its name., type: str}
      when: {description: When., type: str}
  count: {description: How many., type: int}
  extra: {description: More., type: dict}
`
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"in step", good, nil},
		{"undocumented key", strings.Replace(good, "  extra: {description: More., type: dict}\n", "", 1),
			[]string{"return value extra is returned but not documented"}},
		{"key never returned", good + "  gone: {description: Gone., type: str}\n",
			[]string{"return value gone is documented in RETURN but never returned"}},
		{"wrong type", strings.Replace(good, "type: int", "type: str", 1), []string{`return value count: documented type "str", returned "int"`}},
		{"nested key", strings.Replace(good, "      when: {description: When., type: str}\n", "", 1),
			[]string{"return value items.when is returned but not documented"}},
		{"no contains", strings.Replace(good, "    contains:\n      name: {description: Its name., type: str}\n      when: {description: When., type: str}\n", "", 1),
			[]string{"return value items: its keys are not documented"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "m.yml")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			r := &recorder{TB: t}
			CheckReturn(r, path, body)
			if len(r.errs) != len(tc.want) {
				t.Fatalf("reported %q, want %q", r.errs, tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(r.errs[i], w) {
					t.Errorf("reported %q, want %q", r.errs[i], w)
				}
			}
			if tc.want == nil && !slices.Equal(r.errs, nil) {
				t.Errorf("reported %q for docs in step", r.errs)
			}
		})
	}
}
