"""When the live_migrate action plugin prints progress lines: what a user watching ansible-playbook sees.

The plugin's printing decision (`_show`) reads only the progress snapshot the module writes; the lab test
tests/integration/test_live_migrate.py::test_progress_lines_in_playbook_output measures the gaps end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from ansible_collections.hvmaint.libvirt.plugins.action import live_migrate as action


@pytest.fixture
def printed(monkeypatch):
    lines = []
    monkeypatch.setattr(action.display, "display", lines.append)
    return lines


def snapshot(**vm):
    return {"source": "hv1", "destination": "hv2", "vms": [dict({"name": "db1", "status": "running"}, **vm)]}


def show(state, snap, elapsed):
    state["last"] = action.ActionModule._show(None, snap, elapsed, state["last"], state["announced"])


def test_first_figures_are_shown_at_once_then_every_period(printed):
    state = {"last": action.QUIET_FIRST_S - action.PRINT_EVERY_S, "announced": set()}
    show(state, snapshot(elapsed_s=0.5), 1.0)
    assert printed == [], "nothing in the first seconds: short migrations stay quiet"
    show(state, snapshot(elapsed_s=2.5), 2.5)
    assert printed == ["[hv1\u2192hv2] db1: starting (2 s)"]
    figures = dict(total_bytes=256 << 20, remaining_bytes=200 << 20, percent=22.0, rate_bps=4 << 20, iteration=1)
    show(state, snapshot(**figures), 3.5)
    assert len(printed) == 2 and "22% 200.0/256.0 MiB remaining 4 MiB/s iteration 1" in printed[1], \
        "the first line with figures does not wait for the next period"
    show(state, snapshot(**figures), 4.5)
    assert len(printed) == 2
    show(state, snapshot(**figures), 2.5 + action.PRINT_EVERY_S)
    assert len(printed) == 3
    show(state, snapshot(status="migrated", elapsed_s=7.0, downtime_ms=40), 7.0)
    assert printed[-1] == "[hv1\u2192hv2] db1: migrated in 7.0 s, downtime 40 ms"


def test_follow_loop_gives_up_on_a_silent_module():
    alive = action._Liveness(start=100.0)
    alive.check(None, 101.0)                      # not started yet: fine for a while
    alive.check({"updated": 1.0}, 150.0)
    alive.check({"updated": 2.0}, 150.0 + action.SILENT_GIVE_UP_S - 1)
    alive.check({"updated": 2.0}, 150.0 + action.SILENT_GIVE_UP_S + 1)  # the last rewrite was just in time
    with pytest.raises(action._LostTouch, match="no sign of the live_migrate module"):
        alive.check({"updated": 2.0}, 150.0 + 2 * action.SILENT_GIVE_UP_S)
    never = action._Liveness(start=0.0)
    with pytest.raises(action._LostTouch):
        never.check(None, action.SILENT_GIVE_UP_S)


def test_follow_loop_has_an_overall_deadline():
    alive = action._Liveness(start=0.0)
    with pytest.raises(action._LostTouch, match="still runs after"):
        for tick in range(0, int(action.RUN_BACKSTOP_S) + 60, 60):
            alive.check({"updated": float(tick)}, float(tick))


class _Host:
    """The plugin's raw commands run by /bin/sh on this machine, as the connection runs them on the host."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, sudoable=True):
        self.commands.append(command)
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def _plugin(host):
    plugin = object.__new__(action.ActionModule)
    plugin._low_level_execute_command = host
    return plugin


def _write_atomically(path, data):
    tmp = "%s.tmp" % path
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.replace(tmp, path)


@pytest.fixture
def run(tmp_path):
    return action._Run(os.getpid(), str(tmp_path / "progress.json"), str(tmp_path / "result.json"))


def test_a_read_waits_on_the_host_for_the_result_then_returns_both_files(run):
    plugin = _plugin(_Host())
    final, snap, waited = plugin._wait_and_read(run, 0.3)
    assert (final, snap, waited) == (None, None, pytest.approx(0.3)), "nothing written yet: the whole wait, no file"
    _write_atomically(run.progress_file, json.dumps(snapshot(elapsed_s=1.0)))
    final, snap, waited = plugin._wait_and_read(run, 0.2)
    assert final is None and snap["vms"][0]["elapsed_s"] == 1.0 and waited == pytest.approx(0.2)
    # The module's output as exit_json prints it (a blank line first), and the last progress beside it.
    _write_atomically(run.progress_file, json.dumps(snapshot(status="migrated", elapsed_s=3.0)))
    _write_atomically(run.result_file, "\n" + json.dumps({"changed": True, "msg": "hv1 -> hv2: 1 migrated"}))
    final, snap, waited = plugin._wait_and_read(run, 5.0)
    assert final == {"changed": True, "msg": "hv1 -> hv2: 1 migrated"} and waited == 0.0
    assert snap["vms"][0]["status"] == "migrated"


def test_the_run_is_followed_to_its_result_as_soon_as_it_is_written(run):
    _write_atomically(run.progress_file, json.dumps(dict(snapshot(elapsed_s=0.1), updated=action.time.time())))
    writer = threading.Timer(0.5, _write_atomically, (run.result_file, json.dumps({"changed": True, "msg": "done"})))
    writer.start()
    host = _Host()
    try:
        result = _plugin(host)._follow(run)
    finally:
        writer.join()
    assert result == {"changed": True, "msg": "done"}
    # Read while it ran, then the read that found the result: no steady period lost, no second command for it.
    assert 1 <= len(host.commands) <= 3


def test_a_run_whose_process_died_without_a_result_fails(run, monkeypatch):
    monkeypatch.setattr(action, "MISSING_STATUS_EVERY_S", 0.2)
    gone = subprocess.Popen(["true"])
    gone.wait()
    run.pid = gone.pid
    result = _plugin(_Host())._follow(run)
    assert result["failed"] is True
    assert "ended without a result" in result["msg"] and "vm_locate" in result["msg"]


def test_an_unreadable_result_fails_rather_than_passing_for_success():
    result = action._parse_result("Traceback (most recent call last): ...")
    assert result["failed"] is True and "cannot be read" in result["msg"]
