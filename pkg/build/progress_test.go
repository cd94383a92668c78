package build

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
)

func TestProgress(t *testing.T) {
	t.Parallel()
	now := time.Now()
	later := now.Add(1500 * time.Millisecond)
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	ch := make(chan *client.SolveStatus, 10)
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: a, Name: "[1/3] FROM base", Started: &now},
		{Digest: b, Name: "[2/3] RUN make", Started: &now},
	}}
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{{Digest: a, Name: "[1/3] FROM base", Started: &now, Completed: &now, Cached: true}}}
	var logs []*client.VertexLog
	for i := 1; i <= 30; i++ {
		// Split lines across messages, as a process's output arrives.
		logs = append(logs, &client.VertexLog{Vertex: b, Data: []byte(fmt.Sprintf("line %d", i))}, &client.VertexLog{Vertex: b, Data: []byte("\n")})
	}
	ch <- &client.SolveStatus{Logs: logs}
	ch <- &client.SolveStatus{Logs: []*client.VertexLog{{Vertex: b, Data: []byte("no newline at the end")}}}
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: b, Name: "[2/3] RUN make", Started: &now, Completed: &later, Error: "process did not complete successfully: exit code: 2"},
		{Digest: c, Name: "[3/3] COPY x /", Started: &now, Completed: &later, Error: "context canceled"},
	}}
	close(ch)
	var out bytes.Buffer
	p := newProgress(&out)
	p.consume(ch)
	if p.cacheHits() != 1 || len(p.steps) != 3 {
		t.Errorf("cache hits %d of %d steps", p.cacheHits(), len(p.steps))
	}
	f := p.failed()
	if f == nil || f.name != "[2/3] RUN make" {
		t.Fatalf("failed step = %+v", f)
	}
	if len(f.tail) != tailLines || f.tail[0] != "line 12" || f.tail[tailLines-1] != "no newline at the end" {
		t.Errorf("tail = %q", f.tail)
	}
	log := out.String()
	for _, want := range []string{"#1 [1/3] FROM base\n", "#1 CACHED\n", "#2 line 30\n", "#2 ERROR: process did not complete", "#3 [3/3] COPY x /\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
