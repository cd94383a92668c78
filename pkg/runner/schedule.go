package runner

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Scheduling the jobs of one queue item: a job starts when its
// dependencies succeeded or paused, a paused job resumes when its
// dependents finished, and what a job hands to others (data, secret_data,
// artifacts) is computed here.

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
