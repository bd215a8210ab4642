"""The fault matrix on the lab: a fault strikes mid-migration, then the fleet's invariants are checked.

Each case strikes once here (CI); scripts/soak-faults runs every case three times and prints a table (its results
are in README.md). The invariants (conftest.assert_fleet_invariants): every VM runs on exactly one host and is
defined on exactly one, none is left paused unless the output says it needs attention, the ledger matches where
each VM is, and no host under maintenance runs a VM.

The engine cases call live_migrate's engine from the controller, as tests/integration/test_live_migrate.py does,
on the lab's Linux guest slowed to 2 MiB/s so that the migration is still running when the fault strikes. Two
drains at once and a drain and a return of the same host at once are in test_coordination.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from conftest import assert_fleet_invariants, lease_of, start_playbook
from test_live_migrate import home_of, linux_guest, migrate, other_host, run_in_thread, wait_for_job
from test_live_migrate import restore as restore_placement_after  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.lab

TIERS = {"critical": ["work*"], "high": ["disk*"], "low": ["idle*"]}


def strike_mid_migration(lab, fault, **options):
    """Start the Linux guest's migration, let it run a second, call fault(source, destination, name); returns
    (result, source, destination, name, the text a user would read)."""
    guest = linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    options.setdefault("bandwidth_mib_s", 2)
    thread, box = run_in_thread(migrate, lab, [name], source, destination, **options)
    wait_for_job(lab, source, name)
    time.sleep(1.0)
    fault(source, destination, name)
    thread.join(180)
    if thread.is_alive():
        # Leave no migration going for the next case to trip over, then fail this one.
        lab.virsh(source, ["domjobabort", name], check=False)
        thread.join(60)
        raise AssertionError("the engine did not return within 180 s after the fault (its migration was then"
                             " aborted with virsh domjobabort: engine %s)" % (
                                 "returned" if not thread.is_alive() else "still did not return"))
    assert "error" not in box, box.get("error")
    result = box["result"][0]
    text = json.dumps(result)
    print("\n%s: %s: %s %s" % (fault.__name__, result["outcome"], result.get("error"),
                               result.get("needs_attention") or ""))
    for host in lab.hosts:
        lab.wait_for_libvirt(host)  # a killed daemon is restarted, as an operator would
    time.sleep(2)
    return result, source, destination, name, text


def kill_destination_libvirtd(lab):
    def destination_libvirtd_killed(_source, destination, _name):
        os.kill(lab.daemon_pid(destination, "libvirtd"), signal.SIGKILL)
    return destination_libvirtd_killed


def kill_destination_qemu(lab):
    def destination_qemu_killed(_source, destination, name):
        with open(os.path.join(lab.host_dir(destination), "run-libvirt", "qemu", "%s.pid" % name),
                  encoding="utf-8") as handle:
            os.kill(int(handle.read().strip()), signal.SIGKILL)
    return destination_qemu_killed


def cut_destination_link(lab, seconds=15):
    def link_cut(_source, destination, _name):
        lab.in_host(destination, ["ip", "link", "set", "eth0", "down"])
        threading.Timer(seconds, lab.in_host, [destination, ["ip", "link", "set", "eth0", "up"]]).start()
    return link_cut


def restart_source_libvirtd(lab):
    def source_libvirtd_restarted(source, _destination, _name):
        os.kill(lab.daemon_pid(source, "libvirtd"), signal.SIGTERM)
        deadline = time.time() + 20
        while lab.daemon_pid(source, "libvirtd") is not None and time.time() < deadline:
            time.sleep(0.2)
        lab.wait_for_libvirt(source)
    return source_libvirtd_restarted


def no_fault(_source, _destination, _name):
    """The completion timeout is the fault: the policy gives the migration too little time."""


FAULTS = {
    "destination_libvirtd_killed": (kill_destination_libvirtd, {}),
    "destination_qemu_killed": (kill_destination_qemu, {}),
    "link_cut": (cut_destination_link, {"progress_timeout_s": 8}),
    "source_libvirtd_restarted": (restart_source_libvirtd, {}),
    "completion_timeout": (lambda lab: no_fault, {"completion_timeout_s_per_gib": 1, "completion_timeout_min_s": 8}),
}


@pytest.fixture
def fleet_sound_before(lab):
    """Each case starts from a sound fleet, so that a failure is the case's own: if an earlier test left a VM on
    two hosts (or none), say so, repair the lab as `tests/lab/lab up` does, and fail this case's set-up."""
    try:
        assert_fleet_invariants(lab)
    except AssertionError as broken:
        for guest in lab.config["guests"]:
            lab.repair_doubled_guest(guest)
        pytest.fail("before this case, left by an earlier test (repaired now): %s" % broken, pytrace=False)


@pytest.mark.usefixtures("fleet_sound_before", "restore_placement_after")
@pytest.mark.parametrize("case", sorted(FAULTS))
def test_fault_mid_migration_keeps_every_vm_on_exactly_one_host(lab, case):
    make_fault, options = FAULTS[case]
    result, source, _destination, name, text = strike_mid_migration(lab, make_fault(lab), **dict(options))
    assert result["outcome"] in ("failed", "migrated"), result
    placement = assert_fleet_invariants(lab, text)
    if result["outcome"] == "failed" and not result.get("needs_attention"):
        assert placement[name] == source, "%s failed but is no longer on %s" % (name, source)


