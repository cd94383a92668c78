# zuul_return for the imagegate runner: what Zuul's executor provides to
# jobs. It runs on the controller and merges the task's data and
# secret_data into zuul.executor.result_data_file, which the runner reads
# after each playbook (pause, data for dependent jobs, artifacts).
#
# Merge rules (as Zuul's): mappings merge recursively; the lists
# zuul.artifacts and zuul.warnings, and the per-file lists of
# zuul.file_comments, are concatenated; any other value replaces the old
# one. Both top-level keys, data and secret_data, are always written. The
# file is replaced atomically (temporary file, fsync, rename) under a lock,
# so parallel hosts of one play cannot lose each other's returns.
from __future__ import annotations

import fcntl
import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_APPENDED = {("zuul", "artifacts"), ("zuul", "warnings")}


def _merge(dst, src, path=()):
    for key, value in src.items():
        here = path + (key,)
        old = dst.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value, here)
        elif isinstance(value, list) and isinstance(old, list) and (
                here in _APPENDED or here[:2] == ("zuul", "file_comments")):
            dst[key] = old + value
        else:
            dst[key] = value


def _plain(value, where):
    """Round-trips through JSON so Ansible's types become plain ones."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise AnsibleActionFail("zuul_return: %s cannot be stored as JSON: %s" % (where, e))


def _check(data):
    zuul = data.get("zuul")
    if zuul is None:
        return
    if not isinstance(zuul, dict):
        raise AnsibleActionFail("zuul_return: data.zuul must be a mapping")
    if "pause" in zuul and not isinstance(zuul["pause"], bool):
        raise AnsibleActionFail("zuul_return: data.zuul.pause must be true or false")
    artifacts = zuul.get("artifacts")
    if artifacts is not None:
        if not isinstance(artifacts, list):
            raise AnsibleActionFail("zuul_return: data.zuul.artifacts must be a list")
        for i, a in enumerate(artifacts):
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("url"), str):
                raise AnsibleActionFail(
                    "zuul_return: data.zuul.artifacts[%d] needs a name and a url (strings)" % i)
            if "metadata" in a and not isinstance(a["metadata"], dict):
                raise AnsibleActionFail("zuul_return: data.zuul.artifacts[%d].metadata must be a mapping" % i)
    child_jobs = zuul.get("child_jobs")
    if child_jobs is not None and not isinstance(child_jobs, list):
        raise AnsibleActionFail("zuul_return: data.zuul.child_jobs must be a list of job names")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("data", "secret_data", "file", "path"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = self._task.args
        path = args.get("path")
        if not path:
            zuul = task_vars.get("zuul") or {}
            path = (zuul.get("executor") or {}).get("result_data_file") or os.environ.get("ZUUL_RESULT_DATA_FILE")
        if not path:
            raise AnsibleActionFail("zuul_return: no result data file: zuul.executor.result_data_file is not set")

        data = args.get("data")
        if args.get("file"):
            if data is not None:
                raise AnsibleActionFail("zuul_return: give data or file, not both")
            try:
                with open(args["file"]) as f:
                    data = json.load(f)
            except (OSError, ValueError) as e:
                raise AnsibleActionFail("zuul_return: reading file %s: %s" % (args["file"], e))
        secret = args.get("secret_data")
        for name, value in (("data", data), ("secret_data", secret)):
            if value is not None and not isinstance(value, dict):
                raise AnsibleActionFail("zuul_return: %s must be a mapping" % name)
        data = _plain(data or {}, "data")
        secret = _plain(secret or {}, "secret_data")
        _check(data)
        if "zuul" in secret:
            raise AnsibleActionFail("zuul_return: secret_data cannot hold zuul: return it under data")

        if self._play_context.check_mode:
            result.update(skipped=True, msg="zuul_return does nothing in check mode")
            return result

        directory = os.path.dirname(os.path.abspath(path))
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = {}
            try:
                with open(path) as f:
                    text = f.read()
                if text.strip():
                    current = json.loads(text)
            except FileNotFoundError:
                pass
            except ValueError as e:
                raise AnsibleActionFail("zuul_return: %s is not valid JSON: %s" % (path, e))
            if not isinstance(current, dict):
                current = {}
            current.setdefault("data", {})
            current.setdefault("secret_data", {})
            _merge(current["data"], data)
            _merge(current["secret_data"], secret)
            fd, tmp_path = tempfile.mkstemp(prefix=".results-", dir=directory)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(current, f, indent=2, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp_path, 0o600)
                os.replace(tmp_path, path)
            except BaseException:
                try:
                    os.unlink(tmp_path)
                except OSError:
                    pass
                raise
        result["changed"] = False
        if data:
            result["data"] = data
        if secret:
            result["secret_data_keys"] = sorted(secret)
        return result
