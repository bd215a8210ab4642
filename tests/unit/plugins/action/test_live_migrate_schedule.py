"""The live_migrate action plugin's polling and its progress lines (controller code, so tested apart from the
module: ansible-test runs module unit tests where only module code is importable)."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.action import live_migrate as action
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import MIB


def test_action_plugin_poll_schedule_is_quick_then_steady():
    schedule = action._schedule()
    first = [next(schedule) for _step in range(6)]
    assert first[:3] == list(action.POLL_SCHEDULE_S)
    assert first[3:] == [action.POLL_STEADY_S] * 3
    # Progress lines at least every 10 s even with a status call (about 2 s) in between.
    assert action.PRINT_EVERY_S + action.POLL_STEADY_S + 2 < 10


def test_action_plugin_formats_lines_with_the_engine():
    vm = {"name": "work1", "status": "running", "percent": 63.0, "remaining_bytes": int(40.1 * MIB),
          "total_bytes": 96 * MIB, "rate_bps": 35 * MIB, "iteration": 3}
    assert action._format("hv1", "hv2", vm) == (
        "[hv1\u2192hv2] work1: 63% 40.1/96.0 MiB remaining 35 MiB/s iteration 3")


def test_nothing_to_move_is_checked_on_the_controller():
    # A drain or return with nothing to move still refuses bad options, on the controller, with the engine's limits.
    assert action.ActionModule._options_only({}, {"moves": [], "max_parallel": 2})["failed"] is False
    refused = action.ActionModule._options_only({}, {"moves": [], "max_parallel": 100})
    assert refused["failed"] and "max_parallel must be between 1 and 64" in refused["msg"]
    refused = action.ActionModule._options_only({}, {"moves": [], "max_parallel": "lots"})
    assert refused["failed"] and "max_parallel" in refused["msg"]
