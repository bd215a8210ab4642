# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.live_migrate: runs the module asynchronously on the source host so that
ansible-playbook (and AWX job output) shows each migration's progress while it runs, and aborts the migrations
when the playbook is interrupted.

The module writes a small JSON progress file on the host; this plugin reads it with a raw `cat` over the
connection that is already open (no module run, so a poll costs one round trip, not a Python start-up on the
host) and asks ansible.builtin.async_status for the result only when the progress file says the run is over.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.run import nothing_to_move, options_only
from ansible_collections.hvmaint.libvirt.plugins.module_utils._recorded import (
    dry_run, load_facts, recorded_facts_path)
from ansible_collections.hvmaint.libvirt.plugins.modules import live_migrate

display = Display()

# async_wrapper kills the module after this many seconds; the module enforces its own, finer timeouts, so this
# is only a backstop against a module that hangs (a full day).
ASYNC_BACKSTOP_S = 86400
# Poll quickly at first (a small VM moves in about a second), then settle.
POLL_SCHEDULE_S = (0.3, 0.5, 0.7)
POLL_STEADY_S = 1.0
# Once the progress file says the run is over, the module is only returning its result: read the job file again
# this soon rather than a whole steady period later.
POLL_FINISHING_S = 0.1
# ... for at most this long; then back to the steady period (a module that takes longer to exit is not quick).
FINISHING_FOR_S = 3.0
PRINT_EVERY_S = 4.0
# Progress is printed only for runs that last longer than this.
QUIET_FIRST_S = 2.0
# Ask async_status when the progress file has not been rewritten for this long (the module may have died).
STATUS_EVERY_S = 30.0
MISSING_STATUS_EVERY_S = 1.5
ABORT_WAIT_S = 60.0
# The module rewrites its progress file about every second while it lives. When it has not for this long and
# async_status still says it runs, the follower gives up: it aborts the migrations it can reach and fails,
# instead of waiting for ever on a module that hung or a job file that will never be written.
SILENT_GIVE_UP_S = 600.0


class _LostTouch(Exception):
    """The follow loop's deadline passed without the module finishing."""


