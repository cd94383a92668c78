// Package buildkitd keeps a BuildKit daemon running on a node with a given
// binary, command line and configuration, as the buildkitd_service module
// (the ensure-buildkit role's last step) asks.
//
// BuildKit reads buildkitd.toml, and the CA and key files it names, only
// when it starts; use-buildset-registry rewrites them when the buildset
// registry changes. So "running" is not enough: Apply records, beside the
// daemon it starts, what it started it with (the command line and the
// sha256 of the binary, of buildkitd.toml and of every file the
// configuration names: registry CAs and key pairs, gRPC TLS files), and
// restarts the daemon when any of it differs from what is on disk now. A
// second Apply with nothing changed changes nothing.
//
// How the daemon runs (Manager):
//
//   - systemd (where systemd is PID 1): a transient unit,
//     imagegate-buildkitd.service by default, started with systemd-run
//     (Delegate=yes, KillMode=mixed). Its log is the unit's journal. A
//     transient unit leaves no file in /etc and is gone once stopped or at
//     reboot.
//   - process (elsewhere, containers for example): a detached process in
//     its own session, its pid in the pid file, its output appended to the
//     log file.
//
// Either way the record is <socket directory>/imagegate-buildkitd.json
// (/run/buildkit/imagegate-buildkitd.json by default: /run is emptied at
// boot, when the daemon is gone too). The daemon is ready when its socket
// accepts connections: buildkitd opens it after its workers are set up.
//
// A daemon this package did not start (no record, or a pid file naming
// another program) is never signalled: if one listens on the address,
// Apply fails and says so. State stopped stops the recorded daemon and
// removes the record; the ensure-buildkit role's stop task does that in a
// job's post-run playbook, so the daemon ends with the job on static nodes
// (a Zuul node is discarded anyway). The build cache in the root directory
// is kept.
package buildkitd
