package runner

import (
	"context"
	"fmt"
	"strings"
	"time"
)

type jobState int

const (
	waiting jobState = iota
	running
	paused
	finished
)

// jobRun is one job of a buildset while it runs.
type jobRun struct {
	name        string
	job         *FrozenJob
	item        *itemRun
	deps        []*jobRun
	dependents  []*jobRun
	state       jobState
	attempt     int
	maxAttempts int
	b           *build
	report      *BuildReport
	// data and secret are what the job returned through zuul_return by the
	// end of its run phase: what dependent jobs receive.
	data, secret map[string]any
	pausedAt     time.Time
}

func (jr *jobRun) childJobNames() []any {
	var out []any
	for _, d := range jr.dependents {
		out = append(out, d.name)
	}
	if out == nil {
		out = []any{}
	}
	return out
}

// ancestors returns every job this one depends on, directly or not, in
// job-list order (later entries win when their data is merged).
func (jr *jobRun) ancestors() []*jobRun {
	seen := map[*jobRun]bool{}
	var walk func(j *jobRun)
	walk = func(j *jobRun) {
		for _, d := range j.deps {
			if !seen[d] {
				seen[d] = true
				walk(d)
			}
		}
	}
	walk(jr)
	var out []*jobRun
	for _, j := range jr.item.jobs {
		if seen[j] {
			out = append(out, j)
		}
	}
	return out
}

// descendants returns every job that depends on this one, directly or not.
func (jr *jobRun) descendants() []*jobRun {
	seen := map[*jobRun]bool{}
	var out []*jobRun
	var walk func(j *jobRun)
	walk = func(j *jobRun) {
		for _, d := range j.dependents {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
				walk(d)
			}
		}
	}
	walk(jr)
	return out
}

type event struct {
	jr   *jobRun
	post bool
	err  error
}

// runBuildset runs the jobs of one item in dependency order. A job starts
// when every dependency has succeeded or paused; a paused job resumes (runs
// its post-run playbooks) once every job depending on it has finished.
func (r *Runner) runBuildset(ctx context.Context, it *itemRun) error {
	events := make(chan event)
	active := 0
	var firstErr error
	for {
		progress := false
		for _, jr := range it.jobs {
			if active >= r.concurrency {
				break
			}
			switch jr.state {
			case waiting:
				ready, skip := r.readiness(jr)
				if skip != "" {
					r.finishWithout(jr, Skipped, skip)
					progress = true
					continue
				}
				if !ready {
					continue
				}
				if fail := r.requirementFailure(jr); fail != "" {
					r.finishWithout(jr, Failure, fail)
					progress = true
					continue
				}
				jr.state = running
				// The report is created here, in the scheduler, so reports
				// list builds in start order without a lock.
				jr.report = &BuildReport{Job: jr.name, Voting: jr.job.Voting, Start: time.Now()}
				it.report.Builds = append(it.report.Builds, jr.report)
				active++
				progress = true
				go func(jr *jobRun) {
					err := r.runMain(ctx, jr)
					events <- event{jr: jr, err: err}
				}(jr)
			case paused:
				if !allFinished(jr.descendants()) {
					continue
				}
				jr.state = running
				jr.report.Paused = time.Since(jr.pausedAt)
				r.progressf("   %-40s resumed", jr.name)
				active++
				progress = true
				go func(jr *jobRun) {
					err := r.runPost(ctx, jr)
					events <- event{jr: jr, post: true, err: err}
				}(jr)
			}
		}
		if allFinished(it.jobs) {
			return firstErr
		}
		if active == 0 {
			if progress {
				continue
			}
			return fmt.Errorf("buildset of %s cannot make progress (runner bug)", it.report.Ref())
		}
		ev := <-events
		active--
		if ev.err != nil && firstErr == nil {
			firstErr = ev.err
		}
		if !ev.post && ev.jr.state == running {
			if ev.err != nil {
				ev.jr.state = finished
				continue
			}
			if ev.jr.isPaused() {
				ev.jr.state = paused
				ev.jr.pausedAt = time.Now()
				r.progressf("   %-40s paused", ev.jr.name)
				continue
			}
			// Not paused: run post-run playbooks right away.
			active++
			go func(jr *jobRun) {
				err := r.runPost(ctx, jr)
				events <- event{jr: jr, post: true, err: err}
			}(ev.jr)
			continue
		}
		ev.jr.state = finished
	}
}

func allFinished(jobs []*jobRun) bool {
	for _, j := range jobs {
		if j.state != finished {
			return false
		}
	}
	return true
}