class _Interrupted(Exception):
    def __init__(self, signum):
        super().__init__("interrupted by %s" % signal.Signals(signum).name)
        self.signum = signum


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        if nothing_to_move(args):
            # Nothing to move: the options are checked here, as the module would, without starting it on the host.
            return self._options_only(result, args)
        recorded = recorded_facts_path(task_vars, self._task.delegate_to)
        if recorded and self._task.check_mode:
            # A simulated host (tests, benchmarks): the dry-run is answered from its recorded facts.
            result.update(dry_run(load_facts(self._templar.template(recorded)), args))
            return result
        sync_reason = None
        if self._task.async_val:
            sync_reason = "the task sets async: Ansible's own async handling runs it, without progress lines"
        elif self._task.check_mode or args.get("state") == "aborted":
            sync_reason = "nothing long-running to follow"
        elif self._connection.has_native_async or self._connection.always_pipeline_modules:
            sync_reason = "the connection plugin %s cannot run async_wrapper" % self._connection.transport
        if sync_reason:
            display.vvv("live_migrate: running synchronously: %s" % sync_reason)
            wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
            result.update(self._execute_module(module_args=args, task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        return self._run_with_progress(result, args, task_vars)

    @staticmethod
    def _options_only(result, args):
        validated = ArgumentSpecValidator(live_migrate.argument_spec(),
                                          mutually_exclusive=live_migrate.MUTUALLY_EXCLUSIVE,
                                          required_one_of=live_migrate.REQUIRED_ONE_OF,
                                          required_if=live_migrate.REQUIRED_IF).validate(args)
        if validated.error_messages:
            return dict(result, failed=True, changed=False, msg="; ".join(validated.error_messages))
        try:
            return dict(result, **options_only(validated.validated_parameters))
        except HvmaintError as exc:
            return dict(result, failed=True, changed=False, msg=str(exc))

    # ------------------------------------------------------------------------------------------------------------
    def _run_with_progress(self, result, args, task_vars):
        cpu_start = _cpu_seconds()
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        progress_file = self._connection._shell.join_path(
            async_dir, "hvmaint_live_migrate_%s.json" % secrets.token_hex(8))
        args["progress_file"] = progress_file
        saved_async = self._task.async_val
        self._task.async_val = ASYNC_BACKSTOP_S
        try:
            started = self._execute_module(module_args=args, task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = saved_async
        jid = started.get("ansible_job_id")
        if not jid or started.get("failed"):
            # Not started asynchronously (or could not start): that answer is the result.
            started.pop("ansible_job_id", None)
            result.update(started)
            return result

        names = [args["name"]] if args.get("name") else list(args.get("names") or [])
        previous = {}
        interrupted = []

        def on_signal(signum, _frame):
            interrupted.append(signum)
            if len(interrupted) == 1:
                raise _Interrupted(signum)
            # Further signals while we abort are noted and re-delivered afterwards.

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        final = None
        try:
            final = self._follow(jid, async_dir, progress_file, task_vars)
        except _Interrupted as exc:
            display.warning("live_migrate: %s; aborting the migrations of %s on %s" % (
                exc, ", ".join(names), self._task.delegate_to or task_vars.get("inventory_hostname")))
            self._abort(args, task_vars, jid, async_dir)
        except _LostTouch as exc:
            display.warning("live_migrate: %s; aborting the migrations of %s" % (exc, ", ".join(names)))
            self._abort(args, task_vars, jid, async_dir)
            final = {"failed": True, "msg": "%s; the migrations of %s were asked to abort: check where each VM"
                     " runs (hvmaint.libvirt.vm_locate) before rerunning" % (exc, ", ".join(names))}
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._cleanup(jid, async_dir, progress_file, task_vars)
        if interrupted:
            # Let the worker die as it would have without us (the strategy expects that).
            signal.raise_signal(interrupted[0])
            raise KeyboardInterrupt()
        final = dict(final or {})
        for key in ("ansible_job_id", "started", "finished", "results_file", "stdout", "stderr", "stdout_lines",
                    "stderr_lines", "invocation"):
            final.pop(key, None)
        result.update(final)
        # What following the run cost on the controller (see docs/live_migrate.md).
        polls = getattr(self, "_polls", None)
        if polls:
            result["progress_polling"] = dict(polls, seconds=round(polls["seconds"], 3),
                                              cpu_s=round(_cpu_seconds() - cpu_start, 3))
        return result

    def _follow(self, jid, async_dir, progress_file, task_vars):
        start = time.monotonic()
        self._polls = {"progress_reads": 0, "status_calls": 0, "seconds": 0.0}
        # So that the first lines come QUIET_FIRST_S into the run, then every PRINT_EVERY_S.
        last_print = QUIET_FIRST_S - PRINT_EVERY_S
        last_status = start
        announced = set()
        alive = _Liveness(start)
        schedule = _schedule()
        finished_at = None
        while True:
            now = time.monotonic()
            if finished_at is not None and now - finished_at < FINISHING_FOR_S:
                # The run is over and the module is returning its result: only the job file is left to read.
                time.sleep(POLL_FINISHING_S)
                status = self._status(jid, async_dir, task_vars)
                self._polls["status_calls"] += 1
                self._polls["seconds"] += time.monotonic() - now - POLL_FINISHING_S
                if status.get("finished"):
                    return status
                continue
            time.sleep(next(schedule))
            now = time.monotonic()
            snapshot = self._read_progress(progress_file)
            alive.check(snapshot, now)
            self._polls["progress_reads"] += 1
            display.vvvv("live_migrate: progress read in %.3f s, written %.1f s ago" % (
                time.monotonic() - now, time.time() - (snapshot or {}).get("updated", 0)))
            if snapshot:
                last_print = self._show(snapshot, now - start, last_print, announced)
            # A missing file means the module has not started yet, or died before writing it; a file not
            # rewritten for STATUS_EVERY_S means the module may have died. Otherwise no module runs while polling.
            if snapshot is None:
                due = now - last_status >= MISSING_STATUS_EVERY_S
            else:
                stale = time.time() - snapshot.get("updated", 0) >= STATUS_EVERY_S
                due = stale and now - last_status >= STATUS_EVERY_S
            if (snapshot and snapshot.get("finished")) or due:
                last_status = now
                status = self._status(jid, async_dir, task_vars)
                self._polls["status_calls"] += 1
                self._polls["seconds"] += time.monotonic() - now
                if status.get("finished"):
                    return status
                if snapshot and snapshot.get("finished") and finished_at is None:
                    finished_at = now
            else:
                self._polls["seconds"] += time.monotonic() - now

    def _show(self, snapshot, elapsed, last_print, announced):
        source, destination = snapshot.get("source"), snapshot.get("destination")
        lines = []
        periodic = elapsed >= QUIET_FIRST_S and elapsed - last_print >= PRINT_EVERY_S
        for vm in snapshot.get("vms") or []:
            status = vm.get("status")
            # A VM's first line with figures is shown as soon as libvirt has them, not at the next period: the
            # module's start on the host has already taken seconds of the user's patience.
            fresh = (status == "running" and vm.get("total_bytes") and elapsed >= QUIET_FIRST_S
                     and ("figures", vm["name"]) not in announced)
            if fresh:
                announced.add(("figures", vm["name"]))
            if status == "running" and (periodic or fresh):
                lines.append(_format(source, destination, vm))
            elif status not in ("running", "queued") and vm["name"] not in announced and elapsed >= QUIET_FIRST_S:
                announced.add(vm["name"])
                lines.append(_format(source, destination, vm))
            elif status not in ("running", "queued"):
                announced.add(vm["name"])
        for line in lines:
            display.display(line)
        return elapsed if periodic and lines else last_print

    def _read_progress(self, path):
        # A raw command on the open connection: no module, no Python start-up on the host.
        res = self._low_level_execute_command("cat %s 2>/dev/null" % shlex.quote(path), sudoable=True)
        if res.get("rc") != 0 or not res.get("stdout"):
            return {} if res.get("rc") == 0 else None
        try:
            return json.loads(res["stdout"])
        except ValueError:
            return {}

    def _status(self, jid, async_dir, task_vars):
        # The job file holds the module's result once it ends: read it as async_status would, with a raw command
        # on the open connection instead of a module run (about half a second less here). async_status is asked
        # only when the file cannot be read, and says why.
        status = self._read_job_file(jid, async_dir)
        if status is not None:
            return status
        return self._execute_module(module_name="ansible.builtin.async_status",
                                    module_args={"jid": jid, "mode": "status", "_async_dir": async_dir},
                                    task_vars=task_vars, wrap_async=False)

    def _abort(self, args, task_vars, jid, async_dir):
        abort_args = {key: args[key] for key in ("uri", "name", "names") if args.get(key)}
        if args.get("moves"):
            abort_args["names"] = [move.get("name") for move in args["moves"] if isinstance(move, dict)]
        abort_args["state"] = "aborted"
        try:
            aborted = self._execute_module(module_args=abort_args, task_vars=task_vars, wrap_async=False)
            display.warning("live_migrate: abort: %s" % aborted.get("msg"))
            deadline = time.monotonic() + ABORT_WAIT_S
            while time.monotonic() < deadline:
                status = self._status(jid, async_dir, task_vars)
                if status.get("finished"):
                    for entry in status.get("migrations") or []:
                        detail = ": %s" % entry["error"] if entry.get("error") else ""
                        display.warning("live_migrate: %s: %s%s" % (entry.get("name"), entry.get("outcome"), detail))
                    return
                time.sleep(1)
        except Exception as exc:  # noqa: BLE001 - we are already handling an interruption
            display.warning("live_migrate: could not abort the migrations: %s" % exc)

    def _read_job_file(self, jid, async_dir):
        """async_status's answer from the job file: None when the file is missing or unreadable (then the
        module is asked, and reports it), {"finished": False} while the job runs or the file is being written."""
        path = self._connection._shell.join_path(async_dir, jid)
        res = self._low_level_execute_command("cat %s" % shlex.quote(path), sudoable=True)
        if res.get("rc") != 0:
            return None
        try:
            data = json.loads(res.get("stdout") or "")
        except ValueError:
            return {"finished": False}
        if not isinstance(data, dict) or "started" in data:
            return {"finished": False}
        data.update(finished=True, ansible_job_id=jid)
        return data

    def _cleanup(self, jid, async_dir, progress_file, task_vars):
        # One raw command removes the progress file, the job file and the task's temporary directory, where
        # async_status (cleanup) and _remove_tmp_path would take two more round trips and a module run.
        paths = [progress_file, progress_file + ".tmp", self._connection._shell.join_path(async_dir, jid)]
        tmpdir = self._connection._shell.tmpdir
        remove_tmpdir = self._should_remove_tmp_path(tmpdir)
        command = "rm -f %s" % " ".join(shlex.quote(path) for path in paths)
        if remove_tmpdir:
            command += "; rm -rf %s" % shlex.quote(tmpdir)
        try:
            res = self._low_level_execute_command(command, sudoable=True)
            if res.get("rc") == 0 and remove_tmpdir:
                self._connection._shell.tmpdir = None
            elif res.get("rc") != 0:
                display.vvv("live_migrate: clean-up failed: %s" % res.get("stderr"))
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the result
            display.vvv("live_migrate: clean-up failed: %s" % exc)


class _Liveness:
    """The follow loop's deadline: the module must rewrite its progress file at least every SILENT_GIVE_UP_S, and
    finish before async_wrapper's own backstop."""

    def __init__(self, start):
        self.start = start
        self.last_sign = start
        self.last_updated = None

    def check(self, snapshot, now):
        updated = (snapshot or {}).get("updated")
        if updated is not None and updated != self.last_updated:
            self.last_updated, self.last_sign = updated, now
        if now - self.last_sign >= SILENT_GIVE_UP_S:
            raise _LostTouch("no sign of the live_migrate module for %.0f s (its progress file was not rewritten)"
                             % (now - self.last_sign))
        if now - self.start >= ASYNC_BACKSTOP_S:
            raise _LostTouch("the live_migrate module still runs after %.0f s" % (now - self.start))


def _cpu_seconds():
    # This worker's CPU time and that of the commands it waited for (the ssh clients of its reads).
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _schedule():
    yield from POLL_SCHEDULE_S
    while True:
        yield POLL_STEADY_S


def _format(source, destination, vm):
    # Imported lazily: the controller needs only this formatter (the progress contract), not the engine or libvirt.
    from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import format_progress_line

    return format_progress_line(source, destination, vm)
