package build

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnreachable is returned when buildkitd does not answer at its address.
var ErrUnreachable = errors.New("buildkitd is not reachable")

// ErrInvalidImage marks a docker_images entry that cannot be built as given;
// the wrapping ImageError names the image and what to fix.
var ErrInvalidImage = errors.New("invalid image")

// ImageError is a failure of one docker_images entry. Image is the entry as
// the user names it ("docker_images[1] (myorg/app)"), Step the Dockerfile
// step that failed (empty when the failure is not a step's) and Output the
// last lines that step printed.
type ImageError struct {
	Image  string
	Step   string
	Output []string
	Err    error
}

func (e *ImageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", e.Image, e.Err)
	if e.Step != "" {
		fmt.Fprintf(&b, "\nfailing step: %s", e.Step)
	}
	if len(e.Output) > 0 {
		fmt.Fprintf(&b, "\nlast lines of its output:\n%s", strings.Join(e.Output, "\n"))
	}
	return b.String()
}

func (e *ImageError) Unwrap() error { return e.Err }
