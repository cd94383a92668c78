package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Preparing a queue item before anything runs: its sources and those of
// the items ahead, the layout (speculatively, the change's own
// configuration first), the frozen jobs, their secrets and nodeset, and the
// job graph, refusing missing dependencies and cycles.

// projectSrc is a project prepared for the items of a queue.
type projectSrc struct {
	Name, Host, Canonical, Short string
	Path                         string
	Commit                       string
	Required                     bool
}

func (p *projectSrc) vars() map[string]any {
	return map[string]any{
		"name": p.Name, "short_name": p.Short, "canonical_hostname": p.Host,
		"canonical_name": p.Canonical, "src_dir": "src/" + p.Canonical,
	}
}

// itemRun is one queue item while it runs.
type itemRun struct {
	idx         int
	q           *Queue
	change      *Change
	buildset    string
	eventID     string
	ahead       []*itemRun
	own         *projectSrc
	projects    map[string]*projectSrc
	projectVars map[string]any
	layout      *Layout
	jobs        []*jobRun
	report      *ItemReport
}

func (it *itemRun) projectList() []*projectSrc {
	var out []*projectSrc
	for _, p := range it.projects {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Canonical < out[j].Canonical })
	return out
}

// refVars describes an item as zuul.items entries do.
func (it *itemRun) refVars(x *itemRun) map[string]any {
	c := x.change
	v := map[string]any{
		"project":    x.own.vars(),
		"branch":     c.Branch,
		"change_url": x.q.changeURL(c),
	}
	if c.Change > 0 {
		v["change"] = fmt.Sprint(c.Change)
		v["patchset"] = fmt.Sprint(c.Patchset)
		v["ref"] = fmt.Sprintf("refs/changes/%02d/%d/%d", c.Change%100, c.Change, c.Patchset)
	} else {
		v["ref"] = "refs/heads/" + c.Branch
		v["newrev"] = x.own.Commit
		v["commit_id"] = x.own.Commit
		delete(v, "change_url")
	}
	return v
}

