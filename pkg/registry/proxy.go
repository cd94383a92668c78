package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// A pull-through registry (WithUpstreams) answers a pull of what it does
// not hold from the registry the repository's namespace mirrors: it
// fetches the manifest or blob, verifies it against its digest, stores it
// and serves it, so the next pull of it is local.
//
// Namespaces follow the buildset registry's mapping rule (zuul-jobs'
// use-buildset-registry): docker.io content lives without a prefix,
// every other registry's under its name, so repository quay.io/org/app
// is org/app of quay.io's upstream and library/busybox is
// library/busybox of docker.io's.
//
// What was pushed always wins. A pull by tag reads the Tags table first;
// only a tag nobody pushed is looked up upstream, and what the upstream
// said is kept in the UpstreamTags table, never in Tags, so tag listings
// and the catalog's tags show only pushed (speculative) images.
//
// Freshness:
//   - a manifest or blob by digest is immutable: once stored it is served
//     without asking the upstream again (until prune removes it);
//   - a tag learned from the upstream is served from the cache for the tag
//     TTL (WithUpstreamTagTTL) after the upstream last confirmed it; after
//     that it is revalidated with a HEAD (which Docker Hub does not count
//     against its pull limit), and refetched only when the digest changed;
//   - when the upstream is down, or answers 429 or a server error, a
//     cached tag is served stale, with a warning in the log and a Warning
//     header naming the cause; a tag the upstream says is gone (404) is
//     forgotten.
//
// After such a failure the upstream is left alone for a while (its
// Retry-After, else upstreamBackoff): stale tags are served without asking
// and misses fail at once with the cause (429 TOOMANYREQUESTS with
// Retry-After, or 503 UNAVAILABLE), so no client hangs on a dead upstream
// and a rate limit is not made worse. A client in front of a buildset
// registry then falls back to its next mirror, the upstream itself.
//
// Concurrent misses of one manifest, tag or blob make one upstream fetch
// (singleflight); the fetch runs on its own context, so a client that gives
// up does not abort it for the others. Content whose digest does not match
// is refused (502) and never stored.

// Upstream is what a pull-through registry fetches from: one upstream
// registry (package upstream's Client implements it). Errors that are
// registry answers are *oci.Error (with Retry-After in Header for a 429);
// any other error means the upstream could not be reached.
type Upstream interface {
	// Manifest reads manifest ref (a tag or digest) of repo: its bytes
	// and media type.
	Manifest(ctx context.Context, repo, ref string) ([]byte, string, error)
	// Digest asks (HEAD) for the digest tag of repo names now; "" when
	// the upstream does not say.
	Digest(ctx context.Context, repo, tag string) (digest.Digest, error)
	// Blob opens blob d of repo; size is -1 when unknown.
	Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
}

// UpstreamNamespace is a registry whose images a pull-through registry
// caches: Registry as image references name it (docker.io, quay.io) and
// the Upstream to fetch from.
type UpstreamNamespace struct {
	Registry string
	Upstream Upstream
}

// DefaultUpstreamTagTTL is how long a tag fetched from an upstream is
// served without asking the upstream again, unless WithUpstreamTagTTL
// changes it.
const DefaultUpstreamTagTTL = 5 * time.Minute

// DefaultUpstreamFetchTimeout bounds one upstream fetch (a manifest, or a
// blob's whole body) unless WithUpstreamFetchTimeout changes it.
const DefaultUpstreamFetchTimeout = 30 * time.Minute

// upstreamBackoff is how long a failed upstream is left alone when it did
// not say (Retry-After), and maxBackoff the most it is, whatever it says.
const (
	upstreamBackoff = 10 * time.Second
	maxBackoff      = 5 * time.Minute
)

// upstreamTag is the value of an UpstreamTags entry.
type upstreamTag struct {
	Digest  digest.Digest `json:"digest"`
	Checked time.Time     `json:"checked"`
}

// proxy is the pull-through state of a Registry.
type proxy struct {
	byRegistry map[string]*namespace // every namespace but docker.io
	dockerIO   *namespace            // nil unless docker.io is configured
	tagTTL     time.Duration
	timeout    time.Duration
	flights    singleflight.Group
}

// namespace is one upstream and its health.
type namespace struct {
	registry string
	up       Upstream

	mu        sync.Mutex
	downUntil time.Time
	downCause error
}

