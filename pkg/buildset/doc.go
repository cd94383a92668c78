// Package buildset runs a buildset registry on a node: the short-lived, TLS,
// password-protected registry that holds a buildset's speculative images
// (upstream: the run-buildset-registry role of zuul-jobs, which runs
// zuul-registry in a container).
//
// Here no container runtime is involved. Apply copies the running executable
// (the buildset_registry module binary, which Ansible deletes after the task)
// into the registry's root directory and starts it detached, in a new session,
// in serve mode: the same binary serves the registry when it is started with
// ServeArg as its first argument (see ServeIfRequested). Apply returns once
// the registry answers over TLS, with the connection data clients need.
//
// # On-disk layout
//
// Everything lives below the root directory (buildset_registry_root, default
// ~/buildset_registry), which is mode 0700 because it holds the password and
// the CA key:
//
//	<root>/registry.json      configuration and credentials (0600); its
//	                          presence marks the directory as a buildset
//	                          registry root, which absent may remove
//	<root>/ca.crt, ca.key     the CA clients trust (key 0600); the server
//	                          certificate is issued from it in memory at
//	                          every start, so it covers the node's current
//	                          addresses
//	<root>/registry.pid       the daemon's pid; the daemon holds a POSIX
//	                          write lock on it while it runs, so a stale file
//	                          left by a crash is recognised without trusting
//	                          the pid
//	<root>/registry.log       the daemon's log (0600)
//	<root>/bin/               the copied executable
//	<root>/storage/           the registry's content (pkg/registry/storage/filesystem)
//
// Apply holds a flock on the root directory while it works, so concurrent
// tasks on one root do not race; no lock file is needed.
//
// The token signing key is random at every start and never written.
package buildset
