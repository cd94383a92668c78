package clientconf

import (
	"net"
	"strings"
)

// hostsAlias plans the /etc/hosts line mapping ip to alias.
func (p *plan) hostsAlias(path, ip, alias string) error {
	_, err := p.edit("hosts", path, 0o644, func(before []byte, _ bool) ([]byte, error) {
		return editHosts(before, ip, alias), nil
	})
	return err
}

// editHosts returns hosts content in which alias resolves to ip. A line that
// already maps ip to alias (alone or among other names) is enough. Any other
// line naming alias would shadow ours (resolvers take the first match), so
// alias is removed from it, and the line dropped if no name is left: a stale
// entry from an earlier registry must not win. Comments and every other line
// are kept byte for byte.
func editHosts(before []byte, ip, alias string) []byte {
	want := net.ParseIP(ip)
	lines := strings.SplitAfter(string(before), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var out []string
	found := false
	for _, line := range lines {
		body, comment, _ := strings.Cut(strings.TrimRight(line, "\n"), "#")
		fields := strings.Fields(body)
		if len(fields) < 2 || !containsFold(fields[1:], alias) {
			out = append(out, line)
			continue
		}
		if got := net.ParseIP(fields[0]); got != nil && got.Equal(want) && !found {
			found = true
			out = append(out, line)
			continue
		}
		var names []string
		for _, n := range fields[1:] {
			if !strings.EqualFold(n, alias) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		nl := fields[0] + "\t" + strings.Join(names, " ")
		if comment != "" {
			nl += " #" + comment
		}
		out = append(out, nl+"\n")
	}
	if !found {
		if n := len(out); n > 0 && !strings.HasSuffix(out[n-1], "\n") {
			out[n-1] += "\n"
		}
		out = append(out, ip+"\t"+alias+"\n")
	}
	return []byte(strings.Join(out, ""))
}

func containsFold(list []string, s string) bool {
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}
