package server

import (
	"fmt"
	"strings"
	"time"
)

// PullThroughConfig lists the upstream registries the registry caches,
// and how long an upstream tag is served before it is revalidated
// (default registry.DefaultUpstreamTagTTL).
type PullThroughConfig struct {
	Upstreams    []UpstreamConfig `yaml:"upstreams"`
	TagTTL       *Duration        `yaml:"tag_ttl"`
	FetchTimeout Duration         `yaml:"fetch_timeout"`
}

// UpstreamConfig is one cached namespace: Registry as image references
// name it (docker.io content is stored without a prefix, others under
// <registry>/), URL the upstream's (https://registry-1.docker.io), and
// optionally an account (for a higher rate limit) and a CA file.
type UpstreamConfig struct {
	Registry    string `yaml:"registry"`
	URL         string `yaml:"url"`
	Username    string `yaml:"username"`
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
	CAFile      string `yaml:"ca_file"`
}

// resolve reads the upstreams' secrets and checks them; the registry
// checks the namespaces again when it starts (names, duplicates).
func (p *PullThroughConfig) resolve(getenv func(string) (string, bool)) error {
	if p.TagTTL != nil && *p.TagTTL < 0 {
		return fmt.Errorf("pull_through.tag_ttl: %s is negative", time.Duration(*p.TagTTL))
	}
	if p.FetchTimeout < 0 {
		return fmt.Errorf("pull_through.fetch_timeout: %s is negative", time.Duration(p.FetchTimeout))
	}
	seen := map[string]int{}
	for i := range p.Upstreams {
		u := &p.Upstreams[i]
		where := fmt.Sprintf("pull_through.upstreams[%d]", i)
		if u.Registry == "" {
			return fmt.Errorf("%s: registry is not set (docker.io, quay.io, ...)", where)
		}
		where += " (" + u.Registry + ")"
		if j, dup := seen[u.Registry]; dup {
			return fmt.Errorf("%s: the registry is already listed at index %d", where, j)
		}
		seen[u.Registry] = i
		if !strings.HasPrefix(u.URL, "https://") {
			return fmt.Errorf("%s: url %q: must be an https:// URL such as https://registry-1.docker.io", where, u.URL)
		}
		var err error
		if u.Password, err = fromEnv(getenv, where+": password", u.Password, u.PasswordEnv); err != nil {
			return err
		}
		if (u.Username == "") != (u.Password == "") {
			return fmt.Errorf("%s: username and password (or password_env) must be set together", where)
		}
	}
	return nil
}
