package swift

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Auth says how the driver authenticates. The first that applies wins:
//
//  1. Cloud: the cloud of that name in clouds.yaml (Keystone v3 with a
//     password or an application credential, as the OpenStack clients and
//     zuul-registry read it): CloudsFile, or the first of
//     $OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
//     ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml, with the
//     secure.yaml beside it merged in.
//  2. AuthURL: Swift's v1 auth (tempauth, swauth) with User
//     (account:user) and Key.
//  3. The environment: OS_CLOUD (a cloud of clouds.yaml, as in 1.), else
//     ST_AUTH, ST_USER and ST_KEY (v1 auth, as python-swiftclient reads
//     them), else OS_AUTH_URL with OS_USERNAME and OS_PASSWORD or
//     OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET
//     (and OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, ...: Keystone).
type Auth struct {
	Cloud      string
	CloudsFile string
	AuthURL    string
	User       string
	Key        string
	// Region is the region of the object-store endpoint in Keystone's
	// catalog (default: the cloud's region_name, or OS_REGION_NAME).
	Region string
	// Interface is the endpoint interface: public (default), internal or
	// admin (default: the cloud's interface, or OS_INTERFACE).
	Interface string
}

// reauthMargin is how long before its expiry a Keystone token is renewed,
// so that a long streamed request does not start with a token about to
// expire (a streamed body cannot be sent again after a 401).
const reauthMargin = 10 * time.Minute

