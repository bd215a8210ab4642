"""A drain as AWX runs it: through ansible-runner, which AWX uses for every job, and cancelled the way AWX
cancels (ansible-runner kills the job's process group with SIGKILL).

What the README promises ("From AWX", "Cancelling a job"): progress lines reach the job's events while a
migration runs; a cancel cannot abort the running migration (nothing survives SIGKILL to do it), so it goes on on
the source host, no later wave starts and the host stays marked; live_migrate with state=aborted stops it and
leaves the VM where it was.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from conftest import REPO, restore_placement, run_ansible, where_is

ansible_runner = pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.lab

DRAINED = "hv1"
MOVING = "work1"
TIERS = {"critical": [MOVING], "low": ["*"]}


def mark_of(lab, host):
    path = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", "maintenance.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def migration_job_of(lab, host, name):
    """libvirt's job type for the VM on the host ('Unbounded' while a migration runs, 'None' when none does)."""
    info = lab.virsh(host, ["domjobinfo", name], check=False).stdout
    for line in info.splitlines():
        if line.startswith("Job type:"):
            return line.split(":", 1)[1].strip()
    return None


def test_awx_cancel_leaves_the_migration_running_and_abort_stops_it(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    events = []

    def progress_seen():
        return any(MOVING + ":" in event.get("stdout", "") and "%" in event.get("stdout", "") for event in events)

    env = {key: ansible_env[key] for key in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_NOCOLOR")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    (tmp_path / "runner").mkdir()
    started = time.time()
    thread, runner = ansible_runner.run_async(
        private_data_dir=str(tmp_path / "runner"),
        playbook=os.path.join(REPO, "playbooks", "drain_host.yml"),
        inventory=os.path.join(lab.state_dir, "inventory.yml"),
        extravars={"drain_host_host": DRAINED, "drain_host_tiers": TIERS, "drain_host_ledger": ledger,
                   "awx_user_name": "alice", "awx_job_id": 4711,
                   # Below the workload guest's dirty rate: the migration runs until it is stopped.
                   "drain_host_migration": {"bandwidth_mib_s": 2}},
        envvars=env, quiet=True,
        event_handler=lambda event: events.append(event) or True,
        # AWX's cancel: ansible-runner asks this about once a second and kills the process group on True.
        cancel_callback=lambda: progress_seen() or time.time() - started > 600)
    thread.join(timeout=660)
    assert runner.status == "canceled", runner.status
    assert progress_seen(), "no progress line among the job events: %s" % [e.get("stdout") for e in events][-20:]

    try:
        # Nothing could abort it: the migration goes on on the source host ...
        time.sleep(5)
        assert migration_job_of(lab, DRAINED, MOVING) == "Unbounded"
        # ... no later wave started, the host is still marked, and the ledger has no move of the cancelled wave.
        later = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED and g["name"] != MOVING]
        assert later and all(where_is(lab, name)[1] == [DRAINED] for name in later)
        assert mark_of(lab, DRAINED)["job"] == "4711"
        assert not os.path.exists(ledger) or not [line for line in open(ledger, encoding="utf-8") if MOVING in line]

        # The way to stop it: live_migrate state=aborted on the source host.
        inventory = os.path.join(lab.state_dir, "inventory.yml")
        aborted = run_ansible(["ansible", "-i", inventory, DRAINED, "-m", "hvmaint.libvirt.live_migrate",
                               "-a", json.dumps({"state": "aborted", "names": [MOVING]})], ansible_env)
        print(aborted.stdout[-2000:])
        deadline = time.time() + 60
        while migration_job_of(lab, DRAINED, MOVING) not in ("None", None) and time.time() < deadline:
            time.sleep(1)
        assert migration_job_of(lab, DRAINED, MOVING) in ("None", None)
        assert where_is(lab, MOVING) == ([DRAINED], [DRAINED])
    finally:
        # The killed run's async job may still be polling libvirt; give it time to see the abort and end.
        time.sleep(5)
        restore_placement(lab)