def cut_link_after_postcopy_switch(lab, seconds=40):
    """Wait until the migration has switched to post-copy (the source paused, reason post-copy), then cut the
    destination's link for longer than libvirt's keepalive (5 s x 5), so that both hosts give the stream up."""
    def postcopy_then_link_cut(source, destination, name):
        # Slow post-copy down (this is the test's doing, not the engine's), so that it still runs when the link goes.
        lab.virsh(source, ["migrate-setspeed", name, "--bandwidth", "1", "--postcopy"])
        deadline = time.time() + 60
        while time.time() < deadline:
            state = lab.virsh(source, ["domstate", "--reason", name], check=False).stdout.strip()
            if "post-copy" in state:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the migration of %s never switched to post-copy (state %s)" % (name, state))
        lab.in_host(destination, ["ip", "link", "set", "eth0", "down"])
        print("\n%s: post-copy (%s), link of %s cut for %d s" % (name, state, destination, seconds))
        threading.Timer(seconds, lab.in_host, [destination, ["ip", "link", "set", "eth0", "up"]]).start()
    return postcopy_then_link_cut


# About 2.5 minutes, most of it the post-copy at the 1 MiB/s the test sets: CI runs it once, as every other case.
@pytest.mark.usefixtures("fleet_sound_before", "restore_placement_after")
def test_post_copy_switched_over_then_link_cut(lab):
    # Post-copy starts once the completion timeout (8 s) passes: from then on the destination runs the VM and
    # fetches its memory from the source, so the source's copy is stale and must never be resumed.
    result, source, destination, name, text = strike_mid_migration(
        lab, cut_link_after_postcopy_switch(lab), escalation={"post_copy": True},
        completion_timeout_action="postcopy", completion_timeout_s_per_gib=1, completion_timeout_min_s=8)
    print("steps: %s" % [step["detail"] for step in result["policy_steps"]])
    for host in (source, destination):
        print("%s: %s" % (host, lab.virsh(host, ["domstate", "--reason", name], check=False).stdout.strip()))
    assert result["postcopy"], "the migration never switched to post-copy: %s" % result
    if result["outcome"] == "migrated":
        # Once the link was back, either libvirt's post-copy resume recovered it, or libvirt had finished the
        # post-copy by itself (the engine's call failed with the link, the source's libvirtd went on): either way
        # the engine says which, and the VM runs on the destination only, defined there only.
        assert any(step["detail"] == "post-copy resumed" or step["detail"].startswith(
            "post-copy finished without a resume") for step in result["policy_steps"]), result
        assert not result.get("needs_attention"), result
        placement = assert_fleet_invariants(lab, text)
        assert placement[name] == destination
    else:
        assert result.get("needs_attention"), "a failed post-copy must say it needs attention: %s" % result
        assert "switched to post-copy" in result["needs_attention"]
        state = lab.virsh(destination, ["domstate", name], check=False).stdout.strip()
        assert state == "paused", "%s should be left paused on %s, is %s" % (name, destination, state)
        assert_fleet_invariants(lab, text)


def test_playbook_killed_mid_wave_then_rerun(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    variables = {"drain_host_host": "hv1", "drain_host_tiers": TIERS, "drain_host_ledger": ledger,
                 "drain_host_migration": {"bandwidth_mib_s": 8}}
    log = str(tmp_path / "first.log")
    first = start_playbook(lab, ansible_env, "drain_host.yml", variables, log)
    guest = linux_guest(lab)["name"]
    wait_for_job(lab, "hv1", guest, timeout=300)
    os.killpg(first.pid, signal.SIGKILL)   # the controller dies: no clean-up, no abort, no release
    first.wait(30)
    holder = lease_of(lab, "hv1")
    assert holder and holder["operation"] == "drain", "the killed drain left no lease: %s" % holder

    # A plain rerun is refused: the dead job's lease still holds the host, and the refusal names it.
    refused_log = str(tmp_path / "refused.log")
    refused = start_playbook(lab, ansible_env, "drain_host.yml", variables, refused_log)
    refused.wait(300)
    with open(refused_log, encoding="utf-8") as handle:
        refusal = handle.read()
    assert refused.returncode != 0 and "held by job %s" % holder["job"] in refusal, refusal[-2000:]

    # Naming the dead job takes its leases over; the drain resumes and finishes.
    rerun_log = str(tmp_path / "rerun.log")
    rerun = start_playbook(lab, ansible_env, "drain_host.yml", dict(variables, drain_host_lease_break=holder["job"]),
                           rerun_log)
    rerun.wait(600)
    with open(rerun_log, encoding="utf-8") as handle:
        output = handle.read()
    print(output[-2500:])
    assert rerun.returncode == 0, output[-3000:]
    placement = assert_fleet_invariants(lab, output, ledger)
    assert "hv1" not in placement.values()
    assert all(lease_of(lab, host) is None for host in lab.hosts)