// connect authenticates and returns the connection to the account.
func (d *Driver) connect(ctx context.Context, cfg Config) (*conn, error) {
	getenv := d.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	a := cfg.Auth
	extra, err := readCAFile(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	switch {
	case a.Cloud != "":
		return d.connectCloud(ctx, a, a.Cloud, extra, fmt.Sprintf("cloud %q", a.Cloud))
	case a.AuthURL != "":
		return d.connectV1(ctx, a.AuthURL, a.User, a.Key, extra, "auth_url "+a.AuthURL)
	case getenv("OS_CLOUD") != "":
		return d.connectCloud(ctx, a, getenv("OS_CLOUD"), extra, fmt.Sprintf("cloud %q (OS_CLOUD)", getenv("OS_CLOUD")))
	case getenv("ST_AUTH") != "":
		return d.connectV1(ctx, getenv("ST_AUTH"), getenv("ST_USER"), getenv("ST_KEY"), extra, "ST_AUTH "+getenv("ST_AUTH"))
	case getenv("OS_AUTH_URL") != "":
		ao, err := authOptionsFromEnv(getenv)
		if err != nil {
			return nil, fmt.Errorf("swift storage: the OS_* environment variables: %w", err)
		}
		eo := gophercloud.EndpointOpts{Region: firstOf(a.Region, getenv("OS_REGION_NAME")),
			Availability: availability(firstOf(a.Interface, getenv("OS_INTERFACE")))}
		return d.connectKeystone(ctx, ao, eo, d.tlsConfig(extra, nil), "OS_AUTH_URL "+ao.IdentityEndpoint)
	}
	return nil, errors.New("swift storage: no credentials: set cloud (a clouds.yaml cloud), or auth_url, user and key (v1 auth), or the OS_* (or ST_*) environment variables")
}

// authOptionsFromEnv reads the OS_* variables gophercloud reads, through
// getenv.
func authOptionsFromEnv(getenv func(string) string) (gophercloud.AuthOptions, error) {
	ao := gophercloud.AuthOptions{
		IdentityEndpoint:            getenv("OS_AUTH_URL"),
		Username:                    getenv("OS_USERNAME"),
		UserID:                      getenv("OS_USERID"),
		Password:                    getenv("OS_PASSWORD"),
		TenantID:                    firstOf(getenv("OS_PROJECT_ID"), getenv("OS_TENANT_ID")),
		TenantName:                  firstOf(getenv("OS_PROJECT_NAME"), getenv("OS_TENANT_NAME")),
		DomainID:                    firstOf(getenv("OS_USER_DOMAIN_ID"), getenv("OS_DOMAIN_ID")),
		DomainName:                  firstOf(getenv("OS_USER_DOMAIN_NAME"), getenv("OS_DOMAIN_NAME")),
		ApplicationCredentialID:     getenv("OS_APPLICATION_CREDENTIAL_ID"),
		ApplicationCredentialName:   getenv("OS_APPLICATION_CREDENTIAL_NAME"),
		ApplicationCredentialSecret: getenv("OS_APPLICATION_CREDENTIAL_SECRET"),
	}
	switch {
	case ao.ApplicationCredentialSecret != "":
		if ao.ApplicationCredentialID == "" && ao.ApplicationCredentialName == "" {
			return ao, errors.New("OS_APPLICATION_CREDENTIAL_SECRET needs OS_APPLICATION_CREDENTIAL_ID (or _NAME with OS_USERNAME)")
		}
		// An application credential carries its own scope.
		ao.TenantID, ao.TenantName = "", ""
	case ao.Username == "" && ao.UserID == "":
		return ao, errors.New("set OS_USERNAME (or OS_USERID) and OS_PASSWORD, or OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET")
	case ao.Password == "":
		return ao, errors.New("OS_PASSWORD is not set")
	}
	if ao.TenantName != "" {
		ao.Scope = &gophercloud.AuthScope{ProjectName: ao.TenantName,
			DomainID:   firstOf(getenv("OS_PROJECT_DOMAIN_ID"), ao.DomainID),
			DomainName: firstOf(getenv("OS_PROJECT_DOMAIN_NAME"), ao.DomainName)}
		if ao.Scope.DomainID != "" {
			ao.Scope.DomainName = ""
		}
	} else if ao.TenantID != "" {
		ao.Scope = &gophercloud.AuthScope{ProjectID: ao.TenantID}
	}
	return ao, nil
}

func (d *Driver) connectCloud(ctx context.Context, a Auth, cloud string, extra []byte, source string) (*conn, error) {
	popts := []clouds.ParseOption{clouds.WithCloudName(cloud)}
	if a.CloudsFile != "" {
		popts = append(popts, clouds.WithLocations(a.CloudsFile))
	}
	if a.Region != "" {
		popts = append(popts, clouds.WithRegion(a.Region))
	}
	if a.Interface != "" {
		popts = append(popts, clouds.WithEndpointType(a.Interface))
	}
	ao, eo, tc, err := clouds.Parse(popts...)
	if err != nil {
		var nf clouds.ErrFileNotFound
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("swift storage: %s: no clouds.yaml: %v", source, err)
		}
		return nil, fmt.Errorf("swift storage: %s: %v", source, err)
	}
	if ao.IdentityEndpoint == "" {
		return nil, fmt.Errorf("swift storage: %s: auth.auth_url is not set in clouds.yaml", source)
	}
	return d.connectKeystone(ctx, ao, eo, d.tlsConfig(extra, tc), source)
}

func (d *Driver) connectKeystone(ctx context.Context, ao gophercloud.AuthOptions, eo gophercloud.EndpointOpts, tc *tls.Config, source string) (*conn, error) {
	ao.AllowReauth = true
	pc, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("swift storage: %s: auth_url %q: %v", source, ao.IdentityEndpoint, err)
	}
	pc.HTTPClient = http.Client{Transport: d.roundTripper(tc)}
	pc.ReauthBeforeTokenExpiration = reauthMargin
	if err := openstack.Authenticate(ctx, pc, ao); err != nil {
		return nil, keystoneError(source, ao.IdentityEndpoint, err)
	}
	sc, err := openstack.NewObjectStorageV1(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("swift storage: %s: no object-store endpoint in Keystone's catalog for region %q, interface %q: check region_name and interface: %v",
			source, eo.Region, interfaceName(eo.Availability), err)
	}
	return newConn(pc, sc.Endpoint, d.container, source), nil
}

