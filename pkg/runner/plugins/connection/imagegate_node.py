# imagegate_node: a connection to this machine standing in for a Zuul node.
#
# Zuul reaches nodes over SSH, so modules run in the remote user's home
# directory and relative paths such as zuul.project.src_dir resolve there.
# Ansible's local connection runs modules in the playbook's directory
# instead. This connection is the local one with the node's own home
# directory: commands run in it with HOME set to it, so "~" and relative
# paths behave as on a real node, and several nodes (or jobs) on one machine
# do not share a home.
from __future__ import annotations

DOCUMENTATION = """
name: imagegate_node
short_description: Run on this machine as a Zuul node with a private home directory
description:
  - The local connection, with commands run in the node's home directory and HOME set to it.
author: imagegate
options:
  node_home:
    description: The node's home directory (created if missing, mode 0700).
    type: str
    required: true
    vars:
      - name: imagegate_node_home
"""

import os
import shlex

from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection.local import Connection as LocalConnection


class Connection(LocalConnection):
    transport = "imagegate_node"
    # Expand "~" with the node's HOME (not the user's passwd entry), and
    # keep Ansible's temporary files in the controller's local_tmp: the
    # node is this machine.
    _remote_is_local = True

    def _home(self):
        home = self.get_option("node_home")
        os.makedirs(home, mode=0o700, exist_ok=True)
        return home

    def _connect(self):
        super()._connect()
        self.cwd = to_bytes(self._home())
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        home = self._home()
        self.cwd = to_bytes(home)
        prefix = "HOME=%s " % shlex.quote(home)
        if isinstance(cmd, bytes):
            cmd = to_bytes(prefix) + cmd
        elif isinstance(cmd, str):
            cmd = prefix + cmd
        else:
            cmd = ["env", "HOME=" + home] + [to_text(c) for c in cmd]
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