func (jr *jobRun) isPaused() bool {
	if jr.b == nil || !jr.b.runOK {
		return false
	}
	z, _ := jr.data["zuul"].(map[string]any)
	p, _ := z["pause"].(bool)
	return p
}

// readiness reports whether a waiting job can start, or why it is skipped.
func (r *Runner) readiness(jr *jobRun) (bool, string) {
	for _, d := range jr.deps {
		switch d.state {
		case waiting, running:
			return false, ""
		case paused:
			continue
		}
		if d.report.Result != Success {
			return false, fmt.Sprintf("dependency %s did not succeed (%s)", d.name, d.report.Result)
		}
	}
	for _, d := range jr.deps {
		z, _ := d.data["zuul"].(map[string]any)
		if cj, ok := z["child_jobs"].([]any); ok {
			listed := false
			for _, c := range cj {
				if c == jr.name {
					listed = true
				}
			}
			if !listed {
				return false, fmt.Sprintf("skipped by %s (zuul.child_jobs)", d.name)
			}
		}
	}
	return true, ""
}

// requirementFailure checks the providers of the job's requires among the
// items ahead: a failed provider fails the job before it runs, as in Zuul.
func (r *Runner) requirementFailure(jr *jobRun) string {
	for _, a := range jr.item.ahead {
		for _, p := range a.jobs {
			if !intersects(p.job.Provides, jr.job.Requires) {
				continue
			}
			if p.report == nil || p.report.Result != Success {
				res := "not run"
				if p.report != nil {
					res = p.report.Result
				}
				return fmt.Sprintf("requires %s, but job %s of change %s, which provides it, did not succeed (%s)",
					strings.Join(jr.job.Requires, ", "), p.name, a.report.Ref(), res)
			}
		}
	}
	return ""
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

func (r *Runner) finishWithout(jr *jobRun, result, msg string) {
	jr.state = finished
	jr.report = &BuildReport{Job: jr.name, Result: result, Message: msg, Voting: jr.job.Voting, Start: time.Now()}
	jr.item.report.Builds = append(jr.item.report.Builds, jr.report)
	r.progressf("   %-40s %s: %s", jr.name, result, msg)
}

// inputs computes what the job receives from others: data and secret_data
// of its dependencies (transitively, later jobs winning), and artifacts of
// the providers of its requirements in items ahead, then of its
// dependencies.
func (jr *jobRun) inputs() (data, secret map[string]any, artifacts []map[string]any) {
	data, secret = map[string]any{}, map[string]any{}
	it := jr.item
	for _, a := range it.ahead {
		for _, p := range a.jobs {
			if !intersects(p.job.Provides, jr.job.Requires) || p.report == nil {
				continue
			}
			artifacts = append(artifacts, p.report.artifacts(a, p.name)...)
		}
	}
	for _, d := range jr.ancestors() {
		dd := map[string]any{}
		for k, v := range d.data {
			if k != "zuul" {
				dd[k] = v
			}
		}
		data = deepMerge(data, dd)
		secret = deepMerge(secret, d.secret)
		artifacts = append(artifacts, artifactsOf(d.data, it, d.name)...)
	}
	return data, secret, artifacts
}

// artifactsOf returns data.zuul.artifacts with the project, change, patchset
// and job Zuul adds when it hands them to other jobs.
func artifactsOf(data map[string]any, it *itemRun, job string) []map[string]any {
	z, _ := data["zuul"].(map[string]any)
	list, _ := z["artifacts"].([]any)
	var out []map[string]any
	for _, a := range list {
		am, ok := a.(map[string]any)
		if !ok {
			continue
		}
		c := deepCopy(am).(map[string]any)
		c["project"] = it.own.Name
		c["job"] = job
		if it.change.Change > 0 {
			c["change"] = fmt.Sprint(it.change.Change)
			c["patchset"] = fmt.Sprint(it.change.Patchset)
		}
		out = append(out, c)
	}
	return out
}

// runMain runs a job's pre-run and run playbooks (with retries of pre-run
// failures up to its attempts) and leaves the build ready for its post-run.
func (r *Runner) runMain(ctx context.Context, jr *jobRun) error {
	it := jr.item
	data, secret, arts := jr.inputs()
	for attempt := 1; ; attempt++ {
		jr.attempt = attempt
		b := &build{r: r, it: it, jr: jr, job: jr.job, uuid: newUUID(), red: newRedactor(),
			parentData: data, parentSecret: secret, artifacts: arts, preLevel: -1}
		b.red.addSecret("", secret)
		jr.b = b
		rep := jr.report
		rep.UUID, rep.Attempts = b.uuid, attempt
		if err := b.setup(); err != nil {
			return fmt.Errorf("setting up build %s of %s: %w", b.uuid, jr.name, err)
		}
		rep.Dir = b.dir
		rep.Log = b.logFile.Name()
		r.progressf("   %-40s started (build %s, attempt %d/%d)", jr.name, b.uuid[:12], attempt, jr.maxAttempts)

		mainCtx := ctx
		cancel := func() {}
		if jr.job.Timeout > 0 {
			mainCtx, cancel = context.WithTimeout(ctx, jr.job.Timeout)
		}
		err := b.runMainPhases(mainCtx)
		cancel()
		if err != nil {
			return err
		}
		if b.preFail && attempt < jr.maxAttempts && !b.noRetry() {
			r.progressf("   %-40s pre-run failed, retrying: %s", jr.name, b.message)
			if err := b.runPostPhases(ctx, true); err != nil {
				return err
			}
			b.closeConnections()
			b.scrub()
			continue
		}
		jr.data, jr.secret, err = b.readResults()
		if err != nil {
			b.message = err.Error()
			b.runOK = false
			jr.data, jr.secret = map[string]any{}, map[string]any{}
		}
		return nil
	}
}

// runMainPhases runs the workspace preparation, pre-run and run playbooks.
func (b *build) runMainPhases(ctx context.Context) error {
	ok, err := b.prepareWorkspace(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	if !ok {
		b.preFail = true
		return nil
	}
	for _, pb := range b.job.PreRun {
		b.preLevel = max(b.preLevel, pb.Level)
		ok, err := b.runPlaybook(ctx, "pre", pb)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if !ok {
			b.preFail = true
			if ctx.Err() != nil {
				b.result = TimedOut
			}
			return nil
		}
	}
	b.preLevel = len(b.job.Chain)
	for _, pb := range b.job.Run {
		ok, err := b.runPlaybook(ctx, "run", pb)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if !ok {
			if ctx.Err() != nil {
				b.result = TimedOut
			}
			return nil
		}
	}
	b.runOK = true
	return nil
}

// runPostPhases runs the post-run playbooks of the levels whose pre-run
// started (all of them once run started), then cleanup playbooks.
func (b *build) runPostPhases(ctx context.Context, willRetry bool) error {
	postFailed := false
	for _, pb := range b.job.PostRun {
		if pb.Level > b.preLevel {
			continue
		}
		pctx, cancel := ctx, func() {}
		if b.job.PostTimeout > 0 {
			pctx, cancel = context.WithTimeout(ctx, b.job.PostTimeout)
		}
		ok, err := b.runPlaybook(pctx, "post", pb)
		cancel()
		if err != nil && pctx.Err() == nil {
			return err
		}
		if !ok {
			postFailed = true
		}
	}
	for _, pb := range b.job.CleanupRun {
		if _, err := b.runPlaybook(ctx, "cleanup", pb); err != nil && ctx.Err() == nil {
			return err
		}
	}
	switch {
	case b.result == TimedOut:
	case b.preFail && b.noRetry():
		b.result = Failure
	case b.preFail && !willRetry:
		b.result = RetryLimit
	case b.preFail:
		b.result = Failure
	case !b.runOK:
		b.result = Failure
	case postFailed:
		b.result = PostFailure
	default:
		b.result = Success
	}
	return nil
}

// noRetry reports whether the job returned zuul.retry: false, which makes
// a pre-run failure final (FAILURE, not retried).
func (b *build) noRetry() bool {
	data, _, err := b.readResults()
	if err != nil {
		return false
	}
	z, _ := data["zuul"].(map[string]any)
	r, ok := z["retry"].(bool)
	return ok && !r
}

// runPost finishes a build: post-run and cleanup playbooks, the result, and
// the scrubbing of secrets from its directory.
func (r *Runner) runPost(ctx context.Context, jr *jobRun) error {
	b := jr.b
	err := b.runPostPhases(ctx, false)
	rep := jr.report
	data, _, rerr := b.readResults()
	if rerr == nil {
		rep.Data = data
	}
	b.closeConnections()
	b.scrub()
	rep.Result = b.result
	rep.Message = b.message
	if b.result == Success {
		rep.Message = ""
	}
	rep.Phases = append(rep.Phases, b.phases...)
	rep.Duration = time.Since(rep.Start)
	r.progressf("   %-40s %s in %s%s", jr.name, rep.Result, rep.Duration.Round(100*time.Millisecond), suffix(rep.Message))
	return err
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
