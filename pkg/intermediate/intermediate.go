// Package intermediate moves speculative images between a buildset
// registry and the intermediate registry, as zuul-jobs'
// pull-from-intermediate-registry and push-to-intermediate-registry roles
// do, with package transfer instead of skopeo, socat and a docker
// config.json on the executor.
//
// Pull copies every container_image artifact of the changes ahead
// (<ir>/<repository>:<build>_<tag>) into the buildset registry under its
// final name (<repository>:<tag>, a leading docker.io/ removed). Push
// copies the images a job built from the buildset registry to
// <ir>/<repository>:<zuul.build>_<tag> and returns the artifacts a role
// hands to zuul_return, in upstream's shape.
//
// With a public key (PullVerification), Pull first checks each image of a
// change ahead in the intermediate registry as promote does (package
// verify) and copies the digests checked, or nothing.
// With a private key (PushSigning), Push signs each image it pushes in the
// intermediate registry, and attests its BuildKit provenance, before the
// tag is written, so that such a Pull accepts it.
//
// Every input is checked before anything is copied; a copy writes its tag
// only once everything the tag refers to is in place.
package intermediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/imagegate/imagegate/pkg/ansible"
	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Registries are the parameters both directions share: the two
// registries, and how hard to work them.
type Registries struct {
	// BuildsetRegistry is the job's buildset registry; when nil, the job's
	// result data file names it (zuul.ResolveBuildsetRegistry).
	BuildsetRegistry     *zuul.BuildsetRegistry     `ansible:"buildset_registry"`
	IntermediateRegistry *zuul.IntermediateRegistry `ansible:"intermediate_registry,required"`
	// Jobs is the number of images copied at once; LayerJobs the number
	// of blob transfers at once, across images.
	Jobs      int `ansible:"jobs" default:"16"`
	LayerJobs int `ansible:"layer_jobs" default:"8"`
	// Retries is how often a failed request is retried.
	Retries int `ansible:"retries" default:"4"`
	// InsecureRegistries may be reached over plain HTTP (anonymously,
	// unless loopback) without TLS verification, as dockerd's
	// insecure-registries: host[:port] or CIDR. Loopback registries and
	// dockerd's own insecure-registries need no entry.
	InsecureRegistries []string `ansible:"insecure_registries"`
}

// Option configures Pull and Push.
type Option func(*options)

type options struct {
	check, diff bool
	log         *slog.Logger
	timeout     time.Duration
	timed       bool
	redact      func(string)
}

// WithCheckMode reports what would be copied and copies nothing (default
// false).
func WithCheckMode(check bool) Option { return func(o *options) { o.check = check } }

// WithDiff makes the result carry a diff of every target tag (default
// false).
func WithDiff(diff bool) Option { return func(o *options) { o.diff = diff } }

// WithLogger sets the logger for progress and retries (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithTimeout bounds the whole operation, retries included; it must be
// positive. The default is the registry client's (30 minutes).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout, o.timed = d, true } }

// WithRedact sets the function that hides the buildset registry's password
// when it is read from the job's result data file (a module's AddSecret).
// The default does nothing.
func WithRedact(redact func(secret string)) Option { return func(o *options) { o.redact = redact } }

func newOptions(opts []Option) (options, error) {
	o := options{log: slog.New(slog.DiscardHandler), redact: func(string) {}}
	for _, f := range opts {
		f(&o)
	}
	if o.timed && o.timeout <= 0 {
		return o, fmt.Errorf("timeout must be positive, got %s", o.timeout)
	}
	if o.log == nil || o.redact == nil {
		return o, errors.New("intermediate: nil logger or redact function")
	}
	return o, nil
}

