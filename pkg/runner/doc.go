// Package runner executes Zuul jobs on one machine as a Zuul executor would,
// so the container-image gating jobs can be run and tested without Zuul.
//
// It reads Zuul configuration (job, secret, nodeset and project stanzas from
// zuul.d/*.yaml and .zuul.yaml) and a queue of changes, freezes each job
// along its inheritance chain, and runs the resulting playbooks with real
// ansible-playbook:
//
//   - inheritance: parent pre-run playbooks before the child's, the child's
//     post-run before the parent's, run from the nearest job that has one;
//     variables deep-merged from parent to child;
//   - dependencies (hard and soft) inside a buildset, pause and resume
//     (zuul_return data.zuul.pause), and child_jobs filtering;
//   - zuul_return data and secret_data handed to dependent jobs, secret_data
//     at the lowest variable precedence;
//   - artifacts of changes ahead handed to jobs that require what the
//     providing jobs provide, as zuul.artifacts;
//   - the zuul variable (change, patchset, build, buildset, pipeline,
//     project, projects, items, executor paths, ...) as an extra variable,
//     secrets as extra variables only for the playbooks of the job that
//     declares them (or pass-to-parent);
//   - a nodeset of one node reached through the imagegate_node connection
//     (this machine, with a private home directory) or SSH, or no node at
//     all (implicit localhost, the executor).
//
// Changes run one after another in queue order; the jobs of one change run
// in dependency order, by default one at a time. See docs/runner.md.
//
// The package by concern: the queue file (queue.go); Zuul configuration
// decoded into typed structs (config.go, stanza.go, jobstanza.go, decode.go,
// yamlvalue.go) and frozen (freeze.go); a queue item prepared (item.go);
// its jobs scheduled (schedule.go); each build executed (build.go) with its
// inventory and variables (inventory.go) and the runner's plugins
// (plugins.go); results reported (report.go). Secrets are redacted with
// pkg/redact, the redactor the modules use.
package runner
