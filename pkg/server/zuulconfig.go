package server

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/registry"
)

// zuulConfig is zuul-registry's registry.yaml: everything under a
// top-level registry: key. Its keys are zuul-registry's, spelled as it
// spells them.
type zuulConfig struct {
	Registry zuulRegistry `yaml:"registry"`
}

type zuulRegistry struct {
	Address   string      `yaml:"address"`
	Port      *int        `yaml:"port"`
	PublicURL string      `yaml:"public-url"`
	TLSCert   string      `yaml:"tls-cert"`
	TLSKey    string      `yaml:"tls-key"`
	Secret    string      `yaml:"secret"`
	Users     []zuulUser  `yaml:"users"`
	Storage   zuulStorage `yaml:"storage"`
}

type zuulUser struct {
	Name   string `yaml:"name"`
	Pass   string `yaml:"pass"`
	Access string `yaml:"access"`
}

// zuulStorage is zuul-registry's storage section: driver filesystem with
// root, or swift with cloud and container; expiration in seconds.
type zuulStorage struct {
	Driver     string `yaml:"driver"`
	Root       string `yaml:"root"`
	Cloud      string `yaml:"cloud"`
	Container  string `yaml:"container"`
	Expiration *int64 `yaml:"expiration"`
}

// isZuulConfig reports whether a parsed file is in zuul-registry's schema:
// a mapping whose only top-level key is registry.
func isZuulConfig(root *yaml.Node) bool {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == yaml.MappingNode && len(n.Content) >= 2 && n.Content[0].Value == "registry"
}

// zuulVarRE is zuul-registry's environment placeholder: %(NAME), with the
// s of Python's %(NAME)s optional.
var zuulVarRE = regexp.MustCompile(`%\(([A-Za-z_][A-Za-z0-9_]*)\)s?`)

// expandZuul replaces %(NAME) placeholders in every string scalar with
// the environment variable NAME. zuul-registry substitutes in the file's
// text before parsing it; substituting in parsed values gives the same
// result for values, and a secret holding YAML syntax cannot change the
// document. Unlike zuul-registry, which leaves the placeholder of an
// unset variable as it is (a literal password or secret), an unset
// variable refuses the start.
func expandZuul(n *yaml.Node, getenv func(string) (string, bool)) error {
	return substitute(n, zuulVarRE, "%(", "%%(%s)", getenv)
}

// parseZuulConfig reads zuul-registry's schema and maps it onto Config:
//
//	registry.address, registry.port     listen: ["<address>:<port>"]
//	registry.public-url                 public_url
//	registry.tls-cert, registry.tls-key tls.cert, tls.key
//	registry.secret                     token_key: SHA-256 of the secret (tokens signed with it, not a constant)
//	registry.users[].name, pass, access users[].name, password, access
//	registry.storage.driver: filesystem storage.filesystem.root = root
//	registry.storage.driver: swift      storage.swift.cloud, container
//	registry.storage.expiration         prune.expiration (seconds)
//
// Anonymous reads stay on, as in zuul-registry (which issues read tokens to
// anyone); read users can log in, write users push.
func parseZuulConfig(root *yaml.Node, getenv func(string) (string, bool)) (*Config, error) {
	zc := &zuulConfig{}
	if err := checkKeys(root, reflect.TypeOf(zc), ""); err != nil {
		return nil, fmt.Errorf("zuul-registry configuration: %w", err)
	}
	if err := expandZuul(root, getenv); err != nil {
		return nil, fmt.Errorf("zuul-registry configuration: %w", err)
	}
	if err := decodeStrict(root, zc); err != nil {
		return nil, fmt.Errorf("zuul-registry configuration: %w", err)
	}
	z := zc.Registry
	anon := true
	cfg := &Config{Schema: "zuul-registry", PublicURL: z.PublicURL, AnonymousRead: &anon,
		TLS: TLSConfig{Cert: z.TLSCert, Key: z.TLSKey}}
	port := 5000
	if z.Port != nil {
		port = *z.Port
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("registry.port %d: not a TCP port", port)
	}
	cfg.Listen = []string{net.JoinHostPort(z.Address, strconv.Itoa(port))}
	if z.Secret != "" {
		sum := sha256.Sum256([]byte(z.Secret))
		cfg.TokenKey, cfg.tokenKeyDerived = string(sum[:]), true
	}
	for i, u := range z.Users {
		where := fmt.Sprintf("registry.users[%d]", i)
		if u.Name != "" {
			where += " (" + u.Name + ")"
		}
		if u.Pass == "" {
			return nil, fmt.Errorf("%s: pass is not set", where)
		}
		var access registry.Access
		switch u.Access {
		case "write":
			access = registry.AccessWrite
		case "read":
			access = registry.AccessRead
		default:
			return nil, fmt.Errorf("%s: access %q: use read or write", where, u.Access)
		}
		cfg.Users = append(cfg.Users, UserConfig{Name: u.Name, Password: u.Pass, Access: access})
	}
	s := z.Storage
	switch s.Driver {
	case "filesystem":
		if s.Cloud != "" || s.Container != "" {
			return nil, errors.New("registry.storage: cloud and container are settings of driver swift, not filesystem")
		}
		if s.Root == "" {
			return nil, errors.New("registry.storage.root is not set (driver filesystem)")
		}
		cfg.Storage = StorageConfig{Driver: "filesystem", Filesystem: FilesystemConfig{Root: s.Root}}
	case "swift":
		if s.Root != "" {
			return nil, errors.New("registry.storage.root is a setting of driver filesystem, not swift")
		}
		if s.Cloud == "" || s.Container == "" {
			return nil, errors.New("registry.storage: driver swift needs cloud (a clouds.yaml cloud) and container")
		}
		cfg.Storage = StorageConfig{Driver: "swift", Swift: SwiftConfig{Cloud: s.Cloud, Container: s.Container}}
	case "":
		return nil, errors.New("registry.storage.driver is not set: filesystem or swift")
	default:
		return nil, fmt.Errorf("registry.storage.driver %q: use filesystem or swift", s.Driver)
	}
	if s.Expiration != nil {
		if *s.Expiration <= 0 {
			return nil, fmt.Errorf("registry.storage.expiration %d: a number of seconds, above 0", *s.Expiration)
		}
		cfg.Prune.Expiration = Duration(time.Duration(*s.Expiration) * time.Second)
	}
	if err := cfg.resolve(getenv); err != nil {
		return nil, fmt.Errorf("zuul-registry configuration: %w", err)
	}
	return cfg, nil
}