// Image is one image copied, or to be copied in check mode.
type Image struct {
	// Name is the artifact's name (pull) or <repository>:<tag> (push).
	Name       string `json:"name"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Source and Target are the references copied from and to.
	Source string `json:"source"`
	Target string `json:"target"`
	// Digest is the manifest digest, the same on both sides.
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	// Changed is false when the target already pointed at Digest.
	Changed bool `json:"changed"`
	transfer.BlobStats
	// Error is why this image was not copied.
	Error string `json:"error,omitempty"`
}

// check validates the parameters and resolves the buildset registry:
// everything is known good before anything is copied.
func (r Registries) check(vars *zuul.Vars, o options) (*zuul.BuildsetRegistry, error) {
	ir := r.IntermediateRegistry
	if ir == nil {
		return nil, errors.New("intermediate_registry is required")
	}
	if ir.Host == "" {
		return nil, errors.New("intermediate_registry.host is empty")
	}
	if ir.Port <= 0 || ir.Port > 65535 {
		return nil, fmt.Errorf("intermediate_registry.port %d is not a TCP port", ir.Port)
	}
	if err := transfer.CheckInsecureRegistries(r.InsecureRegistries); err != nil {
		return nil, fmt.Errorf("insecure_registries: %w", err)
	}
	if (ir.Username == "") != (ir.Password == "") {
		return nil, errors.New("intermediate_registry: give both username and password, or neither for anonymous access")
	}
	if ir.Cert != "" {
		if _, err := pki.CertPool([]byte(ir.Cert)); err != nil {
			return nil, fmt.Errorf("intermediate_registry.cert: %w: give the PEM of the CA that signed the intermediate registry's certificate", err)
		}
	}
	for n, v := range map[string]int{"jobs": r.Jobs, "layer_jobs": r.LayerJobs} {
		if v < 1 {
			return nil, fmt.Errorf("%s must be positive, got %d", n, v)
		}
	}
	if r.Retries < 0 {
		return nil, fmt.Errorf("retries must not be negative, got %d", r.Retries)
	}
	br, err := zuul.ResolveBuildsetRegistry(r.BuildsetRegistry, vars, o.redact)
	if err != nil {
		return nil, err
	}
	if sameHost(br.Address(), ir.Address()) {
		return nil, fmt.Errorf("buildset_registry and intermediate_registry are both %s: they must be different registries", br.Address())
	}
	return br, nil
}

// client returns a Client that knows both registries: the buildset
// registry by its real address, trusting only its CA; the intermediate
// registry trusting the system roots and its optional CA.
func (r Registries) client(br *zuul.BuildsetRegistry, o options, extra ...transfer.Option) (*transfer.Client, error) {
	ir := r.IntermediateRegistry
	policy := transfer.DefaultRetryPolicy()
	policy.Attempts = r.Retries + 1
	opts := []transfer.Option{
		transfer.WithEndpoint(transfer.Endpoint{Host: br.Address(), Username: br.Username, Password: br.Password,
			CA: []byte(br.Cert), NoSystemRoots: true}),
		transfer.WithEndpoint(transfer.Endpoint{Host: ir.Address(), Username: ir.Username, Password: ir.Password,
			CA: []byte(ir.Cert)}),
		transfer.WithRetry(policy), transfer.WithImageJobs(r.Jobs), transfer.WithJobs(r.LayerJobs),
		transfer.WithLogger(o.log), transfer.WithInsecureRegistries(r.InsecureRegistries...),
	}
	if o.timed {
		opts = append(opts, transfer.WithTimeout(o.timeout))
	}
	return transfer.New(append(opts, extra...)...)
}

func sameHost(a, b string) bool {
	ra, err1 := transfer.ParseReference(a + "/x")
	rb, err2 := transfer.ParseReference(b + "/x")
	return err1 == nil && err2 == nil && ra.Context().RegistryStr() == rb.Context().RegistryStr()
}

// run copies (or plans) jobs and fills images from the results. label
// names job i in errors; notFound is the hint for a source that is not
// there. before, when not nil, runs once every copy is planned without
// error and before any is made (in check mode too); it returns whether it
// changed something, and its error stops the copies.
func (r Registries) run(ctx context.Context, br *zuul.BuildsetRegistry, o options, jobs []transfer.Job, images []Image, label func(i int) string, notFound string,
	before func(context.Context, *transfer.Client, []transfer.Result) (bool, error)) (bool, error) {
	// Signatures and attestations travel with the images (issue 16): the
	// referrers of each copied digest and cosign's tags.
	c, err := r.client(br, o, transfer.WithReferrers())
	if err != nil {
		return false, err
	}
	defer c.Close()
	var rs []transfer.Result
	changed := false
	if o.check || before != nil {
		rs, err = c.Plan(ctx, jobs)
		if err == nil && before != nil {
			if changed, err = before(ctx, c, rs); err != nil {
				return false, err
			}
		}
		if err == nil && !o.check {
			rs, err = c.CopyAll(ctx, jobs)
		}
	} else {
		rs, err = c.CopyAll(ctx, jobs)
	}
	if rs == nil {
		return false, err
	}
	var errs []error
	for i, res := range rs {
		im := &images[i]
		im.Digest, im.MediaType, im.Changed = res.Digest, res.MediaType, res.Changed
		im.BlobStats = res.BlobStats
		if res.Err != nil {
			e := fmt.Errorf("%s: %w%s", label(i), res.Err, hint(res.Err, notFound))
			im.Error = e.Error()
			errs = append(errs, e)
			continue
		}
		changed = changed || res.Changed || res.Referrers > 0
	}
	return changed, errors.Join(errs...)
}

// outcome sets the message and, when asked, the diff of a copy of images;
// what says what was copied where.
func outcome(out *ansible.Outcome, images []Image, o options, what string) {
	n := 0
	var before, after []string
	for _, im := range images {
		if im.Changed {
			n++
			before = append(before, im.Target+" -> (other or absent)")
		} else {
			before = append(before, im.Target+" -> "+im.Digest)
		}
		after = append(after, im.Target+" -> "+im.Digest)
	}
	verb := "copied"
	if o.check {
		verb = "would copy"
	}
	out.Msg = fmt.Sprintf("%s %d of %d %s; the others were up to date", verb, n, len(images), what)
	if o.diff && len(images) > 0 {
		sort.Strings(before)
		sort.Strings(after)
		out.Diff = []ansible.Diff{{Before: strings.Join(before, "\n") + "\n", After: strings.Join(after, "\n") + "\n",
			BeforeHeader: "target tags before", AfterHeader: "target tags after"}}
	}
}

// hint adds what the user can do about a source that is not there.
func hint(err error, notFound string) string {
	var te *transfer.Error
	if errors.As(err, &te) && errors.Is(err, oci.ErrNotFound) && te.Step == transfer.StepSourceManifest {
		return " (" + notFound + ")"
	}
	return ""
}
