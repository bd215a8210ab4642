"""Two jobs at once on the lab: the host lease makes the second refuse, by name, before it changes anything."""

from __future__ import annotations

import os
import time

import pytest

from conftest import assert_fleet_invariants, guests_of, lease_of, start_playbook, where_is

pytestmark = pytest.mark.lab

TIERS = {"critical": ["work*"], "high": ["disk*"], "low": ["idle*"]}


def running_on(lab, host):
    return [g["name"] for g in lab.config["guests"] if where_is(lab, g["name"])[1] == [host]]


def finish(process, log_path, timeout=600):
    process.wait(timeout=timeout)
    with open(log_path, encoding="utf-8") as handle:
        return process.returncode, handle.read()


def wait_for_lease(lab, host, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lease = lease_of(lab, host)
        if lease:
            return lease
        time.sleep(0.2)
    raise AssertionError("no lease on %s after %d s" % (host, timeout))


def assert_no_lease_left(lab):
    assert {host: lease_of(lab, host) for host in lab.hosts} == {host: None for host in lab.hosts}


def test_two_drains_at_once_never_exchange_vms(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    logs = {host: str(tmp_path / ("drain-%s.log" % host)) for host in ("hv1", "hv2")}
    jobs = {host: start_playbook(lab, ansible_env, "drain_host.yml",
                                 {"drain_host_host": host, "drain_host_tiers": TIERS,
                                  "drain_host_ledger": str(tmp_path / "ledger.jsonl")}, logs[host])
            for host in ("hv1", "hv2")}
    outcome = {host: finish(job, logs[host]) for host, job in jobs.items()}
    for host, (code, output) in outcome.items():
        print("---- drain of %s: rc %d\n%s" % (host, code, output[-2500:]))

    drained = [host for host, (code, _output) in outcome.items() if code == 0]
    refused = [host for host, (code, _output) in outcome.items() if code != 0]
    assert len(drained) == 1 and len(refused) == 1, outcome
    winner, loser = drained[0], refused[0]
    refusal = outcome[loser][1]
    assert "The drain of %s" % loser in refusal and "is refused before any change" in refusal
    # It names what stopped it: the first drain's lease (job, user, since) or the mark that drain set.
    assert ("held by job" in refusal and "drain of %s" % winner in refusal and "since" in refusal) \
        or "%s is under maintenance" % winner in refusal, refusal
    # The winner is empty, and none of its VMs went to the loser's... the loser's VMs never moved at all.
    assert running_on(lab, winner) == []
    for name in guests_of(lab, loser):
        assert where_is(lab, name)[1] == [loser], "%s left %s" % (name, loser)
    assert_fleet_invariants(lab, outcome[winner][1], str(tmp_path / "ledger.jsonl"))
    assert_no_lease_left(lab)


def test_drain_and_return_of_the_same_host_at_once(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    drain_log, return_log = str(tmp_path / "drain.log"), str(tmp_path / "return.log")

    # A return launched while the drain holds hv1 refuses, and leaves the drain's mark alone.
    drain = start_playbook(lab, ansible_env, "drain_host.yml",
                           {"drain_host_host": "hv1", "drain_host_tiers": TIERS, "drain_host_ledger": ledger},
                           drain_log)
    holder = wait_for_lease(lab, "hv1")
    assert holder["operation"] == "drain" and holder["role"] == "source"
    code, output = finish(start_playbook(lab, ansible_env, "return_host.yml",
                                         {"return_host_host": "hv1", "return_host_ledger": ledger}, return_log),
                          return_log)
    print(output[-2000:])
    assert code != 0 and "The return of hv1" in output and "is refused before any change" in output
    assert "held by job %s" % holder["job"] in output and "drain of hv1" in output
    drain_code, drain_output = finish(drain, drain_log)
    assert drain_code == 0, drain_output[-3000:]
    assert running_on(lab, "hv1") == []
    assert os.path.exists(os.path.join(lab.host_dir("hv1"), "var-lib-libvirt", "hvmaint", "maintenance.json"))
    assert_fleet_invariants(lab, drain_output, ledger)
    assert_no_lease_left(lab)

    # The other way round: a drain launched while a return holds hv1 refuses; every VM still comes home.
    returning = start_playbook(lab, ansible_env, "return_host.yml",
                               {"return_host_host": "hv1", "return_host_ledger": ledger}, return_log)
    holder = wait_for_lease(lab, "hv1")
    assert holder["operation"] == "return"
    code, output = finish(start_playbook(lab, ansible_env, "drain_host.yml",
                                         {"drain_host_host": "hv1", "drain_host_tiers": TIERS,
                                          "drain_host_ledger": ledger}, drain_log), drain_log)
    print(output[-2000:])
    assert code != 0 and "The drain of hv1" in output and "is refused before any change" in output
    assert "held by job %s" % holder["job"] in output and "return of hv1" in output
    return_code, return_output = finish(returning, return_log)
    assert return_code == 0, return_output[-3000:]
    for name in guests_of(lab, "hv1"):
        assert where_is(lab, name)[1] == ["hv1"]
    assert_fleet_invariants(lab, return_output, ledger)
    assert_no_lease_left(lab)
