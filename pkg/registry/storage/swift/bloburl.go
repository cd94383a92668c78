package swift

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
)

// BlobURL implements storage.BlobURLer with a Swift temp URL (the tempurl
// middleware: an HMAC-SHA256 of the method, the expiry and the object's
// path, keyed by the container's or account's temp URL key), valid for
// Config.URLExpiry. Signing happens locally: no request is sent. The
// driver must have been created with Config.Redirect.
func (d *Driver) BlobURL(_ context.Context, dg digest.Digest, method string) (string, error) {
	key, err := blobKey(dg)
	if err != nil {
		return "", err
	}
	if method != http.MethodGet && method != http.MethodHead {
		return "", fmt.Errorf("signing a URL for blob %s: method %q is not GET or HEAD", dg, method)
	}
	if d.urlKey == "" {
		return "", errors.New("signing a URL: the driver has no temp URL key (Config.Redirect is off)")
	}
	full, err := url.Parse(d.conn.url(req{key: key}))
	if err != nil {
		return "", err
	}
	expires := strconv.FormatInt(time.Now().Add(d.urlExpiry).Unix(), 10)
	mac := hmac.New(sha256.New, []byte(d.urlKey))
	mac.Write([]byte(method + "\n" + expires + "\n" + full.Path))
	full.RawQuery = url.Values{"temp_url_sig": {hex.EncodeToString(mac.Sum(nil))}, "temp_url_expires": {expires}}.Encode()
	return full.String(), nil
}

// tempURLKey returns the key to sign temp URLs with. A configured key must
// be one of the container's two keys or the account's (it is set as a
// container key when a slot is free); without one, the container's key,
// else the account's, is used.
func (d *Driver) tempURLKey(ctx context.Context, configured string) (string, error) {
	resp, err := d.conn.do(ctx, req{method: http.MethodHead, container: true, header: map[string]string{"X-Newest": "true"}})
	if err != nil {
		return "", fmt.Errorf("swift storage: reading the temp URL keys of container %q: %w", d.container, err)
	}
	resp.Body.Close()
	ck1, ck2 := resp.Header.Get("X-Container-Meta-Temp-Url-Key"), resp.Header.Get("X-Container-Meta-Temp-Url-Key-2")
	var ak1, ak2 string
	if resp, err := d.conn.do(ctx, req{method: http.MethodHead, account: true}); err == nil {
		resp.Body.Close()
		ak1, ak2 = resp.Header.Get("X-Account-Meta-Temp-Url-Key"), resp.Header.Get("X-Account-Meta-Temp-Url-Key-2")
	}
	if configured == "" {
		for _, k := range []string{ck1, ck2, ak1, ak2} {
			if k != "" {
				return k, nil
			}
		}
		return "", fmt.Errorf("swift storage: redirect needs a temp URL key: set temp_url_key (the same on every replica; it is stored on the container), or X-Container-Meta-Temp-URL-Key on container %q", d.container)
	}
	for _, k := range []string{ck1, ck2, ak1, ak2} {
		if hmac.Equal([]byte(k), []byte(configured)) {
			return configured, nil
		}
	}
	header := "X-Container-Meta-Temp-URL-Key"
	switch {
	case ck1 == "":
	case ck2 == "":
		header += "-2"
	default:
		return "", fmt.Errorf("swift storage: container %q has two temp URL keys and temp_url_key is neither: remove one, or use one of them", d.container)
	}
	resp, err = d.conn.do(ctx, req{method: http.MethodPost, container: true, header: map[string]string{header: configured}})
	if err != nil {
		return "", fmt.Errorf("swift storage: setting the temp URL key of container %q: %w", d.container, err)
	}
	closeBody(resp)
	d.log.Info("set the container's temp URL key", "container", d.container, "header", header)
	return configured, nil
}
