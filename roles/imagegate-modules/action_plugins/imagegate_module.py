# Runs an imagegate module binary built for the target host's architecture.
#
# `make build` / `make dist` put one static binary per module and
# architecture in this role's library/: <module> for linux/amd64 and
# <module>_<goarch> for linux/arm64, linux/ppc64le and linux/s390x.
# Ansible would run <module> everywhere;
# this action plugin, linked under each module's name, picks the binary
# matching the host the task runs on:
#
#   1. the variable imagegate_module_arch, if set (a GOARCH name or an
#      ansible_architecture name);
#   2. the gathered fact ansible_facts.architecture (not for delegated
#      tasks: facts belong to the inventory host, not the delegate);
#   3. `uname -m` on the host, run once per host and connection and cached.
#
# Everything else (check mode, diff, no_log, async refusal) is Ansible's
# usual module execution.
from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# uname -m (or the ansible_architecture fact, which is uname -m) and the
# GOARCH names -> (GOARCH, binary suffix). These are the architectures of
# the release tree (DIST_ARCHES in the Makefile).
_ARCHES = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "_arm64"),
    "arm64": ("arm64", "_arm64"),
    "ppc64le": ("ppc64le", "_ppc64le"),
    "s390x": ("s390x", "_s390x"),
}

_uname_cache = {}


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _supports_check_mode = True
    _supports_async = False

    def _module_name(self):
        # The plugin runs under each module's name (a symlink); the task's
        # action may be fully qualified.
        return self._task.action.rsplit(".", 1)[-1]

    def _target(self, task_vars):
        delegate = self._task.delegate_to
        if delegate:
            return "delegate:%s" % delegate
        return "host:%s" % task_vars.get("inventory_hostname", "")

    def _arch(self, task_vars):
        override = task_vars.get("imagegate_module_arch")
        if override:
            return str(override), "imagegate_module_arch"
        if not self._task.delegate_to:
            facts = task_vars.get("ansible_facts") or {}
            arch = facts.get("architecture")
            if arch:
                return str(arch), "ansible_facts.architecture"
        key = (self._target(task_vars), self._connection.transport,
               str(task_vars.get("ansible_host", "")))
        if key not in _uname_cache:
            res = self._low_level_execute_command("uname -m", sudoable=False)
            out = (res.get("stdout") or "").strip()
            if res.get("rc") != 0 or not out:
                raise AnsibleActionFail(
                    "imagegate: cannot tell the architecture of %s: `uname -m` failed (rc=%s): %s"
                    % (task_vars.get("inventory_hostname"), res.get("rc"), (res.get("stderr") or "").strip()))
            _uname_cache[key] = out.splitlines()[-1].strip()
        return _uname_cache[key], "uname -m"

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        name = self._module_name()
        arch, source = self._arch(task_vars)
        if arch not in _ARCHES:
            raise AnsibleActionFail(
                "imagegate: host %s is %s (from %s), and imagegate's modules are built for "
                "x86_64 (amd64), aarch64 (arm64), ppc64le and s390x only: module %s cannot run there; "
                "run the task on a host of one of those architectures"
                % (task_vars.get("inventory_hostname"), arch, source, name))
        goarch, suffix = _ARCHES[arch]
        binary = name + suffix
        path = self._shared_loader_obj.module_loader.find_plugin(binary)
        if not path:
            raise AnsibleActionFail(
                "imagegate: no %s binary for linux/%s (%s) in the module path: build it with "
                "`make build-all` (or use the `make dist` release tree), and make the play use the "
                "imagegate-modules role (directly or as a role dependency)" % (name, goarch, binary))
        if not os.access(path, os.X_OK) and os.path.exists(path):
            raise AnsibleActionFail("imagegate: %s is not executable" % path)
        args = dict(self._task.args)
        result.update(self._execute_module(module_name=binary, module_args=args, task_vars=task_vars))
        return result
