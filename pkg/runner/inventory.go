package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/imagegate/imagegate/pkg/atomicfile"
	"go.yaml.in/yaml/v3"
)

// What a playbook runs with: the inventory (nodes, variables, secret_data
// at the lowest precedence), ansible.cfg, and the zuul variable.

func (b *build) writeInventory() error {
	q := b.it.q
	hosts := map[string]any{}
	for _, n := range b.nodes() {
		hv := map[string]any{
			"ansible_host":               b.r.nodeAddress(q),
			"ansible_python_interpreter": firstNonEmpty(q.Node.Python, "/usr/bin/python3"),
			"nodepool": map[string]any{
				"label": n.Label, "interface_ip": b.r.nodeAddress(q), "private_ipv4": b.r.nodeAddress(q),
				"public_ipv4": nil, "provider": "imagegate-runner", "cloud": "local", "region": nil,
				"az": nil, "host_id": nil, "external_id": nil,
			},
		}
		switch q.Node.Connection {
		case "ssh":
			hv["ansible_connection"] = "ssh"
			if q.Node.User != "" {
				hv["ansible_user"] = q.Node.User
			}
			if q.Node.Port != 0 {
				hv["ansible_port"] = q.Node.Port
			}
			if q.Node.PrivateKey != "" {
				hv["ansible_ssh_private_key_file"] = q.Node.PrivateKey
			}
		default:
			hv["ansible_connection"] = "imagegate_node"
			hv["imagegate_node_home"] = filepath.Join(b.dir, "nodes", n.Name)
		}
		for k, v := range b.job.HostVars[n.Name] {
			hv[k] = v
		}
		hosts[n.Name] = hv
	}
	vars := deepMerge(b.parentData, b.it.projectVars)
	vars = deepMerge(vars, b.job.Vars)
	children := map[string]any{"zuul_unreachable": map[string]any{"hosts": map[string]any{}}}
	for _, g := range b.job.Nodeset.Groups {
		gh := map[string]any{}
		for _, n := range g.Nodes {
			gh[n] = map[string]any{}
		}
		children[g.Name] = map[string]any{"hosts": gh, "vars": b.job.GroupVars[g.Name]}
	}
	inv := map[string]any{"all": map[string]any{"hosts": hosts, "vars": vars, "children": children}}
	if err := writeYAML(b.inventoryFile, inv, 0o600); err != nil {
		return err
	}
	// secret_data of parent jobs: an inventory source read before the
	// main one, so every other variable of the same name wins, and kept
	// out of the inventory file that stays with the build.
	return writeYAML(b.secretInv, map[string]any{"all": map[string]any{"vars": b.parentSecret}}, 0o600)
}

// writeConfig writes ansible.cfg. SSH checks host keys strictly against
// node.known-hosts when the queue gives it; otherwise it accepts any host
// key and records none (UserKnownHostsFile=/dev/null), so the runner never
// writes the user's ~/.ssh/known_hosts.
func (b *build) writeConfig() error {
	checking, hostKeys := "False", "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
	if kh := b.it.q.Node.KnownHosts; kh != "" {
		checking, hostKeys = "True", "-o UserKnownHostsFile="+kh+" -o StrictHostKeyChecking=yes"
	}
	cfg := fmt.Sprintf(`[defaults]
action_plugins = %[1]s/action
connection_plugins = %[1]s/connection
host_key_checking = %[3]s
retry_files_enabled = False
interpreter_python = auto_silent
nocows = True
forks = 10
localhost_warning = False
inventory_unparsed_warning = False
deprecation_warnings = False
local_tmp = %[2]s/tmp
stdout_callback = default
gathering = implicit

[ssh_connection]
pipelining = True
control_path_dir = %[5]s
ssh_args = -o ControlMaster=auto -o ControlPersist=60s %[4]s
`, b.r.pluginDir, b.ansibleDir, checking, hostKeys, b.controlDir)
	return os.WriteFile(filepath.Join(b.ansibleDir, "ansible.cfg"), []byte(cfg), 0o600)
}

// zuulVars is the zuul variable of this build, plus the job's extra-vars.
func (b *build) zuulVars() map[string]any {
	it := b.it
	c := it.change
	z := map[string]any{
		"build":           b.uuid,
		"buildset":        it.buildset,
		"pipeline":        c.Pipeline,
		"post_review":     it.q.postReview(c.Pipeline),
		"job":             b.job.Name,
		"voting":          b.job.Voting,
		"attempts":        b.jr.attempt,
		"max_attempts":    b.jr.maxAttempts,
		"tenant":          it.q.Tenant,
		"event_id":        it.eventID,
		"ansible_version": "2.14",
		"jobtags":         []any{},
		"timeout":         int(b.job.Timeout / time.Second),
		"post_timeout":    int(b.job.PostTimeout / time.Second),
		"child_jobs":      b.jr.childJobNames(),
		"executor": map[string]any{
			"hostname":         b.r.hostname,
			"src_root":         b.srcRoot,
			"log_root":         b.logs,
			"work_root":        b.work,
			"result_data_file": b.resultFile,
			"inventory_file":   b.inventoryFile,
		},
	}
	for k, v := range it.refVars(it) {
		z[k] = v
	}
	projects := map[string]any{}
	for _, p := range it.projectList() {
		pv := p.vars()
		pv["required"] = p.Required
		pv["checkout"] = c.Branch
		pv["commit"] = p.Commit
		projects[p.Canonical] = pv
	}
	z["projects"] = projects
	var items []any
	for _, a := range it.ahead {
		items = append(items, a.refVars(a))
	}
	items = append(items, it.refVars(it))
	z["items"] = items
	z["buildset_refs"] = []any{it.refVars(it)}
	z["build_refs"] = []any{it.refVars(it)}
	if len(b.artifacts) > 0 {
		arts := make([]any, len(b.artifacts))
		for i, a := range b.artifacts {
			arts[i] = a
		}
		z["artifacts"] = arts
	}
	return z
}

// writeYAML writes v as YAML with the given mode, atomically.
func writeYAML(path string, v any, mode os.FileMode) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, mode)
}

// writeVarsYAML writes the extra variables; the change message is tagged
// !unsafe (as Zuul does) so Ansible never templates what a change author
// wrote.
func writeVarsYAML(path string, vars map[string]any, message string) error {
	var doc yaml.Node
	if err := doc.Encode(vars); err != nil {
		return err
	}
	if z := mappingValue(&doc, "zuul"); z != nil && message != "" {
		for _, key := range []string{"change_message"} {
			z.Content = append(z.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: key},
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!unsafe", Value: message, Style: yaml.DoubleQuotedStyle})
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
