package publish

import (
	"fmt"
	"regexp"
	"strings"
)

// RepositoryPattern is docker_credentials.repository: a regular expression
// that every repository must match before anything is sent anywhere.
//
// Upstream applies it with Python's re.search: the pattern may match
// anywhere in the repository name unless it is anchored. Go's regexp (RE2)
// MatchString has the same search semantics; the syntax differs in a few
// places, handled so:
//
//   - \Z (Python's end of string) is rewritten to \z, its RE2 spelling;
//   - {,n} (Python: zero to n) is rewritten to {0,n}; RE2 would read it
//     literally;
//   - backreferences, lookahead and lookbehind, atomic groups, possessive
//     quantifiers and the verbose flag (?x) do not exist in RE2: such a
//     pattern is a clear error, never silently a different pattern;
//   - \d, \w and \s match only ASCII in RE2 and any Unicode digit, word or
//     space character in Python; $ in Python also matches before a final
//     newline. Neither difference can change the result on a repository
//     name, which is lower-case ASCII without newlines.
type RepositoryPattern struct {
	source string
	re     *regexp.Regexp
}

// CompileRepositoryPattern compiles pattern. The warning is non-empty when
// the pattern is not anchored at the start, so that "evil/myorg/app" would
// pass a pattern meant for "myorg/".
func CompileRepositoryPattern(pattern string) (p *RepositoryPattern, warning string, err error) {
	return compileRepositoryPattern("docker_credentials.repository", pattern)
}

// compileRepositoryPattern is CompileRepositoryPattern for the parameter
// param, which its messages name.
func compileRepositoryPattern(param, pattern string) (p *RepositoryPattern, warning string, err error) {
	re, err := compilePython(param, pattern)
	if err != nil {
		return nil, "", err
	}
	if !anchored(pattern) {
		warning = fmt.Sprintf("%s %q is not anchored with ^: like upstream's re.search it matches "+
			"anywhere in a repository name, so another organisation's repository that merely contains a match passes too; "+
			"anchor it: %q", param, pattern, "^"+pattern)
	}
	return &RepositoryPattern{source: pattern, re: re}, warning, nil
}

// compilePython compiles a regular expression written for Python's re
// (upstream's roles apply theirs with re.search), as RepositoryPattern
// describes; errors name the parameter param.
func compilePython(param, pattern string) (*regexp.Regexp, error) {
	translated, err := translatePython(pattern)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", param, pattern, err)
	}
	re, err := regexp.Compile(translated)
	if err != nil {
		hint := ""
		if strings.Contains(err.Error(), "invalid or unsupported Perl syntax") || strings.Contains(err.Error(), "invalid escape") ||
			strings.Contains(err.Error(), "invalid named capture: `(?<!") || strings.Contains(err.Error(), "invalid named capture: `(?<=") {
			hint = " (lookarounds, backreferences, atomic groups and (?x) are not supported: Go's RE2 syntax, see https://github.com/google/re2/wiki/Syntax)"
		}
		return nil, fmt.Errorf("%s %q is not a valid regular expression: %v%s", param, pattern, err, hint)
	}
	return re, nil
}

// Allows reports whether repository may be written, with re.search
// semantics.
func (p *RepositoryPattern) Allows(repository string) bool { return p.re.MatchString(repository) }

// String is the pattern as given.
func (p *RepositoryPattern) String() string { return p.source }

// anchored reports whether the pattern starts with ^ or \A, after any
// leading inline flags such as (?i).
func anchored(p string) bool {
	for strings.HasPrefix(p, "(?") {
		end := strings.IndexByte(p, ')')
		flags := p[2:max(end, 2)]
		if end < 0 || strings.ContainsAny(flags, ":=!<>P") {
			break
		}
		p = p[end+1:]
	}
	return strings.HasPrefix(p, "^") || strings.HasPrefix(p, `\A`)
}

// translatePython rewrites the Python-only spellings RE2 has an
// equivalent for, outside character classes, and rejects constructs whose
// meaning RE2 would change rather than refuse.
func translatePython(p string) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			n := p[i+1]
			switch {
			case !inClass && n == 'Z':
				b.WriteString(`\z`)
			case !inClass && n >= '1' && n <= '9':
				return "", fmt.Errorf(`backreference \%c is not supported`, n)
			default:
				b.WriteByte(c)
				b.WriteByte(n)
			}
			i++
			continue
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			b.WriteByte(c)
			// A ] right after [ or [^ is a literal member.
			if i+1 < len(p) && p[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' {
				b.WriteByte(']')
				i++
			}
			continue
		case c == '{' && i+1 < len(p) && p[i+1] == ',':
			b.WriteString("{0")
			continue
		case c == '(' && strings.HasPrefix(p[i:], "(?P="):
			return "", fmt.Errorf("backreference (?P=...) is not supported")
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}
