package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/registry/storage/swift"
)

// SwiftConfig configures the OpenStack Swift driver (storage/swift). The
// credentials come from a clouds.yaml cloud (Cloud, as zuul-registry
// takes it), from Swift's v1 auth (AuthURL, User, Key), or, when neither
// is set, from the OS_* (or ST_*) environment variables. Redirect sends
// blob GETs to temp URLs of the container, signed with TempURLKey (or the
// container's or account's key), valid for RedirectExpiry.
type SwiftConfig struct {
	Container         string   `yaml:"container"`
	Cloud             string   `yaml:"cloud"`
	CloudsFile        string   `yaml:"clouds_file"`
	Region            string   `yaml:"region"`
	Interface         string   `yaml:"interface"`
	AuthURL           string   `yaml:"auth_url"`
	User              string   `yaml:"user"`
	Key               string   `yaml:"key"`
	KeyEnv            string   `yaml:"key_env"`
	CAFile            string   `yaml:"ca_file"`
	SegmentSize       Size     `yaml:"segment_size"`
	ConsistentListing bool     `yaml:"consistent_listing"`
	Redirect          bool     `yaml:"redirect"`
	RedirectExpiry    Duration `yaml:"redirect_expiry"`
	TempURLKey        string   `yaml:"temp_url_key"`
	TempURLKeyEnv     string   `yaml:"temp_url_key_env"`
}

// resolve reads the *_env keys of the Swift settings and checks them.
func (s *SwiftConfig) resolve(getenv func(string) (string, bool)) error {
	var err error
	if s.Container == "" {
		return errors.New("storage.swift.container is not set")
	}
	if s.Key, err = fromEnv(getenv, "storage.swift.key", s.Key, s.KeyEnv); err != nil {
		return err
	}
	if s.TempURLKey, err = fromEnv(getenv, "storage.swift.temp_url_key", s.TempURLKey, s.TempURLKeyEnv); err != nil {
		return err
	}
	if s.Cloud != "" && s.AuthURL != "" {
		return errors.New("storage.swift.cloud and storage.swift.auth_url are both set: use a clouds.yaml cloud (Keystone) or v1 auth, not both")
	}
	if s.AuthURL != "" {
		if !strings.HasPrefix(s.AuthURL, "https://") && !strings.HasPrefix(s.AuthURL, "http://") {
			return fmt.Errorf("storage.swift.auth_url %q: must be an http(s):// URL", s.AuthURL)
		}
		if s.User == "" || s.Key == "" {
			return errors.New("storage.swift.auth_url (v1 auth) needs storage.swift.user (account:user) and storage.swift.key (or key_env)")
		}
	} else if s.User != "" || s.Key != "" {
		return errors.New("storage.swift.user and storage.swift.key are for v1 auth: set storage.swift.auth_url too (Keystone credentials go in clouds.yaml)")
	}
	switch s.Interface {
	case "", "public", "internal", "admin":
	default:
		return fmt.Errorf("storage.swift.interface %q: use public, internal or admin", s.Interface)
	}
	if s.SegmentSize != 0 && (s.SegmentSize < swift.MinSegmentSize || s.SegmentSize > swift.MaxSegmentSize) {
		return fmt.Errorf("storage.swift.segment_size %d: must be between 1MiB and 5GiB (Swift's largest object)", s.SegmentSize)
	}
	if s.RedirectExpiry == 0 {
		s.RedirectExpiry = Duration(swift.DefaultURLExpiry)
	}
	if e := time.Duration(s.RedirectExpiry); e < time.Second || e > swift.MaxURLExpiry {
		return fmt.Errorf("storage.swift.redirect_expiry %s: must be between 1s and 7d", e)
	}
	return nil
}
