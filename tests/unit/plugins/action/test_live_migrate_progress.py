"""When the live_migrate action plugin prints progress lines: what a user watching ansible-playbook sees.

The plugin's printing decision (`_show`) reads only the progress snapshot the module writes; the lab test
tests/integration/test_live_migrate.py::test_progress_lines_in_playbook_output measures the gaps end to end.
"""

from __future__ import annotations

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
        for tick in range(0, int(action.ASYNC_BACKSTOP_S) + 60, 60):
            alive.check({"updated": float(tick)}, float(tick))


class _Follower:
    """The plugin's polling loop with the host replaced by a script of answers and a clock that only sleeps."""

    _follow = action.ActionModule._follow
    _show = action.ActionModule._show

    def __init__(self, progress, statuses, clock):
        self.progress, self.statuses, self.clock = list(progress), list(statuses), clock

    def _read_progress(self, _path):
        return self.progress.pop(0) if len(self.progress) > 1 else self.progress[0]

    def _status(self, _jid, _dir, _vars):
        return self.statuses.pop(0)


def test_the_result_is_read_at_once_when_the_run_ends(monkeypatch, printed):
    clock = {"now": 0.0}
    monkeypatch.setattr(action.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(action.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    over = {"finished": True, "updated": action.time.time(), "vms": []}
    # The progress file says the run is over one steady period in, the job file has the result shortly after.
    follower = _Follower([snapshot(elapsed_s=0.3), snapshot(elapsed_s=0.8), snapshot(elapsed_s=1.5), over],
                         [{"finished": False}, {"finished": False}, {"finished": True, "msg": "ok"}], clock)
    result = follower._follow("jid", "/dir", "/dir/progress", {})
    assert result["msg"] == "ok"
    seen_over = sum(action.POLL_SCHEDULE_S) + action.POLL_STEADY_S
    assert clock["now"] == pytest.approx(seen_over + 2 * action.POLL_FINISHING_S), \
        "once the run is over the job file is read every POLL_FINISHING_S, not every steady period"
