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
// Every input is checked before anything is copied; a copy writes its tag
// only once everything the tag refers to is in place.
package intermediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// Config is what both directions need.
type Config struct {
	Buildset     *zuul.BuildsetRegistry
	Intermediate *zuul.IntermediateRegistry
	// Jobs is the number of images copied at once (default 16); LayerJobs
	// the number of blob transfers at once, across images (default 8).
	Jobs, LayerJobs int
	// Timeout bounds the whole operation (default 30 minutes).
	Timeout time.Duration
	// Retries is how often a failed request is retried (default 4).
	Retries int
	// CheckMode reports what would be copied and copies nothing.
	CheckMode bool
	// Log receives progress and retries; nil discards.
	Log *slog.Logger
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

func (c Config) validate() error {
	if c.Buildset == nil {
		return errors.New("buildset_registry is not set")
	}
	if err := c.Buildset.Validate(); err != nil {
		return err
	}
	if c.Intermediate == nil {
		return errors.New("intermediate_registry is required")
	}
	ir := c.Intermediate
	if ir.Host == "" {
		return errors.New("intermediate_registry.host is empty")
	}
	if ir.Port <= 0 || ir.Port > 65535 {
		return fmt.Errorf("intermediate_registry.port %d is not a TCP port", ir.Port)
	}
	if (ir.Username == "") != (ir.Password == "") {
		return errors.New("intermediate_registry: give both username and password, or neither for anonymous access")
	}
	for n, v := range map[string]int{"jobs": c.Jobs, "layer_jobs": c.LayerJobs, "retries": c.Retries} {
		if v < 0 {
			return fmt.Errorf("%s must not be negative, got %d", n, v)
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout must not be negative, got %s", c.Timeout)
	}
	return nil
}

// copier returns a Client that knows both registries: the buildset
// registry by its real address, trusting only its CA; the intermediate
// registry trusting the system roots and its optional CA.
func (c Config) copier() (*transfer.Client, error) {
	br, ir := c.Buildset, c.Intermediate
	if sameHost(br.Address(), ir.Address()) {
		return nil, fmt.Errorf("buildset_registry and intermediate_registry are both %s: they must be different registries", br.Address())
	}
	policy := transfer.DefaultRetryPolicy()
	if c.Retries > 0 {
		policy.Attempts = c.Retries + 1
	}
	opts := []transfer.Option{
		transfer.WithEndpoint(transfer.Endpoint{Host: br.Address(), Username: br.Username, Password: br.Password,
			CA: []byte(br.Cert), NoSystemRoots: true}),
		transfer.WithEndpoint(transfer.Endpoint{Host: ir.Address(), Username: ir.Username, Password: ir.Password,
			CA: []byte(ir.Cert)}),
		transfer.WithRetry(policy),
	}
	if c.Jobs > 0 {
		opts = append(opts, transfer.WithImageJobs(c.Jobs))
	}
	if c.LayerJobs > 0 {
		opts = append(opts, transfer.WithJobs(c.LayerJobs))
	}
	if c.Timeout > 0 {
		opts = append(opts, transfer.WithTimeout(c.Timeout))
	}
	if c.Log != nil {
		opts = append(opts, transfer.WithLogger(c.Log))
	}
	return transfer.New(opts...)
}

func sameHost(a, b string) bool {
	ra, err1 := transfer.ParseReference(a + "/x")
	rb, err2 := transfer.ParseReference(b + "/x")
	return err1 == nil && err2 == nil && ra.Context().RegistryStr() == rb.Context().RegistryStr()
}

// run copies (or plans) jobs and fills images from the results. label
// names job i in errors; notFound is the hint for a source that is not
// there.
func (c Config) run(ctx context.Context, jobs []transfer.Job, images []Image, label func(i int) string, notFound string) (bool, error) {
	cp, err := c.copier()
	if err != nil {
		return false, err
	}
	defer cp.Close()
	var rs []transfer.Result
	if c.CheckMode {
		rs, err = cp.Plan(ctx, jobs)
	} else {
		rs, err = cp.CopyAll(ctx, jobs)
	}
	if rs == nil {
		return false, err
	}
	changed := false
	var errs []error
	for i, r := range rs {
		im := &images[i]
		im.Digest, im.MediaType, im.Changed = r.Digest, r.MediaType, r.Changed
		im.BlobStats = r.BlobStats
		if r.Err != nil {
			e := fmt.Errorf("%s: %w%s", label(i), r.Err, hint(r.Err, notFound))
			im.Error = e.Error()
			errs = append(errs, e)
			continue
		}
		changed = changed || r.Changed
	}
	return changed, errors.Join(errs...)
}

// hint adds what the user can do about a source that is not there.
func hint(err error, notFound string) string {
	var te *transfer.Error
	if errors.As(err, &te) && errors.Is(err, oci.ErrNotFound) && te.Step == transfer.StepSourceManifest {
		return " (" + notFound + ")"
	}
	return ""
}
