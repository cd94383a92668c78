package storage_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

func TestValidateRepository(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"team/app", true},
		{"quay.io/org/img", true},
		{"a-b__c.d/e---f", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"A", false},
		{"a/", false},
		{"/a", false},
		{"a//b", false},
		{"..", false},
		{"a/../b", false},
		{"a/./b", false},
		{"_a", false},
		{"a/_b", false},
		{"a.", false},
		{"a___b", false},
		{"a b", false},
		{"a\\b", false},
	} {
		err := storage.ValidateRepository(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, storage.ErrInvalid)) {
			t.Errorf("ValidateRepository(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestValidateKeyAndTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"latest", true},
		{"_x", true},
		{"sha256:" + strings.Repeat("a", 64), true},
		{"v1.0-rc_1+build=2", true},
		{"", false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{strings.Repeat("k", 256), false},
	} {
		if err := storage.ValidateKey(tc.key); (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		table storage.Table
		ok    bool
	}{
		{storage.Blobs, true},
		{storage.Manifests, true},
		{storage.Tags, true},
		{storage.Referrers(digest.FromString("x")), true},
		{storage.Referrers(digest.SHA512.FromString("x")), true},
		{"", false},
		{"uploads", false},
		{"referrers/sha256", false},
		{"referrers/../x", false},
		{"referrers/sha256/.." + "/x", false},
	} {
		if err := storage.ValidateTable(tc.table); (err == nil) != tc.ok {
			t.Errorf("ValidateTable(%q) = %v, want ok=%v", tc.table, err, tc.ok)
		}
	}
}
