package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testenv"
)

// TestRunSSHNode runs jobs on a node reached with node.connection: ssh,
// through a private sshd on loopback (testenv.StartSSHD: temporary keys,
// its sessions' home a temporary directory, never root's). A job on the
// node reads the change's source through the relative src_dir (the runner
// copied it to the remote ~/src) and returns what it saw to a dependent
// job on the executor. With node.known-hosts the host key is checked
// strictly: a known_hosts with another key, or without the node, fails the
// build as unreachable. Without it, any key is accepted (the documented
// default). Each build ends its ssh control masters, so no connection to
// the node outlives the run.
func TestRunSSHNode(t *testing.T) {
	t.Parallel()
	sshd := testenv.StartSSHD(t)
	keys := t.TempDir()
	_, otherPub := testenv.SSHKeyPair(t, keys, "other_ed25519")
	otherKnownHosts := filepath.Join(keys, "other_known_hosts")
	emptyKnownHosts := filepath.Join(keys, "empty_known_hosts")
	for p, c := range map[string]string{otherKnownHosts: sshd.KnownHostsLine(otherPub), emptyKnownHosts: ""} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job:
    name: on-node
    parent: null
    run: playbooks/on-node.yaml
    nodeset:
      nodes: [{name: node1, label: test}]
    host-vars:
      # Ansible expands the default, ~/.ansible/tmp, from the password
      # entry (root's real home), not from the session's HOME.
      node1: {ansible_remote_tmp: "` + sshd.Home + `/.ansible/tmp"}
- job:
    name: after-node
    parent: null
    run: playbooks/after-node.yaml
`,
		"cfg/playbooks/on-node.yaml": `- hosts: all
  tasks:
    - name: Read the source through the relative src_dir, in the node's home
      ansible.builtin.command: cat {{ zuul.project.src_dir }}/hello.txt
      register: hello
    - name: Ask the node who and where it is
      ansible.builtin.shell: 'id -un; echo "$HOME"; pwd'
      register: whoami
    - zuul_return:
        data:
          node_said: "{{ hello.stdout }}"
          node_env: "{{ whoami.stdout_lines }}"
          node_connection: "{{ ansible_connection }}"
`,
		"cfg/playbooks/after-node.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ {'node_said': node_said, 'node_env': node_env, 'node_connection': node_connection} | to_json }}"
        dest: "{{ zuul.executor.work_root }}/seen.json"
`,
	}
	for _, tc := range []struct {
		name       string
		knownHosts string // empty: the default (no node.known-hosts)
		wantError  string // empty: the jobs succeed
	}{
		{name: "strict, known host", knownHosts: sshd.KnownHosts},
		{name: "default, any host key"},
		{name: "strict, changed host key", knownHosts: otherKnownHosts, wantError: "REMOTE HOST IDENTIFICATION HAS CHANGED"},
		{name: "strict, unknown host", knownHosts: emptyKnownHosts, wantError: "Host key verification failed"},
	} {
		// One at a time: the builds share the sessions' home (~/src).
		t.Run(tc.name, func(t *testing.T) {
			hello := fmt.Sprintf("hello over ssh (%s)", tc.name)
			files["proj/hello.txt"] = hello + "\n"
			node := fmt.Sprintf("{connection: ssh, address: %s, port: %d, user: %s, private-key: %s", sshd.Addr, sshd.Port, sshd.User, sshd.ClientKey)
			if tc.knownHosts != "" {
				node += ", known-hosts: " + tc.knownHosts
			}
			queue := `
config: [{path: cfg, project: site/config}]
node: ` + node + `}
changes:
  - project: myorg/proj
    change: 7
    src: proj
    jobs:
      - on-node
      - after-node: {dependencies: [on-node]}
`
			start := time.Now()
			rep, _ := runQueue(t, queue, files)
			t.Logf("ran in %s", time.Since(start).Round(10*time.Millisecond))
			it := rep.Items[0]
			onNode, after := it.Build("on-node"), it.Build("after-node")
			if tc.wantError != "" {
				if onNode.Result != RetryLimit || !strings.Contains(onNode.Message, "reached over ssh") || !strings.Contains(onNode.Message, tc.wantError) {
					t.Errorf("on-node: %s %q, want RETRY_LIMIT, not reached over ssh: %s", onNode.Result, onNode.Message, tc.wantError)
				}
				if after.Result != Skipped {
					t.Errorf("after-node: %s, want SKIPPED", after.Result)
				}
			} else {
				if it.Result != Success {
					t.Fatalf("item %s: %s\n%s", it.Result, it.Message, rep.Summary())
				}
				seen := readJSON(t, after, "seen")
				want := map[string]any{
					"node_said":       hello,
					"node_env":        []any{sshd.User, sshd.Home, sshd.Home},
					"node_connection": "ssh",
				}
				if !reflect.DeepEqual(seen, want) {
					t.Errorf("after-node saw %v\nwant %v", seen, want)
				}
				// The source came over ssh to the node's ~/src.
				b, err := os.ReadFile(filepath.Join(sshd.Home, "src/review.example.org/myorg/proj/hello.txt"))
				if err != nil || string(b) != hello+"\n" {
					t.Errorf("the node's copy of the source: %q, %v", b, err)
				}
			}
			// Every build closed its connections: no session is left.
			testenv.WaitFor(t, "the ssh sessions to end", 10*time.Second, nil, func() error {
				if s := sshd.Sessions(); len(s) > 0 {
					return fmt.Errorf("sessions %v are open", s)
				}
				return nil
			})
		})
	}
	log, err := os.ReadFile(sshd.Log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "Accepted publickey for "+sshd.User); n < 2 {
		t.Errorf("sshd accepted %d logins, want at least one per successful run:\n%s", n, log)
	}
}
