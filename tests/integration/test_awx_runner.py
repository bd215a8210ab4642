"""A drain as AWX runs it: through ansible-runner, which AWX uses for every job, and cancelled the way AWX
cancels (ansible-runner kills the job's process group with SIGKILL).

What the README promises ("From AWX", "Cancelling a job"): progress lines reach the job's events while a
migration runs; each wave's moves are published with set_stats as the wave ends, so a job whose later wave fails
still hands AWX (the stats event's artifact_data) what moved so far, and the name of its HTML report; a cancel
cannot abort the running migration (nothing survives SIGKILL to do it), so it goes on on the source host, no
later wave starts, the host stays marked and AWX gets no artifacts; the playbook abort.yml, given the cancelled
job's id, stops it and leaves every VM on exactly one host.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import time

import pytest

from conftest import (
    REPO,
    lease_of,
    mark_of,
    migration_job_of,
    read_ledger,
    restore_placement,
    run_playbook,
    where_is,
)

ansible_runner = pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.lab

DRAINED = "hv1"
MOVING = "work1"
TIERS = {"critical": [MOVING], "low": ["*"]}
AWX_JOB = {"awx_user_name": "alice", "awx_job_id": 4711}


def run_drain(lab, ansible_env, private_dir, extravars, on_event=lambda event: None, cancel=None):
    """Run the drain playbook through ansible-runner as AWX runs a job; returns (runner, events)."""
    events = []
    env = {key: ansible_env[key] for key in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_NOCOLOR")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    os.makedirs(private_dir)

    def handle(event):
        events.append(event)
        on_event(event)
        return True

    thread, runner = ansible_runner.run_async(
        private_data_dir=private_dir,
        playbook=os.path.join(REPO, "playbooks", "drain_host.yml"),
        inventory=os.path.join(lab.state_dir, "inventory.yml"),
        extravars=dict(AWX_JOB, drain_host_host=DRAINED, **extravars),
        envvars=env, quiet=True, event_handler=handle,
        # AWX's cancel: ansible-runner asks this about once a second and kills the process group on True.
        cancel_callback=cancel)
    thread.join(timeout=900)
    return runner, events


def artifacts(private_dir):
    """What AWX keeps of a job's set_stats: the artifact_data of the stats event, read from the job events that
    ansible-runner wrote (None when the job ended without one)."""
    for path in glob.glob(os.path.join(private_dir, "artifacts", "*", "job_events", "*.json")):
        with open(path, encoding="utf-8") as handle:
            event = json.load(handle)
        if event.get("event") == "playbook_on_stats":
            return event["event_data"].get("artifact_data", {})
    return None


def task_result(event, task):
    return event.get("event") in ("runner_on_ok", "runner_on_failed") and event["event_data"].get("task") == task


def test_a_failed_wave_still_publishes_what_moved_so_far(lab_at_home, ansible_env, tmp_path):
    """Wave 1 (every VM but work1) moves; wave 2 (work1) fails: a link of 1 Mbit/s from the drained host cannot
    carry a VM that dirties 8 MiB/s, and its completion timeout aborts it. The job fails, and its artifacts
    still hold every move of wave 1, the failed one, and the report's path."""
    lab = lab_at_home
    moves_seen = []
    slow_link = ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                 "latency", "400ms"]

    def on_event(event):
        # Between the waves: wave 1 has ended when its move task reports; wave 2's ends the slow link again.
        if task_result(event, "Move the wave's VMs"):
            moves_seen.append(event["event"])
            if len(moves_seen) == 1:
                lab.in_host(DRAINED, slow_link)
            else:
                lab.in_host(DRAINED, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

    others = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED and g["name"] != MOVING]
    private = str(tmp_path / "runner")
    try:
        runner, events = run_drain(lab, ansible_env, private, {
            "drain_host_tiers": {"critical": others, "low": [MOVING]},
            "drain_host_ledger": str(tmp_path / "ledger.jsonl"), "drain_host_report_dir": str(tmp_path / "reports"),
            "drain_host_migration": {"completion_timeout_min_s": 30, "completion_timeout_s_per_gib": 1}},
            on_event=on_event)
    finally:
        lab.in_host(DRAINED, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
    output = "".join(event.get("stdout", "") + "\n" for event in events)
    print(output[-3000:])
    assert runner.status == "failed", runner.status
    assert moves_seen == ["runner_on_ok", "runner_on_failed"], moves_seen

    published = artifacts(private)
    print("artifacts of the failed job: %s" % json.dumps(published, indent=1))
    moved = {m["name"]: m for m in published["hvmaint_drain_migrations"]}
    # Every move of wave 1 is there, where the VM really is now; work1's failure too, and work1 is still home.
    assert sorted(moved) == sorted(others + [MOVING])
    for name in others:
        assert moved[name]["outcome"] == "migrated" and where_is(lab, name)[1] == [moved[name]["destination"]]
    assert moved[MOVING]["outcome"] == "failed" and "completion timeout" in moved[MOVING]["error"]
    assert where_is(lab, MOVING) == ([DRAINED], [DRAINED])
    # The ledger agrees, and the report was written although the job failed, naming work1's failure.
    ledger = {e["vm"]: e["outcome"] for e in read_ledger(str(tmp_path / "ledger.jsonl"))}
    assert ledger == {name: moved[name]["outcome"] for name in moved}
    with open(published["hvmaint_drain_report"], encoding="utf-8") as handle:
        html = handle.read()
    assert re.search(r"<td>%s</td><td class=\"bad\">failed \(still on %s\)</td><td>[^<]*completion timeout"
                     % (MOVING, DRAINED), html), "the report names work1's failure and why"
    # The failed job gave its leases back; the host stays marked (work1 still runs there).
    assert all(lease_of(lab, host) is None for host in lab.hosts)
    assert mark_of(lab, DRAINED)["job"] == "4711"


def test_awx_cancel_leaves_the_migration_running_and_the_abort_playbook_stops_it(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    events = []
    started = time.time()

    def progress_seen():
        return any(MOVING + ":" in event.get("stdout", "") and "%" in event.get("stdout", "") for event in events)

    private = str(tmp_path / "runner")
    runner, _events = run_drain(
        lab, ansible_env, private,
        # Below the workload guest's dirty rate: the migration runs until it is stopped.
        {"drain_host_tiers": TIERS, "drain_host_ledger": ledger, "drain_host_migration": {"bandwidth_mib_s": 2}},
        on_event=events.append, cancel=lambda: progress_seen() or time.time() - started > 600)
    assert runner.status == "canceled", runner.status
    assert progress_seen(), "no progress line among the job events: %s" % [e.get("stdout") for e in events][-20:]
    # SIGKILL leaves no stats event: AWX keeps no artifacts of a cancelled job.
    assert artifacts(private) is None

    try:
        # Nothing could abort it: the migration goes on on the source host ...
        time.sleep(5)
        assert migration_job_of(lab, DRAINED, MOVING) == "Unbounded"
        # ... no later wave started, the host is still marked, and the ledger has no move of the cancelled wave.
        later = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED and g["name"] != MOVING]
        assert later and all(where_is(lab, name)[1] == [DRAINED] for name in later)
        assert mark_of(lab, DRAINED)["job"] == "4711"
        assert not os.path.exists(ledger) or not [line for line in open(ledger, encoding="utf-8") if MOVING in line]
        # The cancelled job still holds the hosts: that is how the abort playbook finds its migrations.
        assert lease_of(lab, DRAINED)["job"] == "4711"

        # The way to stop it: the abort playbook, given the cancelled AWX job's id.
        aborted = run_playbook(lab, ansible_env, "abort.yml", {"abort_job": 4711})
        print(aborted.stdout[-3000:])
        said = " ".join(aborted.stdout.split())  # the callback may wrap long lines
        assert "%s on %s: aborted" % (MOVING, DRAINED) in said
        assert "rerun the drain with drain_host_lease_break=4711" in said
        assert migration_job_of(lab, DRAINED, MOVING) in ("None", None)
        # Every VM on exactly one host: work1 running where it was, the others never left.
        assert where_is(lab, MOVING) == ([DRAINED], [DRAINED])
        for guest in lab.config["guests"]:
            defined, running = where_is(lab, guest["name"])
            assert running == defined and len(running) == 1, guest["name"]
        # The leases and the mark stay for the rerun (drain_host_lease_break) or the return to deal with.
        assert lease_of(lab, DRAINED)["job"] == "4711" and mark_of(lab, DRAINED)["job"] == "4711"
    finally:
        # The killed run's module on the host may still be polling libvirt; give it time to see the abort and end.
        time.sleep(5)
        restore_placement(lab)
