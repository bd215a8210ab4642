# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The live_migrate module's detached run: the module answers at once with the pid of a process that goes on
alone on the host, runs the migrations and writes the module's final output to a result file.

Why not Ansible's async_wrapper: it cannot be pipelined, so starting a module under it costs a temporary directory,
two file transfers, a chmod and a second Python start on the host (about 1.3 s of each wave here, before the
first migration). A detached run is one pipelined module run, as a synchronous module is.

The module's code comes from a zip that Ansible's wrapper deletes as soon as the module's first process exits,
so every module of that zip is imported before the fork: nothing the detached process runs later (an error path,
the final output) can then miss an import.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zipfile

RESULT_TMP_SUFFIX = ".tmp"


def _payload_modules(package):
    """The dotted names of every Python module in the zip `package` was imported from ([] when not from a zip)."""
    archive = getattr(getattr(package, "__loader__", None), "archive", None)
    if not archive:
        return []
    names = []
    try:
        with zipfile.ZipFile(archive) as payload:
            members = payload.namelist()
    except (OSError, zipfile.BadZipFile):
        # Another way of shipping modules than this Ansible's: nothing to list, the run does without.
        return []
    for member in members:
        if not member.endswith(".py") or member == "sitecustomize.py" or member.startswith("__main__"):
            continue
        name = member[:-3].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[:-len(".__init__")]
        names.append(name)
    return names


def import_payload(package):
    """Import every module of the zip `package` came from; a module that cannot be imported on this host (another
    platform's) is skipped: nothing here would use it."""
    for name in _payload_modules(package):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional module of the payload, never used by this run
            pass


def _detach_standard_streams(result_tmp):
    """stdin from /dev/null, stdout into the result file being written, stderr to /dev/null: the connection that
    started the module closes once the first process exits."""
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(result_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(null, 2)
    for fd in (null, out):
        if fd > 2:
            os.close(fd)


def _finish(result_file, unexpected=None):
    """Make the output written on stdout the result file (atomically: the plugin reads it at any moment). After an
    unexpected error the output is replaced by a failure that says what happened."""
    tmp = result_file + RESULT_TMP_SUFFIX
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        unexpected = unexpected or "the module's output could not be written"
    if unexpected is not None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"failed": True, "changed": False,
                       "msg": "live_migrate stopped on the host without its result (%s): check where each VM runs"
                              " (hvmaint.libvirt.vm_locate) before rerunning" % unexpected}, handle)
    os.replace(tmp, result_file)


def run_detached(module, package, work):
    """Start `work(module)` in a process detached from this one, and end this module run at once with its pid.

    `work` ends the module as usual (exit_json or fail_json); in the detached process their output goes to
    module.params['result_file'] instead of the connection. `package` is a package of the payload (to find the zip).
    """
    result_file = module.params["result_file"]
    directory = os.path.dirname(result_file)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    # Before the fork: the detached process inherits what is imported, and the zip is still there for certain.
    import_payload(package)
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        _detached_child(module, package, work, result_file, ready_read, ready_write)
    os.close(ready_write)
    os.waitpid(child, 0)
    with os.fdopen(ready_read, "rb") as ready:
        answer = ready.read().decode("ascii", "replace").strip()
    if not answer.isdigit():
        why = answer or "no answer from the detached process"
        module.fail_json(msg="live_migrate could not start on the host: %s" % why)
    module.exit_json(changed=False, started=True, pid=int(answer), result_file=result_file,
                     progress_file=module.params.get("progress_file"))


def _detached_child(module, package, work, result_file, ready_read, ready_write):
    # First child: a new session, then a second fork so that the worker is no session leader and outlives both.
    os.close(ready_read)
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.chdir("/")
        _detach_standard_streams(result_file + RESULT_TMP_SUFFIX)
    except BaseException as exc:  # noqa: BLE001 - reported to the first process, which fails the module
        os.write(ready_write, ("%s" % exc).encode("utf-8", "replace") or b"error")
        os._exit(1)
    os.write(ready_write, str(os.getpid()).encode("ascii"))
    os.close(ready_write)
    unexpected = None
    try:
        work(module)
    except SystemExit:
        pass
    except BaseException as exc:  # noqa: BLE001 - the result file must say the run ended, whatever happened
        unexpected = "%s: %s" % (type(exc).__name__, exc)
    try:
        _finish(result_file, unexpected)
    finally:
        # Never back into the module's wrapper: its clean-up belongs to the first process.
        os._exit(0)
