package zuul

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/imagegate/imagegate/pkg/pki"
)

// BuildsetRegistry is the connection data of a buildset registry, as the
// buildset_registry module returns it and zuul_return carries it in
// secret_data. It is also the parameter type of every module that talks to
// the buildset registry, so the documentation of the suboptions is shared.
type BuildsetRegistry struct {
	Host     string `ansible:"host,required" json:"host"`
	Port     int    `ansible:"port" default:"5000" json:"port"`
	Username string `ansible:"username" default:"zuul" json:"username"`
	Password string `ansible:"password,required,no_log" json:"password"`
	// Cert is the PEM of the CA that signed the registry's certificate.
	Cert string `ansible:"cert,required" json:"cert"`
}

// Validate checks that the connection data is usable.
func (b *BuildsetRegistry) Validate() error {
	if b.Host == "" {
		return errors.New("buildset_registry.host is empty")
	}
	if b.Port <= 0 || b.Port > 65535 {
		return fmt.Errorf("buildset_registry.port %d is not a TCP port", b.Port)
	}
	if b.Password == "" {
		return errors.New("buildset_registry.password is empty")
	}
	if _, err := pki.CertPool([]byte(b.Cert)); err != nil {
		return fmt.Errorf("buildset_registry.cert: %w", err)
	}
	return nil
}

// Alias is the host name clients use for the registry: BuildsetAlias when
// the host is an IP address (which use-buildset-registry maps in
// /etc/hosts), the host itself otherwise.
func (b *BuildsetRegistry) Alias() string {
	if net.ParseIP(strings.Trim(b.Host, "[]")) != nil {
		return pki.BuildsetAlias
	}
	return b.Host
}

// Location is <alias>:<port>, the registry location clients are configured
// with.
func (b *BuildsetRegistry) Location() string { return HostPort(b.Alias(), b.Port) }

// Address is <host>:<port> with the real host, bracketed if IPv6, for
// clients in imagegate's own modules, which need no alias.
func (b *BuildsetRegistry) Address() string { return HostPort(b.Host, b.Port) }

// ErrNoBuildsetRegistry means that no buildset registry is known to the
// job: the task does not pass buildset_registry, and the job's result data
// holds none. Whether that is a failure is the caller's decision: a build
// without one builds for the local Docker daemon only.
var ErrNoBuildsetRegistry = errors.New("no buildset registry is known to this job: make the job depend on one that runs it " +
	"(opendev-buildset-registry), start one earlier in the job (the run-buildset-registry role or the buildset_registry module), " +
	"or pass buildset_registry")

// ResolveBuildsetRegistry returns the buildset registry a module works
// with: param, the task's buildset_registry, when it is set; otherwise
// secret_data.buildset_registry of zuul.executor.result_data_file, as
// upstream roles read it when the registry was started earlier in the same
// job (a zuul_return is not visible as a variable to later playbooks of the
// job that made it).
//
// Every module resolves it here, with one behaviour: an absent parameter
// with an absent file, or a file without the entry, is an error matching
// ErrNoBuildsetRegistry; an unreadable or corrupt file, or an entry that is
// not valid connection data, is a failure naming the file; an invalid
// parameter is a failure naming it. The password read from the file is
// passed to redact (a module's AddSecret) before anything else can print
// it; redact may be nil.
func ResolveBuildsetRegistry(param *BuildsetRegistry, vars *Vars, redact func(secret string)) (*BuildsetRegistry, error) {
	if redact == nil {
		redact = func(string) {}
	}
	if param != nil {
		redact(param.Password)
		if err := param.Validate(); err != nil {
			return nil, err
		}
		return param, nil
	}
	file := ""
	if vars != nil {
		file = vars.Executor.ResultDataFile
	}
	if file == "" {
		return nil, fmt.Errorf("buildset_registry is not set and zuul.executor.result_data_file is empty: %w", ErrNoBuildsetRegistry)
	}
	_, secret, err := ReadResultData(file)
	if err != nil {
		return nil, err
	}
	raw, ok := secret["buildset_registry"]
	if !ok {
		return nil, fmt.Errorf("buildset_registry is not set and %s holds no secret_data.buildset_registry: %w", file, ErrNoBuildsetRegistry)
	}
	if m, ok := raw.(map[string]any); ok {
		if pw, ok := m["password"].(string); ok {
			redact(pw)
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("secret_data.buildset_registry in %s: %w", file, err)
	}
	var br BuildsetRegistry
	if err := json.Unmarshal(b, &br); err != nil {
		return nil, fmt.Errorf("secret_data.buildset_registry in %s is not the buildset registry's connection data: %w", file, err)
	}
	if err := br.Validate(); err != nil {
		return nil, fmt.Errorf("secret_data.buildset_registry in %s: %w", file, err)
	}
	return &br, nil
}

// IntermediateRegistry is the intermediate registry secret of a job.
type IntermediateRegistry struct {
	Host     string `ansible:"host,required" json:"host"`
	Port     int    `ansible:"port,required" json:"port"`
	Username string `ansible:"username" json:"username"`
	Password string `ansible:"password,no_log" json:"password"`
	// Cert optionally holds a PEM CA to trust for this registry, for sites
	// whose intermediate registry uses a private CA.
	Cert string `ansible:"cert" json:"cert"`
	// CachePipelines are the pipelines whose builds may write the BuildKit
	// cache of merged code (DefaultCachePipelines when empty). It is part
	// of the secret, which only the site's config project defines, because
	// a change can rewrite its own job's variables in check: no variable
	// can widen it.
	CachePipelines []string `ansible:"cache_pipelines" json:"cache_pipelines,omitempty"`
}

// Address is <host>:<port>, bracketed if IPv6.
func (r *IntermediateRegistry) Address() string { return HostPort(r.Host, r.Port) }