// newProxy checks the namespaces; nil when there are none.
func newProxy(nss []UpstreamNamespace, ttl, timeout time.Duration) (*proxy, error) {
	if len(nss) == 0 {
		return nil, nil
	}
	if ttl < 0 {
		return nil, fmt.Errorf("registry: upstream tag TTL %s is negative", ttl)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("registry: upstream fetch timeout %s is not positive", timeout)
	}
	p := &proxy{byRegistry: map[string]*namespace{}, tagTTL: ttl, timeout: timeout}
	for i, ns := range nss {
		if ns.Upstream == nil {
			return nil, fmt.Errorf("registry: upstream namespace %d (%s) has no upstream", i+1, ns.Registry)
		}
		reg := ns.Registry
		if reg == "docker.io" {
			if p.dockerIO != nil {
				return nil, errors.New("registry: upstream namespace docker.io is configured twice")
			}
			p.dockerIO = &namespace{registry: reg, up: ns.Upstream}
			continue
		}
		// Other registries' content lives under <registry>/, so the name
		// must be a repository path component.
		if strings.Contains(reg, "/") || storage.ValidateRepository(reg) != nil {
			return nil, fmt.Errorf("registry: upstream namespace %q is not a registry name usable as a repository component (lower-case host name, no port)", reg)
		}
		if _, dup := p.byRegistry[reg]; dup {
			return nil, fmt.Errorf("registry: upstream namespace %s is configured twice", reg)
		}
		p.byRegistry[reg] = &namespace{registry: reg, up: ns.Upstream}
	}
	return p, nil
}

// lookup returns the namespace repository name belongs to and the
// upstream's name of it, or nil.
func (p *proxy) lookup(name string) (*namespace, string) {
	if p == nil {
		return nil, ""
	}
	if first, rest, ok := strings.Cut(name, "/"); ok {
		if ns := p.byRegistry[first]; ns != nil {
			return ns, rest
		}
	}
	if _, ok := p.byRegistry[name]; ok {
		return nil, "" // the bare registry name is no repository upstream
	}
	if p.dockerIO != nil && !strings.HasPrefix(name, "docker.io/") {
		return p.dockerIO, name
	}
	return nil, ""
}

// down returns the cause when the upstream failed recently.
func (ns *namespace) down(now time.Time) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if now.Before(ns.downUntil) {
		return ns.downCause
	}
	return nil
}

