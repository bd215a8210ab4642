# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live_migrate module's detached run (module_utils/_migration/detached.py), in real processes: the module
answers while its work goes on, the connection's streams are released, and the result file holds the module's
final output, or says that the run died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import detached

# A stand-in for AnsibleModule: exit_json and fail_json print the result and exit, as Ansible's do.
MODULE_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path[:0] = %(paths)r
    from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.detached import run_detached

    class Module:
        def __init__(self, params):
            self.params = params
        def exit_json(self, **result):
            print(json.dumps(result))
            sys.exit(0)
        def fail_json(self, **result):
            result["failed"] = True
            print(json.dumps(result))
            sys.exit(1)

    def work(module):
        # Wait for the test's go-ahead: the module's answer must come before the work ends.
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.02)
        if sys.argv[3] == "crash":
            raise RuntimeError("libvirt went away")
        module.exit_json(changed=True, msg="moved", worker=os.getpid())

    run_detached(Module({"result_file": sys.argv[1], "progress_file": "/p"}), json, work)
""")


def _start(tmp_path, behaviour):
    script = tmp_path / "module.py"
    script.write_text(MODULE_SCRIPT % {"paths": sys.path}, encoding="utf-8")
    result_file, go = tmp_path / "async" / "result.json", tmp_path / "go"
    # capture_output: communicate() returns only once every holder of the pipes closed them, so this also proves
    # that the detached process let go of the streams the connection reads.
    answer = subprocess.run([sys.executable, str(script), str(result_file), str(go), behaviour],
                            capture_output=True, text=True, timeout=60, check=False)
    return answer, result_file, go


def _wait_for(path, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.05)
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_module_answers_with_the_worker_pid_before_the_work_ends(tmp_path):
    answer, result_file, go = _start(tmp_path, "ok")
    assert answer.returncode == 0, answer.stderr
    started = json.loads(answer.stdout)
    assert started["started"] is True and started["result_file"] == str(result_file)
    # The work is still waiting for the go-ahead: no result yet, and its process lives.
    assert not result_file.exists()
    os.kill(started["pid"], 0)
    go.touch()
    result = _wait_for(result_file)
    assert result == {"changed": True, "msg": "moved", "worker": started["pid"]}
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in result_file.parent.iterdir()) == ["result.json"]


def test_a_worker_that_crashes_leaves_a_result_saying_so(tmp_path):
    answer, result_file, go = _start(tmp_path, "crash")
    assert answer.returncode == 0, answer.stderr
    go.touch()
    result = _wait_for(result_file)
    assert result["failed"] is True
    assert "RuntimeError: libvirt went away" in result["msg"] and "vm_locate" in result["msg"]


def test_every_module_of_the_payload_is_imported_before_the_zip_goes(tmp_path, monkeypatch):
    # Ansible's wrapper deletes the module's zip when the module's first process exits; a module of the zip that
    # the detached process imports only later (an error path) must already be loaded.
    archive = tmp_path / "payload.zip"
    with zipfile.ZipFile(archive, "w") as payload:
        payload.writestr("hvpayload/__init__.py", "")
        payload.writestr("hvpayload/errors.py", "WHAT = 'imported late'\n")
    monkeypatch.syspath_prepend(str(archive))
    import hvpayload  # pylint: disable=import-error,import-outside-toplevel

    try:
        detached.import_payload(hvpayload)
        archive.unlink()
        from hvpayload import errors  # pylint: disable=import-error,import-outside-toplevel

        assert errors.WHAT == "imported late"
    finally:
        for name in [n for n in sys.modules if n == "hvpayload" or n.startswith("hvpayload.")]:
            del sys.modules[name]


def test_a_package_not_from_a_zip_has_nothing_to_import():
    assert detached._payload_modules(json) == []


def test_a_zip_that_cannot_be_read_lists_nothing(tmp_path):
    class Loader:
        archive = str(tmp_path / "gone.zip")

    class Package:
        __loader__ = Loader()

    assert detached._payload_modules(Package) == []