// prepareItem prepares the item's sources, loads the layout and freezes its
// jobs. Configuration problems are ErrConfig errors: the item is reported
// as ERROR and nothing runs.
func (r *Runner) prepareItem(it *itemRun) error {
	q, c := it.q, it.change
	host, name := q.canonical(c.Project)
	canonical := host + "/" + name
	dir := filepath.Join(r.workDir, "items", fmt.Sprintf("%d-%s", it.idx, strings.ReplaceAll(name, "/", "-")), canonical)
	commit, err := prepareRepo(c.Src, dir, c.Checkout, c.Message)
	if err != nil {
		return fmt.Errorf("%w: preparing the source of %s from %s: %v", ErrConfig, c.Project, c.Src, err)
	}
	short := name[strings.LastIndex(name, "/")+1:]
	it.own = &projectSrc{Name: name, Host: host, Canonical: canonical, Short: short, Path: dir, Commit: commit}
	it.projects = map[string]*projectSrc{}
	for pname, psrc := range q.Projects {
		h, n := q.canonical(pname)
		pdir := filepath.Join(r.workDir, "projects", h, n)
		pcommit := ""
		if _, err := os.Stat(pdir); err != nil {
			if pcommit, err = prepareRepo(psrc, pdir, "", ""); err != nil {
				return fmt.Errorf("%w: preparing project %s from %s: %v", ErrConfig, pname, psrc, err)
			}
		} else if out, err := git(pdir, "rev-parse", "HEAD"); err == nil {
			pcommit = strings.TrimSpace(out)
		}
		it.projects[h+"/"+n] = &projectSrc{Name: n, Host: h, Canonical: h + "/" + n, Short: n[strings.LastIndex(n, "/")+1:], Path: pdir, Commit: pcommit}
	}
	for _, a := range it.ahead {
		it.projects[a.own.Canonical] = a.own
	}
	it.projects[canonical] = it.own

	// The layout: configuration projects, then every project of the item
	// (speculatively: the change's own configuration replaces that of a
	// configuration project of the same name).
	l := NewLayout()
	speculative := map[string]bool{}
	for _, p := range it.projects {
		speculative[p.Name] = true
	}
	var global []*Source
	global = append(global, r.sources...)
	for _, cr := range q.Config {
		global = append(global, &Source{Project: cr.Project, Root: cr.Path})
	}
	for _, s := range global {
		if speculative[s.Project] {
			continue
		}
		if err := l.LoadSource(s); err != nil {
			return err
		}
	}
	var ownSrc *Source
	for _, p := range it.projectList() {
		s := &Source{Project: p.Name, Root: p.Path}
		if p == it.own {
			ownSrc = s
		}
		if err := l.LoadSource(s); err != nil {
			return err
		}
	}
	it.layout = l

	var entries []*JobDef
	if c.Jobs.Kind != 0 {
		var err error
		if entries, err = ParseJobList(ownSrc, "queue file", fmt.Sprintf("queue file: change %s jobs", it.report.Ref()), &c.Jobs); err != nil {
			return err
		}
	}
	vars := map[string]any{}
	if len(entries) == 0 {
		var err error
		if entries, vars, err = l.PipelineJobs(name, c.Pipeline); err != nil {
			return err
		}
		if len(entries) == 0 {
			return configErr("no jobs for %s in pipeline %s: list jobs in the queue file or in the project's %s stanza", c.Project, c.Pipeline, c.Pipeline)
		}
	}
	it.projectVars = deepMerge(vars, c.Vars)

	// Freeze: entries of the same job are variants of one job.
	var order []string
	byName := map[string][]*JobDef{}
	for _, e := range entries {
		if _, ok := byName[e.Name]; !ok {
			order = append(order, e.Name)
		}
		byName[e.Name] = append(byName[e.Name], e)
	}
	lookup := r.secretLookup(q, l)
	defaultNodeset, err := queueNodeset(q, l)
	if err != nil {
		return err
	}
	index := map[string]*jobRun{}
	for _, n := range order {
		fj, err := l.Freeze(n, lookup, byName[n]...)
		if err != nil {
			return err
		}
		if !fj.NodesetSet && defaultNodeset != nil {
			fj.Nodeset = *defaultNodeset
		}
		jr := &jobRun{name: n, job: fj, item: it}
		jr.maxAttempts = min(fj.Attempts, r.maxAttempts)
		it.jobs = append(it.jobs, jr)
		index[n] = jr
	}
	for _, jr := range it.jobs {
		for _, d := range jr.job.Dependencies {
			dep, ok := index[d.Name]
			if !ok {
				if d.Soft {
					continue
				}
				return configErr("job %s depends on job %s, which does not run for this change: add %s to the job list or make the dependency soft", jr.name, d.Name, d.Name)
			}
			jr.deps = append(jr.deps, dep)
			dep.dependents = append(dep.dependents, jr)
		}
	}
	// Refuse dependency cycles before anything runs.
	state := map[*jobRun]int{}
	var visit func(j *jobRun, path []string) error
	visit = func(j *jobRun, path []string) error {
		switch state[j] {
		case 1:
			return configErr("jobs depend on each other in a cycle: %s", strings.Join(append(path, j.name), " -> "))
		case 2:
			return nil
		}
		state[j] = 1
		for _, d := range j.deps {
			if err := visit(d, append(path, j.name)); err != nil {
				return err
			}
		}
		state[j] = 2
		return nil
	}
	for _, jr := range it.jobs {
		if err := visit(jr, nil); err != nil {
			return err
		}
	}
	return nil
}

// queueNodeset returns the queue's default nodeset, or nil.
func queueNodeset(q *Queue, l *Layout) (*Nodeset, error) {
	if q.Nodeset.Kind == 0 {
		return nil, nil
	}
	n := resolve(&q.Nodeset)
	if name, ok := scalarString(n); ok {
		ns, ok := l.Nodesets[name]
		if !ok {
			return nil, configErr("queue file: nodeset %s is not defined", name)
		}
		return ns, nil
	}
	if n.Kind == yaml.MappingNode {
		d := &decoder{file: "queue file"}
		return d.nodeset("queue file: nodeset", n, false)
	}
	return nil, configErr("queue file: nodeset must be a nodeset name or {nodes: [...]}")
}

func (r *Runner) secretLookup(q *Queue, l *Layout) SecretLookup {
	return func(ref SecretRef, job *JobDef) (map[string]any, error) {
		if data, ok := q.Secrets[ref.Secret]; ok {
			m, _ := deepCopy(data).(map[string]any)
			return m, nil
		}
		def, ok := l.Secrets[ref.Secret]
		if !ok {
			return nil, configErr("%s: job %s uses secret %s, which is not defined: give it under secrets: in the queue file", job.Pos, job.Name, ref.Secret)
		}
		if def.Source.Project != job.Source.Project {
			return nil, configErr("%s: job %s (project %s) uses secret %s of project %s: Zuul lets a job use only its own project's secrets", job.Pos, job.Name, job.Source.Project, ref.Secret, def.Source.Project)
		}
		if def.Encrypted {
			return nil, configErr("%s: secret %s is encrypted and the runner cannot decrypt it: give its plain value under secrets: in the queue file", def.Pos, ref.Secret)
		}
		m, _ := deepCopy(def.Data).(map[string]any)
		return m, nil
	}
}
