package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/registry"
	"github.com/imagegate/imagegate/pkg/registry/storage/s3"
)

// DefaultListen is the listen address unless the configuration says
// otherwise: every address, port 5000 (zuul-registry's).
const DefaultListen = ":5000"

// DefaultStateDir is where generated TLS material and, by default, the
// filesystem storage live.
const DefaultStateDir = "/var/lib/imagegate-registry"

// DefaultShutdownTimeout is how long in-flight requests may run after
// SIGTERM before they are abandoned.
const DefaultShutdownTimeout = 30 * time.Second

// Config is the registry server's configuration file (YAML). Every key is
// optional but users (or anonymous_read) and, for S3, the bucket; unknown
// keys are refused. String values may use ${NAME} to insert the
// environment variable NAME (an unset variable is an error; $$ is a
// literal $); secrets also have *_env keys naming a variable.
type Config struct {
	// Listen lists the addresses to serve the registry on (TLS).
	Listen []string `yaml:"listen"`
	// StateDir holds generated TLS material and the default filesystem
	// storage.
	StateDir string `yaml:"state_dir"`
	// PublicURL is the registry's URL as clients see it, behind a load
	// balancer (https://registry.example.org); the token realm is
	// <public_url>/auth/token. Default: taken from each request.
	PublicURL string `yaml:"public_url"`
	// TLS is the server certificate; generated under state_dir when empty.
	TLS TLSConfig `yaml:"tls"`
	// TokenKey signs bearer tokens (at least 32 bytes). Replicas behind
	// one load balancer need the same key. Default: random per process.
	TokenKey    string `yaml:"token_key"`
	TokenKeyEnv string `yaml:"token_key_env"`
	// AnonymousRead allows pulls without credentials (default true).
	AnonymousRead *bool `yaml:"anonymous_read"`
	// Users are the accounts with read or write access.
	Users []UserConfig `yaml:"users"`
	// Storage is where the content lives.
	Storage StorageConfig `yaml:"storage"`
	// Prune is the retention policy used by `prune` and the schedule.
	Prune PruneConfig `yaml:"prune"`
	// Monitoring serves /metrics and /healthz over plain HTTP on its own
	// address (for Prometheus and load balancer checks); they are served
	// on the registry's addresses too.
	Monitoring MonitoringConfig `yaml:"monitoring"`
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// SIGTERM (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// ShutdownDelay is how long the server keeps serving after SIGTERM
	// with /healthz answering 503, before it closes its listeners, so
	// that load balancers take a replica out of rotation before its
	// connections are refused (default 0: close at once).
	ShutdownDelay Duration `yaml:"shutdown_delay"`
	// Log sets the log level (debug, info, warn, error) and format (text,
	// json).
	Log LogConfig `yaml:"log"`
	// PullThrough makes the registry a shared pull-through cache of
	// upstream registries (registry.WithUpstreams), which buildset
	// registries can use as their upstream.
	PullThrough PullThroughConfig `yaml:"pull_through"`

	// Schema is "imagegate" or "zuul-registry": the schema the file used.
	Schema string `yaml:"-"`
	// tokenKeyDerived: TokenKey was derived from zuul-registry's secret
	// (32 bytes, whatever the secret's length).
	tokenKeyDerived bool
}

// TLSConfig names the server certificate and key (PEM files). When both
// are empty, the server keeps a CA in <state_dir>/tls (ca.crt is what
// clients trust) and issues itself a certificate for this host's names and
// Hosts at every start.
type TLSConfig struct {
	Cert  string   `yaml:"cert"`
	Key   string   `yaml:"key"`
	Hosts []string `yaml:"hosts"`
}

// UserConfig is a registry account.
type UserConfig struct {
	Name        string          `yaml:"name"`
	Password    string          `yaml:"password"`
	PasswordEnv string          `yaml:"password_env"`
	Access      registry.Access `yaml:"access"`
}

// StorageConfig selects the storage driver.
type StorageConfig struct {
	// Driver is "filesystem" (default), "s3" or "swift".
	Driver     string           `yaml:"driver"`
	Filesystem FilesystemConfig `yaml:"filesystem"`
	S3         S3Config         `yaml:"s3"`
	Swift      SwiftConfig      `yaml:"swift"`
}

// FilesystemConfig configures the filesystem driver.
type FilesystemConfig struct {
	// Root is the data directory (default <state_dir>/storage).
	Root string `yaml:"root"`
}

// S3Config configures the S3 driver. Without access_key_id and
// secret_access_key (or their *_env keys), credentials come from the AWS
// default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared
// credentials file, web identity, the instance role). Redirect sends blob
// GETs to presigned URLs of the store, valid for RedirectExpiry (default
// 20m, at most 7d), instead of streaming the bytes through the registry.
type S3Config struct {
	Bucket             string   `yaml:"bucket"`
	Prefix             string   `yaml:"prefix"`
	Region             string   `yaml:"region"`
	Endpoint           string   `yaml:"endpoint"`
	PathStyle          bool     `yaml:"path_style"`
	AccessKeyID        string   `yaml:"access_key_id"`
	AccessKeyIDEnv     string   `yaml:"access_key_id_env"`
	SecretAccessKey    string   `yaml:"secret_access_key"`
	SecretAccessKeyEnv string   `yaml:"secret_access_key_env"`
	SessionTokenEnv    string   `yaml:"session_token_env"`
	CAFile             string   `yaml:"ca_file"`
	PartSize           Size     `yaml:"part_size"`
	ConsistentListing  bool     `yaml:"consistent_listing"`
	Redirect           bool     `yaml:"redirect"`
	RedirectExpiry     Duration `yaml:"redirect_expiry"`
}

