package publish

import (
	"strings"
	"testing"
)

func TestRepositoryPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		allow   []string
		deny    []string
		warn    bool
	}{
		{`^myorg/app.*`, []string{"myorg/app", "myorg/app-extra"}, []string{"evil/myorg/app", "myorg/other"}, false},
		// Unanchored, as re.search: matches anywhere (and warns).
		{`myorg/`, []string{"myorg/app", "evil/myorg/app"}, []string{"other/app"}, true},
		{`^myorg/app\Z`, []string{"myorg/app"}, []string{"myorg/app2", "myorg/apps"}, false},
		{`\Amyorg/(app|lib)$`, []string{"myorg/app", "myorg/lib"}, []string{"myorg/app2"}, false},
		{`(?i)^MyOrg/`, []string{"myorg/app"}, []string{"other/myorg"}, false},
		{`^myorg/a{,2}pp$`, []string{"myorg/pp", "myorg/aapp"}, []string{"myorg/aaapp"}, false},
		{`^myorg/[]a]pp$`, []string{"myorg/app", "myorg/]pp"}, []string{"myorg/bpp"}, false},
		{`^(?P<org>myorg)/\w+$`, []string{"myorg/app_1"}, []string{"myorg/app-1"}, false},
	}
	for _, tc := range tests {
		p, warning, err := CompileRepositoryPattern(tc.pattern)
		if err != nil {
			t.Errorf("%q: %v", tc.pattern, err)
			continue
		}
		if (warning != "") != tc.warn {
			t.Errorf("%q: warning %q", tc.pattern, warning)
		}
		for _, r := range tc.allow {
			if !p.Allows(r) {
				t.Errorf("%q does not allow %q", tc.pattern, r)
			}
		}
		for _, r := range tc.deny {
			if p.Allows(r) {
				t.Errorf("%q allows %q", tc.pattern, r)
			}
		}
	}
}

func TestRepositoryPatternErrors(t *testing.T) {
	t.Parallel()
	for pattern, want := range map[string]string{
		`^myorg/(`:          "not a valid regular expression",
		`^(?=myorg)`:        "lookarounds",
		`^(a)\1`:            `backreference \1`,
		`^(?P<o>a)(?P=o)`:   "backreference (?P=...)",
		`^myorg/(?!secret)`: "lookarounds",
		`^(?<!x)myorg/`:     "lookarounds",
		`^myorg/app[`:       "not a valid regular expression",
		`^myorg/(?x) a p p`: "not a valid regular expression",
		`^myorg/app{2,1}`:   "not a valid regular expression",
		`^myorg/app\`:       "not a valid regular expression",
	} {
		_, _, err := CompileRepositoryPattern(pattern)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "docker_credentials.repository") {
			t.Errorf("%q: %v (want %q)", pattern, err, want)
		}
	}
}
