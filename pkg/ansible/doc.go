// Package ansible implements the Ansible binary-module protocol for imagegate's
// modules.
//
// Ansible runs a binary module with one argument, the path of a JSON file
// holding the task's parameters and the _ansible_* control keys. It does no
// type conversion for binary modules, so this package does what a Python
// AnsibleModule would: it converts "a,b" to a list and "yes" to true, applies
// defaults, enforces required parameters and choices, and rejects unknown
// parameters with the list of accepted ones.
//
// The module prints exactly one JSON object on the original stdout; stray
// writes to stdout by libraries are redirected to stderr before any module
// code runs. Values of parameters marked no_log are replaced by "********" in
// every string of the result and in everything written to stderr.
//
// Parameters are declared as a struct:
//
//	type params struct {
//		State string   `ansible:"state" default:"started" choices:"started,stopped,absent"`
//		Root  string   `ansible:"root,path"`
//		Tags  []string `ansible:"tags" default:"latest"`
//		Creds *Creds   `ansible:"docker_credentials"`
//	}
//	type Creds struct {
//		Username string `ansible:"username,required"`
//		Password string `ansible:"password,required,no_log"`
//	}
//
// The ansible tag holds the option name and flags: required, no_log, path
// (expand ~ and environment variables) and raw (decode with encoding/json, no
// unknown-key checks; for pass-through dicts such as the zuul variable).
// Nested structs are suboptions and are checked the same way.
package ansible