// PruneConfig is the retention policy.
type PruneConfig struct {
	// Expiration removes manifests older than this (0: never).
	Expiration Duration `yaml:"expiration"`
	// GracePeriod protects blobs younger than this (default 1h).
	GracePeriod Duration `yaml:"grace_period"`
	// UploadMaxAge removes upload sessions older than this (default 1h).
	UploadMaxAge Duration `yaml:"upload_max_age"`
	// Schedule runs prune in the server every interval (0: only the
	// prune command).
	Schedule Duration `yaml:"schedule"`
}

// MonitoringConfig is the plain-HTTP listener for /metrics and /healthz.
type MonitoringConfig struct {
	Listen string `yaml:"listen"`
}

// LogConfig sets logging.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as Go writes it (90s, 1h30m) or in
// days (30d).
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration, or a whole number of days ("30d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q: use e.g. 30d, 12h, 90m", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid duration %q: use e.g. 30d, 12h, 90m", s)
	}
	return v, nil
}

// Size is a byte count: a number, or a number with a unit (KiB, MiB, GiB,
// KB, MB, GB).
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil {
		return fmt.Errorf("invalid size %q: use e.g. 16MiB", n.Value)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	units := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
	*s = Size(v * units[m[2]])
	return nil
}

var sizeRE = regexp.MustCompile(`^(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$`)

