package build

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
)

// tailLines is how many lines of a failing step's output a failure carries.
const tailLines = 20

// progress consumes BuildKit's status stream: it writes a plain build log
// (the format of `buildctl --progress=plain`, numbered steps), counts the
// steps served from cache, and keeps the last lines each step printed so a
// failure can show them.
type progress struct {
	w     io.Writer
	steps map[digest.Digest]*step
	order []digest.Digest
}

type step struct {
	n       int
	name    string
	started bool
	done    bool
	cached  bool
	err     string
	partial []byte
	tail    []string
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, steps: map[digest.Digest]*step{}}
}

func (p *progress) step(d digest.Digest) *step {
	s, ok := p.steps[d]
	if !ok {
		s = &step{n: len(p.order) + 1}
		p.steps[d] = s
		p.order = append(p.order, d)
	}
	return s
}

// consume reads ch until it is closed.
func (p *progress) consume(ch <-chan *client.SolveStatus) {
	for st := range ch {
		for _, v := range st.Vertexes {
			s := p.step(v.Digest)
			if v.Name != "" {
				s.name = v.Name
			}
			if v.Started != nil && !s.started {
				s.started = true
				fmt.Fprintf(p.w, "#%d %s\n", s.n, s.name)
			}
			if v.Cached && !s.cached {
				s.cached = true
				fmt.Fprintf(p.w, "#%d CACHED\n", s.n)
			}
			if v.Error != "" && s.err == "" {
				s.err = v.Error
				p.flush(s)
				fmt.Fprintf(p.w, "#%d ERROR: %s\n", s.n, v.Error)
			}
			if v.Completed != nil && !s.done {
				s.done = true
				p.flush(s)
				if s.err == "" && !s.cached {
					d := time.Duration(0)
					if v.Started != nil {
						d = v.Completed.Sub(*v.Started)
					}
					fmt.Fprintf(p.w, "#%d DONE %.1fs\n", s.n, d.Seconds())
				}
			}
		}
		for _, l := range st.Logs {
			p.log(p.step(l.Vertex), l.Data)
		}
		for _, w := range st.Warnings {
			s := p.step(w.Vertex)
			fmt.Fprintf(p.w, "#%d WARNING: %s\n", s.n, bytes.TrimSpace(w.Short))
		}
	}
	for _, d := range p.order {
		p.flush(p.steps[d])
	}
}

func (p *progress) log(s *step, data []byte) {
	s.partial = append(s.partial, data...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			return
		}
		p.line(s, string(bytes.TrimRight(s.partial[:i], "\r")))
		s.partial = s.partial[i+1:]
	}
}

func (p *progress) flush(s *step) {
	if len(s.partial) > 0 {
		p.line(s, string(s.partial))
		s.partial = nil
	}
}

func (p *progress) line(s *step, l string) {
	fmt.Fprintf(p.w, "#%d %s\n", s.n, l)
	s.tail = append(s.tail, l)
	if len(s.tail) > tailLines {
		s.tail = s.tail[len(s.tail)-tailLines:]
	}
}

// cacheHits is the number of steps served from BuildKit's cache.
func (p *progress) cacheHits() int {
	n := 0
	for _, s := range p.steps {
		if s.cached {
			n++
		}
	}
	return n
}

// failed returns the step that failed first with an error of its own (not
// a cancellation caused by another step), or nil.
func (p *progress) failed() *step {
	var canceled *step
	for _, d := range p.order {
		s := p.steps[d]
		if s.err == "" {
			continue
		}
		if strings.Contains(s.err, "context canceled") {
			if canceled == nil {
				canceled = s
			}
			continue
		}
		return s
	}
	return canceled
}