// keystoneError explains a failed Keystone authentication without
// repeating what was sent.
func keystoneError(source, authURL string, err error) error {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		switch ue.Actual {
		case http.StatusUnauthorized:
			return fmt.Errorf("swift storage: %s: Keystone at %s refused the credentials (401): check the user name and password, or the application credential ID and secret, and their domain and project", source, authURL)
		case http.StatusNotFound:
			return fmt.Errorf("swift storage: %s: Keystone at %s: a user, project or domain named in the credentials does not exist (404)", source, authURL)
		case http.StatusBadRequest:
			return fmt.Errorf("swift storage: %s: Keystone at %s refused the request (400): the credentials are incomplete (user and user domain, project and project domain)", source, authURL)
		}
		return fmt.Errorf("swift storage: %s: Keystone at %s answered %d", source, authURL, ue.Actual)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("swift storage: %s: Keystone at %s: %w", source, authURL, err)
	}
	return fmt.Errorf("swift storage: %s: cannot reach Keystone at %s: check auth_url: %v", source, authURL, err)
}

func (d *Driver) connectV1(ctx context.Context, authURL, user, key string, extra []byte, source string) (*conn, error) {
	if user == "" || key == "" {
		return nil, fmt.Errorf("swift storage: %s: v1 auth needs a user (account:user) and a key", source)
	}
	hc := http.Client{Transport: d.roundTripper(d.tlsConfig(extra, nil))}
	// v1 auth: GET the auth URL with X-Auth-User and X-Auth-Key; the
	// answer carries X-Storage-Url and X-Auth-Token.
	login := func(ctx context.Context) (storageURL, token string, err error) {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
		if err != nil {
			return "", "", err
		}
		hreq.Header.Set("X-Auth-User", user)
		hreq.Header.Set("X-Auth-Key", key)
		resp, err := hc.Do(hreq)
		if err != nil {
			return "", "", netError(err)
		}
		closeBody(resp)
		if resp.StatusCode != http.StatusOK {
			return "", "", &statusError{method: http.MethodGet, what: "the auth URL", status: resp.StatusCode}
		}
		storageURL, token = resp.Header.Get("X-Storage-Url"), resp.Header.Get("X-Auth-Token")
		if storageURL == "" || token == "" {
			return "", "", errors.New("the answer has no X-Storage-Url or X-Auth-Token")
		}
		return storageURL, token, nil
	}
	storageURL, token, err := login(ctx)
	if err != nil {
		switch st := status(err); {
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			return nil, fmt.Errorf("swift storage: %s: v1 auth refused the credentials (%d): check user and key", source, st)
		case st != 0:
			return nil, fmt.Errorf("swift storage: %s: v1 auth answered %d: check auth_url", source, st)
		}
		return nil, fmt.Errorf("swift storage: %s: cannot reach the v1 auth endpoint: check auth_url: %v", source, err)
	}
	pc := &gophercloud.ProviderClient{HTTPClient: hc}
	pc.UseTokenLock()
	pc.SetToken(token)
	pc.ReauthFunc = func(ctx context.Context) error {
		_, token, err := login(ctx)
		if err != nil {
			return err
		}
		pc.SetToken(token)
		return nil
	}
	return newConn(pc, storageURL, d.container, source), nil
}

func readCAFile(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("swift storage: ca_file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("swift storage: ca_file %s holds no PEM certificate", path)
	}
	return pem, nil
}

// tlsConfig is a clouds.yaml's TLS settings (cacert, verify, client
// certificate) when given, else the system's CAs, plus the ca_file's CAs.
func (d *Driver) tlsConfig(extra []byte, fromCloud *tls.Config) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if fromCloud != nil {
		tc = fromCloud.Clone()
		if tc.MinVersion == 0 {
			tc.MinVersion = tls.VersionTLS12
		}
	}
	if extra != nil {
		pool := tc.RootCAs
		if pool == nil {
			if sys, err := x509.SystemCertPool(); err == nil && sys != nil {
				pool = sys
			} else {
				pool = x509.NewCertPool()
			}
		}
		pool = pool.Clone()
		pool.AppendCertsFromPEM(extra)
		tc.RootCAs = pool
	}
	return tc
}

func (d *Driver) roundTripper(tc *tls.Config) http.RoundTripper {
	if d.transport != nil {
		return d.transport
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 64
	return tr
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func availability(iface string) gophercloud.Availability {
	switch strings.TrimSuffix(iface, "URL") {
	case "internal":
		return gophercloud.AvailabilityInternal
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityPublic
}

func interfaceName(a gophercloud.Availability) string { return string(a) }