// trip leaves the upstream alone after a failure that is its own (429,
// 5xx, unreachable); a 404 or a refusal is an answer, not a failure.
func (ns *namespace) trip(now time.Time, err error) {
	if isOwn(err) {
		return
	}
	st := oci.StatusCode(err)
	if st != 0 && st != http.StatusTooManyRequests && st < 500 {
		return
	}
	wait := upstreamBackoff
	if ra := retryAfter(err); ra > 0 {
		wait = min(ra, maxBackoff)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.downUntil, ns.downCause = now.Add(wait), err
}

// retryAfter reads the Retry-After of an upstream's answer (seconds or an
// HTTP date), or 0.
func retryAfter(err error) time.Duration {
	var e *oci.Error
	if !errors.As(err, &e) || e.Header == nil {
		return 0
	}
	v := e.Header.Get("Retry-After")
	if s, perr := strconv.Atoi(v); perr == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, perr := http.ParseTime(v); perr == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// isOwn reports whether err is this registry's own answer (a storage
// failure, an invalid manifest), not the upstream's: the client's *oci.Error
// names the call in Op, the server's does not.
func isOwn(err error) bool {
	var e *oci.Error
	return errors.As(err, &e) && e.Op == ""
}

// isAbsent reports whether the upstream said it does not have the thing
// (404), or will not give it to us (401, 403: Docker Hub answers 401 for a
// repository that does not exist).
func isAbsent(err error) bool {
	switch oci.StatusCode(err) {
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}

// upstreamFailure turns an upstream's failure into the error a client of
// this registry gets: 429 with the upstream's Retry-After, or 503
// UNAVAILABLE; the cause is named in the message.
func upstreamFailure(ns *namespace, what string, err error) error {
	if oci.StatusCode(err) == http.StatusTooManyRequests {
		e := newError(oci.CodeTooManyRequests, "%s is not cached and upstream %s is rate limiting (429): retry later", what, ns.registry)
		ra := max(retryAfter(err), time.Second)
		e.Err = err
		return e.WithHeader("Retry-After", strconv.Itoa(int(ra.Seconds())))
	}
	e := newError(oci.CodeUnavailable, "%s is not cached and upstream %s failed: %v", what, ns.registry, err).WithHeader("Retry-After", "10")
	e.Err = err
	return e
}

func refSep(ref string) string {
	if oci.IsDigest(ref) {
		return "@"
	}
	return ":"
}

// errCorrupt reports upstream content that does not match its digest.
var errCorrupt = errors.New("content does not match its digest")

func corruptError(ns *namespace, what string, err error) error {
	e := newError(oci.CodeUnavailable, "upstream %s sent %s that does not match its digest: refused, not stored", ns.registry, what).
		WithStatus(http.StatusBadGateway)
	e.Err = err
	return e
}

// fetchContext is the context of one upstream fetch: detached from the
// request that started it (others may wait for it), bounded by the fetch
// timeout.
func (p *proxy) fetchContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
}

// pullManifest makes repository name hold manifest ref from its upstream
// and returns its digest, with a warning when a cached tag is served
// stale. It is called when the registry does not hold ref (a tag nobody
// pushed, or an unknown digest).
func (rg *Registry) pullManifest(ctx context.Context, ns *namespace, upRepo, name, ref string) (digest.Digest, string, error) {
	if oci.IsDigest(ref) {
		dg, err := parseDigest(ref)
		if err != nil {
			return "", "", err
		}
		if err := ns.down(rg.now()); err != nil {
			return "", "", upstreamFailure(ns, "manifest "+name+"@"+ref, err)
		}
		_, err, _ = rg.proxy.flights.Do("manifest\x00"+name+"\x00"+ref, func() (any, error) {
			fctx, cancel := rg.proxy.fetchContext(ctx)
			defer cancel()
			return nil, rg.fetchManifest(fctx, ns, upRepo, name, ref, dg)
		})
		if err != nil {
			return "", "", manifestError(ns, name, ref, err)
		}
		return dg, "", nil
	}
	if err := checkTag(ref); err != nil {
		return "", "", err
	}
	cached, stored := rg.cachedTag(ctx, name, ref)
	if stored && rg.now().Sub(cached.Checked) < rg.proxy.tagTTL {
		return cached.Digest, "", nil
	}
	if err := ns.down(rg.now()); err != nil {
		if stored {
			return cached.Digest, rg.staleWarning(ctx, ns, name, ref, err), nil
		}
		return "", "", upstreamFailure(ns, "manifest "+name+":"+ref, err)
	}
	type answer struct {
		dg   digest.Digest
		warn string
	}
	v, err, _ := rg.proxy.flights.Do("tag\x00"+name+"\x00"+ref, func() (any, error) {
		fctx, cancel := rg.proxy.fetchContext(ctx)
		defer cancel()
		dg, err := rg.revalidateTag(fctx, ns, upRepo, name, ref, cached, stored)
		if err == nil || isAbsent(err) || errors.Is(err, errCorrupt) || isOwn(err) {
			return answer{dg: dg}, err
		}
		ns.trip(rg.now(), err)
		if stored {
			return answer{cached.Digest, rg.staleWarning(ctx, ns, name, ref, err)}, nil
		}
		return answer{}, err
	})
	if err != nil {
		return "", "", manifestError(ns, name, ref, err)
	}
	a := v.(answer)
	return a.dg, a.warn, nil
}

// cachedTag reads what the upstream last said of tag, and whether its
// manifest is still stored (prune may have removed it).
func (rg *Registry) cachedTag(ctx context.Context, name, tag string) (upstreamTag, bool) {
	var ut upstreamTag
	v, err := rg.driver.GetEntry(ctx, name, storage.UpstreamTags, tag)
	if err != nil || json.Unmarshal(v, &ut) != nil || ut.Digest.Validate() != nil {
		return upstreamTag{}, false
	}
	return ut, rg.holdsManifest(ctx, name, ut.Digest)
}

func (rg *Registry) holdsManifest(ctx context.Context, name string, dg digest.Digest) bool {
	if _, err := rg.driver.GetEntry(ctx, name, storage.Manifests, dg.String()); err != nil {
		return false
	}
	_, err := rg.driver.StatBlob(ctx, dg)
	return err == nil
}

// staleWarning logs that a cached tag is served without the upstream's
// confirmation, and returns the warning for the response.
func (rg *Registry) staleWarning(ctx context.Context, ns *namespace, name, tag string, cause error) string {
	rg.log.WarnContext(ctx, "serving a cached tag the upstream could not confirm", "repository", name, "tag", tag,
		"upstream", ns.registry, "cause", cause)
	return fmt.Sprintf("served from cache: upstream %s could not confirm tag %s: %v", ns.registry, tag, cause)
}

// revalidateTag asks the upstream what tag names now, fetches the
// manifest when the cache does not hold it, and records the answer.
func (rg *Registry) revalidateTag(ctx context.Context, ns *namespace, upRepo, name, tag string, cached upstreamTag, stored bool) (digest.Digest, error) {
	dg, err := ns.up.Digest(ctx, upRepo, tag)
	if isAbsent(err) {
		// Gone upstream (or never there): forget it.
		_ = rg.driver.DeleteEntry(ctx, name, storage.UpstreamTags, tag)
		return "", err
	} else if err != nil {
		return "", err
	}
	if dg == "" || !rg.holdsManifest(ctx, name, dg) {
		if dg, err = rg.fetchManifestByTag(ctx, ns, upRepo, name, tag, dg); err != nil {
			return "", err
		}
	}
	if stored && dg != cached.Digest {
		rg.log.InfoContext(ctx, "upstream tag moved", "repository", name, "tag", tag, "from", cached.Digest, "to", dg, "upstream", ns.registry)
	}
	b, _ := json.Marshal(upstreamTag{Digest: dg, Checked: rg.now().UTC()})
	if err := rg.driver.PutEntry(ctx, name, storage.UpstreamTags, tag, b); err != nil {
		return "", storageError("caching upstream tag", err)
	}
	return dg, nil
}

// fetchManifestByTag reads tag's manifest from the upstream and stores it;
// want, when the upstream named it, is the digest the bytes must have.
func (rg *Registry) fetchManifestByTag(ctx context.Context, ns *namespace, upRepo, name, tag string, want digest.Digest) (digest.Digest, error) {
	body, mt, err := ns.up.Manifest(ctx, upRepo, tag)
	if err != nil {
		return "", err
	}
	dg := digest.FromBytes(body)
	if want != "" {
		if got, err := oci.Verify(want, body); err != nil {
			return "", fmt.Errorf("manifest %s:%s is %s, not the %s the upstream named: %w", name, tag, got, want, errCorrupt)
		}
		dg = want
	}
	return dg, rg.storeUpstreamManifest(ctx, ns, name, dg, mt, body)
}

// fetchManifest reads manifest dg from the upstream, verifies it and
// stores it.
func (rg *Registry) fetchManifest(ctx context.Context, ns *namespace, upRepo, name, ref string, dg digest.Digest) error {
	if rg.holdsManifest(ctx, name, dg) {
		return nil // a concurrent flight stored it
	}
	body, mt, err := ns.up.Manifest(ctx, upRepo, ref)
	if err != nil {
		if !isAbsent(err) {
			ns.trip(rg.now(), err)
		}
		return err
	}
	if got, err := oci.Verify(dg, body); err != nil {
		rg.log.WarnContext(ctx, "refused an upstream manifest that does not match its digest", "repository", name, "digest", dg, "got", got, "upstream", ns.registry)
		return fmt.Errorf("manifest %s@%s: %w", name, dg, errCorrupt)
	}
	return rg.storeUpstreamManifest(ctx, ns, name, dg, mt, body)
}

// storeUpstreamManifest checks a verified manifest as a push would be
// (media type, structure; not the references, which are fetched when
// pulled) and stores it in repository name.
func (rg *Registry) storeUpstreamManifest(ctx context.Context, ns *namespace, name string, dg digest.Digest, mt string, body []byte) error {
	mt, _, err := parseManifest(mt, body)
	if err != nil {
		return fmt.Errorf("upstream %s sent a manifest this registry cannot serve: %w", ns.registry, err)
	}
	if err := rg.driver.PutBlob(ctx, dg, int64(len(body)), bytes.NewReader(body)); err != nil {
		return storageError("caching manifest", err)
	}
	if err := rg.driver.PutEntry(ctx, name, storage.Manifests, dg.String(), []byte(mt)); err != nil {
		return storageError("caching manifest", err)
	}
	rg.log.InfoContext(ctx, "cached upstream manifest", "repository", name, "digest", dg, "upstream", ns.registry)
	return nil
}

// manifestError is what a client gets when a pull-through manifest failed.
func manifestError(ns *namespace, name, ref string, err error) error {
	switch {
	case isAbsent(err):
		return newError(oci.CodeManifestUnknown, "manifest %s is unknown to repository %s, and to upstream %s", ref, name, ns.registry).
			WithDetail(map[string]string{"name": name, "reference": ref})
	case errors.Is(err, errCorrupt):
		return corruptError(ns, "manifest "+name+refSep(ref)+ref, err)
	case isOwn(err):
		return err // already this registry's answer
	}
	return upstreamFailure(ns, "manifest "+name+refSep(ref)+ref, err)
}

// pullBlob makes repository name hold blob dg: linked at once when the
// registry stores the content already (any repository fetched or pushed
// it: content is addressed by digest, and readers may read every
// repository), else fetched once from the upstream, verified and stored.
func (rg *Registry) pullBlob(ctx context.Context, ns *namespace, upRepo, name string, dg digest.Digest) error {
	if _, err := rg.driver.StatBlob(ctx, dg); err == nil {
		return rg.linkBlob(ctx, name, dg)
	}
	if err := ns.down(rg.now()); err != nil {
		return upstreamFailure(ns, "blob "+dg.String(), err)
	}
	_, err, _ := rg.proxy.flights.Do("blob\x00"+dg.String(), func() (any, error) {
		fctx, cancel := rg.proxy.fetchContext(ctx)
		defer cancel()
		return nil, rg.fetchBlob(fctx, ns, upRepo, name, dg)
	})
	switch {
	case err == nil:
		return rg.linkBlob(ctx, name, dg)
	case isAbsent(err):
		return newError(oci.CodeBlobUnknown, "blob %s is unknown to this repository, and to upstream %s", dg, ns.registry).
			WithDetail(map[string]string{"digest": dg.String()})
	case errors.Is(err, errCorrupt):
		return corruptError(ns, "blob "+dg.String(), err)
	}
	if isOwn(err) {
		return err // this registry's answer (storage)
	}
	return upstreamFailure(ns, "blob "+dg.String(), err)
}

func (rg *Registry) linkBlob(ctx context.Context, name string, dg digest.Digest) error {
	if err := rg.driver.PutEntry(ctx, name, storage.Blobs, dg.String(), nil); err != nil {
		return storageError("caching blob", err)
	}
	return nil
}

// fetchBlob streams blob dg from the upstream into storage through a
// verifier: the driver never makes content visible that failed it.
func (rg *Registry) fetchBlob(ctx context.Context, ns *namespace, upRepo, name string, dg digest.Digest) error {
	if _, err := rg.driver.StatBlob(ctx, dg); err == nil {
		return nil
	}
	start := rg.now()
	rc, size, err := ns.up.Blob(ctx, upRepo, dg)
	if err != nil {
		if !isAbsent(err) {
			ns.trip(rg.now(), err)
		}
		return err
	}
	defer rc.Close()
	vr := &verifyingReader{r: rc, want: dg, h: dg.Algorithm().Hash(), size: size}
	if err := rg.driver.PutBlob(ctx, dg, size, vr); err != nil {
		if vr.err != nil {
			rg.log.WarnContext(ctx, "refused an upstream blob", "repository", name, "digest", dg, "upstream", ns.registry, "error", vr.err)
			return vr.err
		}
		var e *oci.Error
		if errors.As(err, &e) {
			return err
		}
		if vr.readErr != nil {
			// The upstream broke off mid-body: its failure.
			ns.trip(rg.now(), vr.readErr)
			return fmt.Errorf("reading blob %s from upstream %s: %w", dg, ns.registry, vr.readErr)
		}
		return storageError("caching blob", err)
	}
	rg.log.InfoContext(ctx, "cached upstream blob", "repository", name, "digest", dg, "bytes", vr.n,
		"upstream", ns.registry, "duration", rg.now().Sub(start))
	return nil
}

// verifyingReader hashes what it reads and, instead of io.EOF, returns an
// error when the content does not match the digest or the announced size,
// so storage.Driver.PutBlob discards it.
type verifyingReader struct {
	r       io.Reader
	want    digest.Digest
	h       hash.Hash
	size    int64
	n       int64
	err     error // a verification failure
	readErr error // the upstream's body failed
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		v.err = fmt.Errorf("blob %s: the upstream sent more than the %d bytes it announced: %w", v.want, v.size, errCorrupt)
		return 0, v.err
	}
	if err == io.EOF {
		got := digest.NewDigest(v.want.Algorithm(), v.h)
		switch {
		case v.size >= 0 && v.n != v.size:
			v.err = fmt.Errorf("blob %s: the upstream sent %d bytes, announced %d: %w", v.want, v.n, v.size, errCorrupt)
		case got != v.want:
			v.err = fmt.Errorf("blob %s: the upstream sent content with digest %s: %w", v.want, got, errCorrupt)
		}
		if v.err != nil {
			return n, v.err
		}
	} else if err != nil {
		v.readErr = err
	}
	return n, err
}