// LoadConfig reads and checks a configuration file. getenv resolves ${NAME}
// and *_env keys (os.Getenv when nil).
func LoadConfig(path string, getenv func(string) (string, bool)) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration: %w", err)
	}
	cfg, err := ParseConfig(b, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses and checks a configuration: imagegate's schema, or
// zuul-registry's (a file whose top level is a registry: key; see
// zuulconfig.go).
func ParseConfig(b []byte, getenv func(string) (string, bool)) (*Config, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	if root.Kind == 0 {
		return nil, errors.New("the configuration is empty")
	}
	if isZuulConfig(&root) {
		return parseZuulConfig(&root, getenv)
	}
	cfg := &Config{}
	if err := checkKeys(&root, reflect.TypeOf(cfg), ""); err != nil {
		return nil, err
	}
	if err := expand(&root, getenv); err != nil {
		return nil, err
	}
	if err := decodeStrict(&root, cfg); err != nil {
		return nil, err
	}
	cfg.Schema = "imagegate"
	if err := cfg.resolve(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeStrict encodes a (expanded) tree again and decodes it into v,
// refusing unknown fields (Node.Decode would not).
func decodeStrict(root *yaml.Node, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(root); err != nil {
		return err
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// checkKeys refuses keys that name no setting, with the setting's path
// and line.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKeys(c, t, path); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag != "" && tag != "-" {
				fields[tag] = f.Type
				names = append(names, tag)
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				slices.Sort(names)
				return fmt.Errorf("line %d: unknown setting %q (known in %s: %s)", k.Line, join(path, k.Value), orTop(path), strings.Join(names, ", "))
			}
			if err := checkKeys(n.Content[i+1], ft, join(path, k.Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

var plainRE = regexp.MustCompile(`^(true|false|-?[0-9]+)$`)

var varRE = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand replaces ${NAME} in every string scalar ($$ is a $).
func expand(n *yaml.Node, getenv func(string) (string, bool)) error {
	return substitute(n, varRE, "$", "${%s}", getenv)
}

// substitute replaces, in every string scalar holding trigger, each match
// of re: one whose first group names a variable by that environment
// variable's value, any other (an escape such as $$) by its last
// character. An unset variable refuses the document; placeholder is the
// format of its mention in the message.
func substitute(n *yaml.Node, re *regexp.Regexp, trigger, placeholder string, getenv func(string) (string, bool)) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, trigger) {
		var missing string
		out := re.ReplaceAllStringFunc(n.Value, func(m string) string {
			name := re.FindStringSubmatch(m)[1]
			if name == "" {
				return m[len(m)-1:]
			}
			v, ok := getenv(name)
			if !ok && missing == "" {
				missing = name
			}
			return v
		})
		if missing != "" {
			return fmt.Errorf("line %d: environment variable %s is not set (used as %s)", n.Line, missing, fmt.Sprintf(placeholder, missing))
		}
		n.Value = out
		// A number or boolean from the environment stays one (for ports,
		// path_style); anything else stays a string, quoted so that YAML
		// characters in a secret cannot change the document.
		if plainRE.MatchString(out) {
			n.Tag, n.Style = "", 0
		} else {
			n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
		}
	}
	for _, c := range n.Content {
		if err := substitute(c, re, trigger, placeholder, getenv); err != nil {
			return err
		}
	}
	return nil
}

// fromEnv resolves a *_env key into its value.
func fromEnv(getenv func(string) (string, bool), setting, value, envName string) (string, error) {
	if envName == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("%s and %s_env are both set: use one", setting, setting)
	}
	v, ok := getenv(envName)
	if !ok || v == "" {
		return "", fmt.Errorf("%s_env: environment variable %s is not set or empty", setting, envName)
	}
	return v, nil
}

// resolve fills defaults, reads *_env keys and checks every setting.
func (c *Config) resolve(getenv func(string) (string, bool)) error {
	var err error
	if len(c.Listen) == 0 {
		c.Listen = []string{DefaultListen}
	}
	for i, a := range c.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("listen[%d]: %q is not host:port (e.g. :5000, [::]:443): %v", i, a, err)
		}
	}
	if c.Monitoring.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Monitoring.Listen); err != nil {
			return fmt.Errorf("monitoring.listen: %q is not host:port: %v", c.Monitoring.Listen, err)
		}
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(c.StateDir) {
		if c.StateDir, err = filepath.Abs(c.StateDir); err != nil {
			return fmt.Errorf("state_dir: %w", err)
		}
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "https://") {
		return fmt.Errorf("public_url %q: must be an https:// URL", c.PublicURL)
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls.cert and tls.key must be set together (or neither, to generate a certificate)")
	}
	if c.TokenKey, err = fromEnv(getenv, "token_key", c.TokenKey, c.TokenKeyEnv); err != nil {
		return err
	}
	if c.TokenKey != "" && len(c.TokenKey) < 32 && !c.tokenKeyDerived {
		return fmt.Errorf("token_key: %d bytes, needs at least 32 (e.g. openssl rand -hex 32)", len(c.TokenKey))
	}
	if c.AnonymousRead == nil {
		t := true
		c.AnonymousRead = &t
	}
	seen := map[string]bool{}
	for i := range c.Users {
		u := &c.Users[i]
		where := fmt.Sprintf("users[%d]", i)
		if u.Name == "" {
			return fmt.Errorf("%s: name is not set", where)
		}
		where += " (" + u.Name + ")"
		if seen[u.Name] {
			return fmt.Errorf("%s: the name is used twice", where)
		}
		seen[u.Name] = true
		if u.Password, err = fromEnv(getenv, where+": password", u.Password, u.PasswordEnv); err != nil {
			return err
		}
		if u.Password == "" {
			return fmt.Errorf("%s: no password: set password or password_env", where)
		}
		if u.Access == "" {
			return fmt.Errorf("%s: access is not set: read or write", where)
		}
	}
	if len(c.Users) == 0 && !*c.AnonymousRead {
		return errors.New("users is empty and anonymous_read is false: nobody could use the registry")
	}
	if err := c.PullThrough.resolve(getenv); err != nil {
		return err
	}
	switch c.Storage.Driver {
	case "", "filesystem":
		c.Storage.Driver = "filesystem"
		if c.Storage.Filesystem.Root == "" {
			c.Storage.Filesystem.Root = filepath.Join(c.StateDir, "storage")
		}
	case "s3":
		s := &c.Storage.S3
		if s.Bucket == "" {
			return errors.New("storage.s3.bucket is not set")
		}
		if s.AccessKeyID, err = fromEnv(getenv, "storage.s3.access_key_id", s.AccessKeyID, s.AccessKeyIDEnv); err != nil {
			return err
		}
		if s.SecretAccessKey, err = fromEnv(getenv, "storage.s3.secret_access_key", s.SecretAccessKey, s.SecretAccessKeyEnv); err != nil {
			return err
		}
		if (s.AccessKeyID == "") != (s.SecretAccessKey == "") {
			return errors.New("storage.s3.access_key_id and storage.s3.secret_access_key must be set together (or neither, for the AWS default credential chain)")
		}
		if s.Endpoint != "" && !strings.HasPrefix(s.Endpoint, "https://") && !strings.HasPrefix(s.Endpoint, "http://") {
			return fmt.Errorf("storage.s3.endpoint %q: must be an http(s):// URL", s.Endpoint)
		}
		if s.RedirectExpiry == 0 {
			s.RedirectExpiry = Duration(s3.DefaultURLExpiry)
		}
		if e := time.Duration(s.RedirectExpiry); e < time.Second || e > s3.MaxURLExpiry {
			return fmt.Errorf("storage.s3.redirect_expiry %s: must be between 1s and 7d (S3's limit for presigned URLs)", e)
		}
	case "swift":
		if err := c.Storage.Swift.resolve(getenv); err != nil {
			return err
		}
	default:
		return fmt.Errorf("storage.driver %q: use filesystem, s3 or swift", c.Storage.Driver)
	}
	if c.Prune.GracePeriod == 0 {
		c.Prune.GracePeriod = Duration(time.Hour)
	}
	if c.Prune.UploadMaxAge == 0 {
		c.Prune.UploadMaxAge = Duration(time.Hour)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	switch c.Log.Level {
	case "", "info", "debug", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("log.format %q: use text or json", c.Log.Format)
	}
	return nil
}
