package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Playbook is one playbook of a frozen job, with what it runs with.
type Playbook struct {
	// Name is the path as written in the job, relative to Source.Root.
	Name string
	// Path is the absolute path of the playbook file.
	Path   string
	Source *Source
	// Job is the job that lists the playbook; Level its depth in the
	// inheritance chain (0 is the base job).
	Job   string
	Level int
	// Secrets are the secrets this playbook receives: those of the job
	// that lists it, and those a child passes to its parents.
	Secrets map[string]map[string]any
	// RoleDirs is the role path: the defining project's roles directory,
	// then those of the projects in job.roles, child's first.
	RoleDirs []string
}

// FrozenJob is a job with its inheritance applied: what the runner executes.
type FrozenJob struct {
	Name        string
	Description string
	// Chain lists the stanzas applied, base job first.
	Chain []*JobDef

	PreRun, Run, PostRun, CleanupRun []Playbook

	Vars, ExtraVars     map[string]any
	HostVars, GroupVars map[string]map[string]any
	Nodeset             Nodeset
	// NodesetSet is true when a job of the chain sets nodeset; otherwise
	// the runner applies the queue's default, as a Zuul site's base job
	// would.
	NodesetSet         bool
	Dependencies       []Dependency
	Requires, Provides []string
	Timeout            time.Duration
	PostTimeout        time.Duration
	Attempts           int
	Voting             bool
	RequiredProjects   []string
}

// SecretLookup returns the data of a secret for a job that names it, or an
// error a user can act on (undefined, encrypted without a local value,
// defined in another project).
type SecretLookup func(ref SecretRef, job *JobDef) (map[string]any, error)

// DefaultAttempts is Zuul's default for job.attempts.
const DefaultAttempts = 3

// Freeze applies inheritance and variants to the job name, plus extra
// variants (the entry of a project pipeline), and checks that every
// playbook exists and every secret resolves.
func (l *Layout) Freeze(name string, secrets SecretLookup, extra ...*JobDef) (*FrozenJob, error) {
	chain, err := l.chain(name, map[string]bool{})
	if err != nil {
		return nil, err
	}
	chain = append(chain, extra...)
	fj := &FrozenJob{Name: name, Voting: true, Attempts: DefaultAttempts,
		Vars: map[string]any{}, ExtraVars: map[string]any{},
		HostVars: map[string]map[string]any{}, GroupVars: map[string]map[string]any{}}
	fj.Chain = chain
	var abstract bool
	var roles [][]string // per level, cumulative, child's first
	var cum []string
	for _, j := range chain {
		if j.Name == name && j.Abstract {
			abstract = true
		}
		if j.Description != "" {
			fj.Description = j.Description
		}
		if len(j.Roles) > 0 {
			cum = append(append([]string{}, j.Roles...), cum...)
		}
		roles = append(roles, cum)
	}
	if abstract {
		return nil, configErr("job %s is abstract: run a job that inherits from it", name)
	}
	for lvl, j := range chain {
		pbs := func(refs []PlaybookRef) ([]Playbook, error) {
			var out []Playbook
			for _, r := range refs {
				pb, err := l.playbook(j, lvl, r, roles[lvl])
				if err != nil {
					return nil, err
				}
				out = append(out, pb)
			}
			return out, nil
		}
		pre, err := pbs(j.PreRun)
		if err != nil {
			return nil, err
		}
		fj.PreRun = append(fj.PreRun, pre...)
		if j.Run != nil {
			if fj.Run, err = pbs(j.Run); err != nil {
				return nil, err
			}
		}
		var plainPost []PlaybookRef
		for _, r := range j.PostRun {
			if !r.Cleanup {
				plainPost = append(plainPost, r)
			}
		}
		post, err := pbs(plainPost)
		if err != nil {
			return nil, err
		}
		fj.PostRun = append(post, fj.PostRun...)
		cleanup, err := pbs(j.CleanupRun)
		if err != nil {
			return nil, err
		}
		fj.CleanupRun = append(cleanup, fj.CleanupRun...)

		if j.VarsReplace {
			fj.Vars = map[string]any{}
		}
		fj.Vars = deepMerge(fj.Vars, j.Vars)
		if j.ExtraVarsReplace {
			fj.ExtraVars = map[string]any{}
		}
		fj.ExtraVars = deepMerge(fj.ExtraVars, j.ExtraVars)
		for h, v := range j.HostVars {
			fj.HostVars[h] = deepMerge(fj.HostVars[h], v)
		}
		for g, v := range j.GroupVars {
			fj.GroupVars[g] = deepMerge(fj.GroupVars[g], v)
		}
		switch {
		case j.Nodeset != nil:
			fj.Nodeset = *j.Nodeset
			fj.NodesetSet = true
		case j.NodesetName != "":
			fj.NodesetSet = true
			ns, ok := l.Nodesets[j.NodesetName]
			if !ok {
				return nil, configErr("%s: job %s: nodeset %s is not defined", j.Pos, j.Name, j.NodesetName)
			}
			fj.Nodeset = *ns
		}
		if j.DependenciesSet {
			fj.Dependencies = j.Dependencies
		}
		fj.Requires = mergeList(fj.Requires, j.Requires, j.RequiresReplace)
		fj.Provides = mergeList(fj.Provides, j.Provides, j.ProvReplace)
		fj.RequiredProjects = mergeList(fj.RequiredProjects, j.RequiredProjects, false)
		if j.Timeout > 0 {
			fj.Timeout = time.Duration(j.Timeout) * time.Second
		}
		if j.PostTimeout > 0 {
			fj.PostTimeout = time.Duration(j.PostTimeout) * time.Second
		}
		if j.Attempts > 0 {
			fj.Attempts = j.Attempts
		}
		if j.Voting != nil {
			fj.Voting = *j.Voting
		}
	}
	if len(fj.Run) == 0 {
		return nil, configErr("job %s has no run playbook (set run: on it or on a parent)", name)
	}
	// Secrets: each playbook gets those of its own level, and those that
	// deeper levels pass to their parents.
	all := [][]*Playbook{}
	for _, list := range [][]Playbook{fj.PreRun, fj.Run, fj.PostRun, fj.CleanupRun} {
		ptrs := make([]*Playbook, len(list))
		for i := range list {
			ptrs[i] = &list[i]
		}
		all = append(all, ptrs)
	}
	for _, list := range all {
		for _, pb := range list {
			pb.Secrets = map[string]map[string]any{}
			for lvl := len(chain) - 1; lvl >= pb.Level; lvl-- {
				j := chain[lvl]
				for _, ref := range j.Secrets {
					if lvl != pb.Level && !ref.PassToParent {
						continue
					}
					if secrets == nil {
						return nil, configErr("%s: job %s uses secret %s, but no secrets are available", j.Pos, j.Name, ref.Secret)
					}
					data, err := secrets(ref, j)
					if err != nil {
						return nil, err
					}
					pb.Secrets[ref.Name] = data
				}
			}
		}
	}
	return fj, nil
}

