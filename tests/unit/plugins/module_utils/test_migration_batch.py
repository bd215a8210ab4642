"""The Batch scheduler: in what order, and how many at once, a list of moves to several destinations starts.

The migrations here are stand-ins that only take time (each Migrator's `_start` is replaced), because what is
under test is the scheduling: the bounds per source and per destination, the order given, and what a failure or
an abort does to the moves not yet started. Real migrations under the same Batch are proven on the lab
(tests/integration/test_live_migrate.py::test_moves_to_two_destinations_run_side_by_side).
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import batch as scheduler
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.batch import Batch
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Job, Migrator, bounded_call
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS, validate_policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import Plan
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import format_progress_line
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import FAILED, MIGRATED, base_result


class TimedMigrator(Migrator):
    """A Migrator whose migrations only sleep; it logs when each started and finished."""

    def __init__(self, destination, policy, log, durations, failing=(), switch_after=None):
        super().__init__("qemu:///system", "qemu+tls://%s/system" % destination, policy, destination=destination)
        self.source = "hv1"
        self.log = log
        self.durations = durations
        self.failing = set(failing)
        # name: seconds after which the VM runs on the destination (the rest is the source's clean-up)
        self.switch_after = switch_after or {}

    def _start(self, plan, wake):
        job = Job(plan, self.policy, 0, {}, migrator=self)
        job.result = base_result(plan.name, plan.uuid, self.source, self.destination)
        job.started = time.monotonic()

        def work():
            self.log.append(("start", plan.name, self.destination, time.monotonic()))
            duration = self.durations.get(plan.name, 0.05)
            if plan.name in self.switch_after:
                time.sleep(self.switch_after[plan.name])
                job.switched_over = True
                wake.set()
                duration -= self.switch_after[plan.name]
            time.sleep(duration)
            outcome = FAILED if plan.name in self.failing else MIGRATED
            job.result.update(outcome=outcome, elapsed_s=round(time.monotonic() - job.started, 3))
            self.log.append(("end", plan.name, self.destination, time.monotonic()))
            job.done.set()
            wake.set()

        job.thread = threading.Thread(target=work, daemon=True)
        job.thread.start()
        return job

    def _monitor(self, job):
        pass

    def _abort(self, job, reason, why):
        job.abort_reason = reason


def planned(name):
    plan = Plan(name)
    plan.uuid, plan.action = "uuid-%s" % name, "move"
    return plan


def concurrency(log, key=lambda event: True):
    """Most migrations that were running at once, among the events `key` selects."""
    running = best = 0
    for kind, _name, destination, _at in sorted(log, key=lambda event: (event[3], event[0] == "start")):
        if not key(destination):
            continue
        running += 1 if kind == "start" else -1
        best = max(best, running)
    return best


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch):
    monkeypatch.setattr(scheduler, "POLL_INTERVAL_S", 0.01)


def run_batch(moves, durations=None, failing=(), switch_after=None, waves=None, **options):
    policy = validate_policy({key: options.get(key) for key in POLICY_OPTIONS})
    log, migrators = [], {}
    for _name, destination in moves:
        if destination not in migrators:
            migrators[destination] = TimedMigrator(destination, policy, log, durations or {}, failing, switch_after)
    batch = Batch(policy, migrators=list(migrators.values()))
    results = batch.run([(migrators[destination], planned(name)) for name, destination in moves], waves=waves)
    return results, log


def test_each_destination_takes_at_most_its_bound_while_the_source_runs_at_most_its_own():
    moves = [("a", "hv2"), ("b", "hv2"), ("c", "hv2"), ("d", "hv3"), ("e", "hv3"), ("f", "hv4")]
    results, log = run_batch(moves, durations={name: 0.15 for name, _dest in moves}, max_parallel=3,
                             max_parallel_per_destination=1)
    assert [r["outcome"] for r in results] == ["migrated"] * 6
    assert concurrency(log) == 3
    for host in ("hv2", "hv3", "hv4"):
        assert concurrency(log, key=lambda destination, host=host: destination == host) == 1


def test_a_vm_running_on_its_destination_frees_its_slot_while_the_source_cleans_up():
    # a runs on hv2 after 0.05 s, then libvirt takes 0.4 s more to stop the source's QEMU: b starts meanwhile,
    # on the one source slot and the one slot of hv2.
    results, log = run_batch([("a", "hv2"), ("b", "hv2")], durations={"a": 0.45, "b": 0.05},
                             switch_after={"a": 0.05}, max_parallel=1, max_parallel_per_destination=1)
    assert [r["outcome"] for r in results] == ["migrated", "migrated"]
    at = {(kind, name): when for kind, name, _dest, when in log}
    assert at[("start", "b")] < at[("end", "a")] - 0.2


def test_a_busy_destination_lets_later_moves_to_other_hosts_start_first():
    # a and b both go to hv2 with one slot there: c (to hv3) must not wait for a to finish.
    results, log = run_batch([("a", "hv2"), ("b", "hv2"), ("c", "hv3")], durations={"a": 0.3},
                             max_parallel=2, max_parallel_per_destination=1)
    starts = [name for kind, name, _dest, _at in log if kind == "start"]
    assert starts == ["a", "c", "b"]
    assert [r["name"] for r in results] == ["a", "b", "c"], "results keep the order given"


def test_a_later_wave_fills_the_free_slots_but_never_starts_before_an_earlier_wave():
    # Wave 1 (critical): a and b to hv2, one slot there; wave 2: c and d to hv3. Without waves c would start
    # beside a (hv3 is free); with them c waits until b has started, then takes the slot a leaves, while b runs.
    moves = [("a", "hv2"), ("b", "hv2"), ("c", "hv3"), ("d", "hv3")]
    waves = {"a": 1, "b": 1, "c": 2, "d": 2}
    results, log = run_batch(moves, durations={"a": 0.2, "b": 0.4, "c": 0.2, "d": 0.05}, waves=waves,
                             max_parallel=2, max_parallel_per_destination=1)
    assert [r["outcome"] for r in results] == ["migrated"] * 4
    at = {(kind, name): when for kind, name, _dest, when in log}
    assert [name for kind, name, _dest, _at in log if kind == "start"] == ["a", "b", "c", "d"]
    assert at[("start", "c")] >= at[("start", "b")]
    assert at[("start", "c")] < at[("end", "b")] - 0.1, "the lower tier overlaps the last critical migration"
    _results, log = run_batch(moves, durations={"a": 0.2, "b": 0.4}, max_parallel=2, max_parallel_per_destination=1)
    assert [name for kind, name, _dest, _at in log if kind == "start"][:2] == ["a", "c"], "no waves: c passes b"


def test_moves_start_in_the_order_given_when_nothing_holds_them_back():
    moves = [("v%d" % i, "hv%d" % (2 + i % 2)) for i in range(6)]
    _results, log = run_batch(moves, max_parallel=1)
    assert [name for kind, name, _dest, _at in log if kind == "start"] == [name for name, _dest in moves]


def test_a_failure_stops_the_moves_not_yet_started_on_every_destination():
    results, log = run_batch([("a", "hv2"), ("b", "hv3"), ("c", "hv2"), ("d", "hv3")], failing={"a"},
                             durations={"a": 0.05, "b": 0.3}, max_parallel=2)
    outcomes = {r["name"]: r["outcome"] for r in results}
    assert outcomes == {"a": "failed", "b": "migrated", "c": "skipped", "d": "skipped"}
    assert {name for kind, name, _dest, _at in log if kind == "start"} == {"a", "b"}
    skipped = next(r for r in results if r["name"] == "d")
    assert skipped["destination"] == "hv3" and "earlier migration of the list failed" in skipped["error"]


def test_an_abort_reaches_every_destination_and_starts_nothing_more():
    policy = validate_policy({key: None for key in POLICY_OPTIONS} | {"max_parallel": 2})
    log = []
    hv2 = TimedMigrator("hv2", policy, log, {"a": 0.3})
    hv3 = TimedMigrator("hv3", policy, log, {"b": 0.3})
    batch = Batch(policy, migrators=[hv2, hv3])
    threading.Timer(0.1, batch.request_abort, args=("signal SIGTERM received",)).start()
    results = batch.run([(hv2, planned("a")), (hv3, planned("b")), (hv2, planned("c"))])
    assert hv2._abort_requested == hv3._abort_requested == "signal SIGTERM received"
    assert results[2]["outcome"] == "skipped" and "SIGTERM" in results[2]["error"]
    assert "c" not in {name for _kind, name, _dest, _at in log}


def test_progress_names_each_vms_own_destination():
    policy = validate_policy({key: None for key in POLICY_OPTIONS})
    snapshots = []
    hv2 = TimedMigrator("hv2", policy, [], {})
    hv3 = TimedMigrator("hv3", policy, [], {})
    Batch(policy, progress=snapshots.append, migrators=[hv2, hv3]).run([(hv2, planned("a")),
                                                                        (hv3, planned("b"))])
    last = snapshots[-1]
    assert last["finished"] and last["destination"] is None and last["destinations"] == ["hv2", "hv3"]
    assert {vm["name"]: vm["destination"] for vm in last["vms"]} == {"a": "hv2", "b": "hv3"}
    line = format_progress_line(last["source"], last["destination"], last["vms"][1])
    assert line.startswith("[hv1\u2192hv3] b: migrated")


def test_a_slot_is_filled_as_soon_as_its_migration_finishes(monkeypatch):
    # a ends first and c takes its slot; when b ends a moment later, d must start then, not when the long c ends
    # or the next poll comes (3 s here, so a late start shows as a gap of seconds).
    monkeypatch.setattr(scheduler, "POLL_INTERVAL_S", 3.0)
    _results, log = run_batch([("a", "hv2"), ("b", "hv3"), ("c", "hv2"), ("d", "hv3")],
                              durations={"a": 0.2, "b": 0.4, "c": 2.0, "d": 0.05}, max_parallel=2)
    at = {(kind, name): when for kind, name, _dest, when in log}
    assert at[("start", "c")] - at[("end", "a")] < 0.3
    assert at[("start", "d")] - at[("end", "b")] < 0.3


def test_a_libvirt_call_that_does_not_return_is_given_up_on_and_reported():
    release = threading.Event()
    started = time.monotonic()
    problem = bounded_call(0.2, release.wait, 5)
    assert problem == "no answer from libvirt within 0.2 s" and time.monotonic() - started < 1.0
    release.set()
    assert bounded_call(1.0, lambda: None) is None

    def refuse():
        raise RuntimeError("operation failed: job is not active")

    assert bounded_call(1.0, refuse) == "operation failed: job is not active"
