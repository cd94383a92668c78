package runner

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/imagegate/imagegate/pkg/zuul"
)

// Reporting: build results as Zuul names them, the report of a queue run
// and its summary, and the failure message taken from ansible's output.

// Build results, as Zuul reports them.
const (
	Success     = "SUCCESS"
	Failure     = "FAILURE"
	PostFailure = "POST_FAILURE"
	RetryLimit  = "RETRY_LIMIT"
	TimedOut    = "TIMED_OUT"
	Skipped     = "SKIPPED"
	ErrorResult = "ERROR"
	Dequeued    = "DEQUEUED"
)

// PhaseReport is one playbook run of a build.
type PhaseReport struct {
	Phase    string        `json:"phase"`
	Playbook string        `json:"playbook"`
	Job      string        `json:"job"`
	Result   string        `json:"result"`
	Duration time.Duration `json:"duration"`
}

var fatalRE = regexp.MustCompile(`^(fatal|failed): \[([^\]]+)\].*?=> (\{.*\})\s*$`)
var taskRE = regexp.MustCompile(`^TASK \[(.*)\]`)

// failureSummary extracts the failing task and its msg from ansible's
// output, so the summary says what to fix without opening the log.
func failureSummary(lines []string, err error) string {
	task := ""
	for _, l := range lines {
		if m := taskRE.FindStringSubmatch(l); m != nil {
			task = m[1]
		}
		if m := fatalRE.FindStringSubmatch(l); m != nil {
			var res map[string]any
			msg := ""
			if json.Unmarshal([]byte(m[3]), &res) == nil {
				msg, _ = res["msg"].(string)
				if msg == "" {
					if r, ok := res["reason"].(string); ok {
						msg = r
					}
				}
			}
			if msg == "" {
				msg = "the task failed (see the job log)"
			}
			msg = strings.Join(strings.Fields(msg), " ")
			if task != "" {
				return fmt.Sprintf("task %q on %s failed: %s", task, m[2], msg)
			}
			return fmt.Sprintf("%s failed: %s", m[2], msg)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "ERROR!") {
			return strings.TrimSpace(l)
		}
	}
	if err != nil {
		return fmt.Sprintf("ansible-playbook: %v (see the job log)", err)
	}
	return "failed (see the job log)"
}

// tailWriter keeps the last max lines written to it.
type tailWriter struct {
	mu   sync.Mutex
	max  int
	buf  []string
	part string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.buf = append(t.buf, parts[:len(parts)-1]...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(append([]string{}, t.buf...), t.part)
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// Report is what a queue run did.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	WorkDir  string        `json:"work_dir"`
	Items    []*ItemReport `json:"items"`
}

// ItemReport is the result of one queue item.
type ItemReport struct {
	Project  string         `json:"project"`
	Change   int            `json:"change,omitempty"`
	Patchset int            `json:"patchset,omitempty"`
	Pipeline string         `json:"pipeline"`
	Buildset string         `json:"buildset"`
	Result   string         `json:"result"`
	Message  string         `json:"message,omitempty"`
	Builds   []*BuildReport `json:"builds"`
}

// Ref names the item: "1234,1" or the project for a branch item.
func (i *ItemReport) Ref() string {
	if i.Change == 0 {
		return i.Project
	}
	return fmt.Sprintf("%d,%d", i.Change, i.Patchset)
}

// Title is a one-line description of the item.
func (i *ItemReport) Title() string {
	if i.Change == 0 {
		return fmt.Sprintf("%s (%s)", i.Project, i.Pipeline)
	}
	return fmt.Sprintf("change %s of %s (%s)", i.Ref(), i.Project, i.Pipeline)
}

// Build returns the report of the named job, or nil.
func (i *ItemReport) Build(job string) *BuildReport {
	for _, b := range i.Builds {
		if b.Job == job {
			return b
		}
	}
	return nil
}

// BuildReport is the result of one job of an item.
type BuildReport struct {
	Job      string         `json:"job"`
	UUID     string         `json:"uuid,omitempty"`
	Result   string         `json:"result"`
	Message  string         `json:"message,omitempty"`
	Voting   bool           `json:"voting"`
	Attempts int            `json:"attempts,omitempty"`
	Start    time.Time      `json:"start"`
	Duration time.Duration  `json:"duration"`
	Paused   time.Duration  `json:"paused,omitempty"`
	Dir      string         `json:"dir,omitempty"`
	Log      string         `json:"log,omitempty"`
	Data     map[string]any `json:"data,omitempty"`
	Phases   []PhaseReport  `json:"phases,omitempty"`
}

// Artifacts returns the artifacts the build returned (data.zuul.artifacts).
func (b *BuildReport) Artifacts() []map[string]any {
	z, _ := b.Data["zuul"].(map[string]any)
	list, _ := z["artifacts"].([]any)
	var out []map[string]any
	for _, a := range list {
		if m, ok := a.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// ImageArtifacts are the build's artifacts of metadata type
// container_image: the images it pushed to the intermediate registry,
// without the BuildKit caches (buildkit_cache) pushed beside them.
func (b *BuildReport) ImageArtifacts() []map[string]any {
	var out []map[string]any
	for _, a := range b.Artifacts() {
		if md, _ := a["metadata"].(map[string]any); md["type"] == zuul.ContainerImageType {
			out = append(out, a)
		}
	}
	return out
}

func (b *BuildReport) artifacts(it *itemRun, job string) []map[string]any {
	return artifactsOf(b.Data, it, job)
}

// Failed reports whether any voting build failed or any item could not
// run.
func (r *Report) Failed() bool {
	for _, it := range r.Items {
		if it.Result != Success {
			return true
		}
	}
	return false
}

// Item returns the first item report of a change number in a pipeline, or
// nil.
func (r *Report) Item(change int, pipeline string) *ItemReport {
	for _, it := range r.Items {
		if it.Change == change && (pipeline == "" || it.Pipeline == pipeline) {
			return it
		}
	}
	return nil
}

// Summary writes a readable summary: each item, each build with its
// result, duration and, for failures, why.
func (r *Report) Summary() string {
	var sb strings.Builder
	builds := 0
	for _, it := range r.Items {
		builds += len(it.Builds)
	}
	fmt.Fprintf(&sb, "Summary: %d queue item(s), %d build(s) in %s (build directories under %s)\n",
		len(r.Items), builds, r.Duration.Round(100*time.Millisecond), r.WorkDir)
	for _, it := range r.Items {
		fmt.Fprintf(&sb, "\n%s: %s%s\n", it.Title(), it.Result, suffix(it.Message))
		names := make([]string, 0, len(it.Builds))
		for _, b := range it.Builds {
			names = append(names, b.Job)
		}
		width := 10
		for _, n := range names {
			width = max(width, len(n))
		}
		for _, b := range it.Builds {
			dur := "-"
			if b.Duration > 0 {
				dur = b.Duration.Round(100 * time.Millisecond).String()
			}
			extra := ""
			switch {
			case b.Paused >= 10*time.Millisecond:
				extra = fmt.Sprintf(" (paused %s)", b.Paused.Round(10*time.Millisecond))
			case b.Paused > 0:
				extra = " (paused, resumed at once: no dependents)"
			}
			if !b.Voting {
				extra += " (non-voting)"
			}
			fmt.Fprintf(&sb, "  %-*s  %-12s %9s%s\n", width, b.Job, b.Result, dur, extra)
			if b.Message != "" {
				fmt.Fprintf(&sb, "  %-*s  %s\n", width, "", b.Message)
			}
		}
	}
	return sb.String()
}