func (l *Layout) chain(name string, seen map[string]bool) ([]*JobDef, error) {
	defs := l.Jobs[name]
	if len(defs) == 0 {
		return nil, configErr("job %s is not defined", name)
	}
	if seen[name] {
		return nil, configErr("job %s inherits from itself", name)
	}
	seen[name] = true
	var parent *string
	for _, d := range defs {
		if d.Parent != nil {
			parent = d.Parent
			break
		}
	}
	var chain []*JobDef
	if parent != nil && *parent != "" {
		pc, err := l.chain(*parent, seen)
		if err != nil {
			return nil, fmt.Errorf("%w (parent of %s, %s)", err, name, defs[0].Pos)
		}
		for _, p := range pc {
			if p.Final && p.Name == *parent {
				return nil, configErr("%s: job %s cannot inherit from %s: it is final", defs[0].Pos, name, *parent)
			}
		}
		chain = pc
	}
	return append(chain, defs...), nil
}

func (l *Layout) playbook(j *JobDef, level int, r PlaybookRef, roleProjects []string) (Playbook, error) {
	path := filepath.Join(j.Source.Root, r.Name)
	st, err := os.Stat(path)
	if err != nil || st.IsDir() {
		return Playbook{}, configErr("%s: job %s: playbook %s does not exist in project %s (looked for %s)",
			j.Pos, j.Name, r.Name, j.Source.Project, path)
	}
	dirs := []string{filepath.Join(j.Source.Root, "roles")}
	for _, p := range roleProjects {
		var found bool
		for _, s := range l.Sources {
			if s.Project == p {
				dirs = append(dirs, filepath.Join(s.Root, "roles"))
				found = true
			}
		}
		if !found {
			return Playbook{}, configErr("%s: job %s: roles project %s is not known to the runner (add it with -config)", j.Pos, j.Name, p)
		}
	}
	var existing []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() && !seen[d] {
			existing = append(existing, d)
			seen[d] = true
		}
	}
	return Playbook{Name: r.Name, Path: path, Source: j.Source, Job: j.Name, Level: level, RoleDirs: existing}, nil
}

func mergeList(base, add []string, replace bool) []string {
	if replace {
		return append([]string(nil), add...)
	}
	out := append([]string(nil), base...)
	for _, a := range add {
		dup := false
		for _, b := range out {
			if a == b {
				dup = true
			}
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}

// Phases lists the playbook names of a frozen job in execution order, for
// tests and the summary.
func (fj *FrozenJob) Phases() []string {
	var out []string
	for _, pb := range fj.PreRun {
		out = append(out, "pre-run "+pb.Name)
	}
	for _, pb := range fj.Run {
		out = append(out, "run "+pb.Name)
	}
	for _, pb := range fj.PostRun {
		out = append(out, "post-run "+pb.Name)
	}
	for _, pb := range fj.CleanupRun {
		out = append(out, "cleanup-run "+pb.Name)
	}
	return out
}
