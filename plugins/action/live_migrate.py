# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.live_migrate: starts the module on the source host as a detached run, so that
ansible-playbook (and AWX job output) shows each migration's progress while it runs, and aborts the migrations
when the playbook is interrupted.

The module answers at once with the pid of a process that goes on alone on the host (module_utils/_migration/
detached.py): one pipelined module run, where Ansible's async_wrapper would take a temporary directory, two file
transfers and a second Python start. That process writes a small JSON progress file, and the module's final
output to a result file. This plugin reads them with raw commands over the connection that is already open (no
module run, so a poll costs one round trip, not a Python start-up on the host); each read first waits on the host,
for at most the poll period, for the result file, so the task ends within a tenth of a second of the run.
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

# The module enforces its own, finer timeouts; the plugin stops following (and aborts) a run that goes on longer
# than this only as a backstop against a module that hangs (a full day).
RUN_BACKSTOP_S = 86400
# Poll quickly at first (a small VM moves in about a second), then settle. Each read waits on the host, for at
# most this long, for the result file: the end of the run is seen within WAIT_STEP_S whatever the period.
POLL_SCHEDULE_S = (0.3, 0.5, 0.7)
POLL_STEADY_S = 1.0
WAIT_STEP_S = 0.1
PRINT_EVERY_S = 4.0
# Progress is printed only for runs that last longer than this.
QUIET_FIRST_S = 2.0
# Ask whether the module's process still lives when the progress file has not been rewritten for this long, or
# is still missing after MISSING_STATUS_EVERY_S (the process may have died without a result).
STATUS_EVERY_S = 30.0
MISSING_STATUS_EVERY_S = 1.5
ABORT_WAIT_S = 60.0
# The module rewrites its progress file about every second while it lives. When it has not for this long (its
# process may still be there, hung), the follower gives up: it aborts the migrations it can reach and fails,
# instead of waiting for ever on a result file that will never be written.
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
            sync_reason = ("the connection plugin %s cannot run the shell commands that follow a detached run"
                           % self._connection.transport)
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
        # Left for the module to expand on the host (its options are paths): no round trip to ask for the home.
        async_dir = self.get_shell_option("async_dir", default="~/.ansible_async")
        token = secrets.token_hex(8)
        args["progress_file"] = self._connection._shell.join_path(async_dir, "hvmaint_live_migrate_%s.json" % token)
        args["result_file"] = self._connection._shell.join_path(
            async_dir, "hvmaint_live_migrate_%s.result.json" % token)
        started = self._execute_module(module_args=args, task_vars=task_vars, wrap_async=False)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if started.get("failed") or not started.get("started") or not started.get("pid"):
            # Refused before it started (its options, libvirt missing on the host): that answer is the result.
            for key in ("started", "pid", "result_file", "progress_file"):
                started.pop(key, None)
            result.update(started)
            return result
        run = _Run(int(started["pid"]), started["progress_file"], started["result_file"])

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
            final = self._follow(run)
        except _Interrupted as exc:
            display.warning("live_migrate: %s; aborting the migrations of %s on %s" % (
                exc, ", ".join(names), self._task.delegate_to or task_vars.get("inventory_hostname")))
            self._abort(args, task_vars, run)
        except _LostTouch as exc:
            display.warning("live_migrate: %s; aborting the migrations of %s" % (exc, ", ".join(names)))
            self._abort(args, task_vars, run)
            final = {"failed": True, "msg": "%s; the migrations of %s were asked to abort: check where each VM"
                     " runs (hvmaint.libvirt.vm_locate) before rerunning" % (exc, ", ".join(names))}
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._cleanup(run)
        if interrupted:
            # Let the worker die as it would have without us (the strategy expects that).
            signal.raise_signal(interrupted[0])
            raise KeyboardInterrupt()
        final = dict(final or {})
        for key in ("stdout", "stderr", "stdout_lines", "stderr_lines", "invocation"):
            final.pop(key, None)
        result.update(final)
        # What following the run cost on the controller (see docs/live_migrate.md).
        polls = getattr(self, "_polls", None)
        if polls:
            result["progress_polling"] = dict(polls, seconds=round(polls["seconds"], 3),
                                              cpu_s=round(_cpu_seconds() - cpu_start, 3))
        return result

    def _follow(self, run):
        start = time.monotonic()
        self._polls = {"progress_reads": 0, "status_calls": 0, "seconds": 0.0}
        # So that the first lines come QUIET_FIRST_S into the run, then every PRINT_EVERY_S.
        last_print = QUIET_FIRST_S - PRINT_EVERY_S
        last_status = start
        announced = set()
        alive = _Liveness(start)
        schedule = _schedule()
        while True:
            before = time.monotonic()
            final, snapshot, waited = self._wait_and_read(run, next(schedule))
            now = time.monotonic()
            self._polls["progress_reads"] += 1
            self._polls["seconds"] += max(0.0, now - before - waited)
            if final is not None:
                if snapshot:
                    self._show(snapshot, now - start, last_print, announced)
                return final
            alive.check(snapshot, now)
            display.vvvv("live_migrate: progress read in %.3f s, written %.1f s ago" % (
                now - before - waited, time.time() - (snapshot or {}).get("updated", 0)))
            if snapshot:
                last_print = self._show(snapshot, now - start, last_print, announced)
            # A missing progress file means the module's process has not written it yet, or died; one not
            # rewritten for STATUS_EVERY_S means it may have died. Only then is the host asked about the process.
            if snapshot is None:
                due = now - last_status >= MISSING_STATUS_EVERY_S
            else:
                stale = time.time() - snapshot.get("updated", 0) >= STATUS_EVERY_S
                due = stale and now - last_status >= STATUS_EVERY_S
            if due:
                last_status = now
                self._polls["status_calls"] += 1
                if not self._still_running(run):
                    # It may have written its result just before it ended.
                    final, _snapshot, _waited = self._wait_and_read(run, 0)
                    return final if final is not None else _died(run)

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

    def _wait_and_read(self, run, wait_s):
        """(final result or None, progress snapshot, seconds waited on the host) in one raw command: wait on the
        host for at most wait_s for the result file, then print the progress file (one line of JSON) and the result
        file if there is one. The snapshot is None when the progress file is missing, {} when it cannot be parsed."""
        steps = int(round(wait_s / WAIT_STEP_S))
        result_file, progress_file = shlex.quote(run.result_file), shlex.quote(run.progress_file)
        command = ("i=0; while [ $i -lt %d ] && [ ! -e %s ]; do sleep %s || break; i=$((i+1)); done; echo $i; "
                   "if [ -e %s ]; then echo result; else echo progress; fi; cat %s 2>/dev/null; echo; cat %s 2>/dev/null"
                   % (steps, result_file, WAIT_STEP_S, result_file, progress_file, result_file))
        # A raw command on the open connection: no module, no Python start-up on the host.
        res = self._low_level_execute_command(command, sudoable=True)
        lines = (res.get("stdout") or "").split("\n", 3)
        if len(lines) < 3 or not lines[0].strip().isdigit():
            return None, None, 0.0
        waited = int(lines[0].strip()) * WAIT_STEP_S
        snapshot = None
        if lines[2].strip():
            try:
                snapshot = json.loads(lines[2])
            except ValueError:
                snapshot = {}
        if lines[1].strip() == "result":
            # The last progress snapshot goes with it: it announces the VMs that ended since the previous read.
            return _parse_result(lines[3] if len(lines) > 3 else ""), snapshot, waited
        return None, snapshot, waited

    def _still_running(self, run):
        res = self._low_level_execute_command("kill -0 %d 2>/dev/null && echo running || echo gone" % run.pid,
                                              sudoable=True)
        # When the answer cannot be had, the process is taken to live: the liveness deadline still applies.
        return "gone" not in (res.get("stdout") or "")

    def _abort(self, args, task_vars, run):
        abort_args = {key: args[key] for key in ("uri", "name", "names") if args.get(key)}
        if args.get("moves"):
            abort_args["names"] = [move.get("name") for move in args["moves"] if isinstance(move, dict)]
        abort_args["state"] = "aborted"
        try:
            aborted = self._execute_module(module_args=abort_args, task_vars=task_vars, wrap_async=False)
            display.warning("live_migrate: abort: %s" % aborted.get("msg"))
            deadline = time.monotonic() + ABORT_WAIT_S
            while time.monotonic() < deadline:
                final, _snapshot, _waited = self._wait_and_read(run, 1.0)
                if final is None and not self._still_running(run):
                    final = _died(run)
                if final is not None:
                    for entry in final.get("migrations") or []:
                        detail = ": %s" % entry["error"] if entry.get("error") else ""
                        display.warning("live_migrate: %s: %s%s" % (entry.get("name"), entry.get("outcome"), detail))
                    return
        except Exception as exc:  # noqa: BLE001 - we are already handling an interruption
            display.warning("live_migrate: could not abort the migrations: %s" % exc)

    def _cleanup(self, run):
        # One raw command removes the progress and result files and the task's temporary directory.
        paths = [run.progress_file, run.progress_file + ".tmp", run.result_file, run.result_file + ".tmp"]
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


class _Run:
    """The module's detached process on the host: its pid, and the files it writes."""

    def __init__(self, pid, progress_file, result_file):
        self.pid = pid
        self.progress_file = progress_file
        self.result_file = result_file


def _parse_result(text):
    """The module's final output as written in the result file (JSON, after whatever the host printed first)."""
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"failed": True, "msg": "the live_migrate result on the host cannot be read (%r): check where each VM"
                " runs (hvmaint.libvirt.vm_locate) before rerunning" % text[:200]}
    return data


def _died(run):
    return {"failed": True, "msg": "the live_migrate process %d on the host ended without a result: check where each"
            " VM runs (hvmaint.libvirt.vm_locate) before rerunning" % run.pid}


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
        if now - self.start >= RUN_BACKSTOP_S:
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
