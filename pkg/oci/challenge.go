package oci

import (
	"sort"
	"strings"
)

// Challenge is one authentication challenge of a WWW-Authenticate header
// (RFC 9110, section 11.6.1): a scheme (Bearer, Basic) and its parameters,
// keys lower-cased. A registry's Bearer challenge carries realm, service
// and scope (distribution's token authentication specification).
type Challenge struct {
	Scheme string
	Params map[string]string
}

// ParseChallenges reads every challenge of the WWW-Authenticate header
// values, in order. A value may hold several challenges separated by
// commas, as may the parameters of one; a token68 credential (RFC 9110,
// section 11.2) is skipped.
func ParseChallenges(values ...string) []Challenge {
	var out []Challenge
	for _, v := range values {
		p := &challengeParser{s: v}
		for {
			c, ok := p.challenge()
			if !ok {
				break
			}
			out = append(out, c)
		}
	}
	return out
}

// FindChallenge returns the first challenge of the header values whose
// scheme is one of schemes (case-insensitive).
func FindChallenge(values []string, schemes ...string) (Challenge, bool) {
	for _, c := range ParseChallenges(values...) {
		for _, s := range schemes {
			if strings.EqualFold(c.Scheme, s) {
				return c, true
			}
		}
	}
	return Challenge{}, false
}

// String renders the challenge as a WWW-Authenticate value, parameters in
// the order realm, service, scope, then the others sorted, values quoted.
func (c Challenge) String() string {
	var keys []string
	for k := range c.Params {
		keys = append(keys, k)
	}
	rank := map[string]int{"realm": 0, "service": 1, "scope": 2}
	sort.Slice(keys, func(i, j int) bool {
		ri, iok := rank[keys[i]]
		rj, jok := rank[keys[j]]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	b.WriteString(c.Scheme)
	for i, k := range keys {
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + quote(c.Params[k]))
	}
	return b.String()
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

type challengeParser struct {
	s string
	i int
}

func (p *challengeParser) skip(chars string) {
	for p.i < len(p.s) && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

// token reads an RFC 9110 token (up to a separator).
func (p *challengeParser) token() string {
	start := p.i
	for p.i < len(p.s) && strings.IndexByte(" \t,=\"", p.s[p.i]) < 0 {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *challengeParser) challenge() (Challenge, bool) {
	p.skip(" \t,")
	scheme := p.token()
	if scheme == "" {
		return Challenge{}, false
	}
	c := Challenge{Scheme: scheme, Params: map[string]string{}}
	for {
		p.skip(" \t")
		save := p.i
		k := p.token()
		p.skip(" \t")
		if k == "" || p.i >= len(p.s) || p.s[p.i] != '=' {
			// The next challenge's scheme, or the end.
			p.i = save
			return c, true
		}
		p.i++ // '='
		if p.i < len(p.s) && p.s[p.i] == '=' {
			// token68 padding: "Basic abc==" is not a parameter.
			p.skip("=")
			p.skip(" \t,")
			return c, true
		}
		p.skip(" \t")
		c.Params[strings.ToLower(k)] = p.value()
		p.skip(" \t")
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
		}
	}
}

// value reads a quoted string (backslash escapes) or a token.
func (p *challengeParser) value() string {
	if p.i < len(p.s) && p.s[p.i] == '"' {
		var b strings.Builder
		for p.i++; p.i < len(p.s) && p.s[p.i] != '"'; p.i++ {
			if p.s[p.i] == '\\' && p.i+1 < len(p.s) {
				p.i++
			}
			b.WriteByte(p.s[p.i])
		}
		p.i++ // closing quote
		return b.String()
	}
	start := p.i
	for p.i < len(p.s) && strings.IndexByte(" \t,", p.s[p.i]) < 0 {
		p.i++
	}
	return p.s[start:p.i]
}
