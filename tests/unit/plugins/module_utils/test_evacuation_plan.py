"""The evacuation planner, on the three-host lab facts and on generated fleets checked against a brute force.

Lab (tests/unit/fixtures/facts/lab3.json): hv1 (64 GiB, under maintenance, drained), hv2 (48 GiB, runs db3 of
group db, a critical VM), hv3 (32 GiB, no bridge br-app, no machine type pc-q35-8.2, runs cache1).
"""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import (
    plan_evacuation,
    plan_return,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    LOAD_STATES,
    build_host_views,
    destination_checks,
    normalize_capacity_options,
)

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")

# What a careful operator would pass for the lab: gpu1 (passthrough) may be shut down, batch work may stay.
POLICY = {"critical": "fail", "high": "fail", "normal": "shutdown", "low": "leave"}
TIERS = {"critical": ["db*", "dns1"]}


def lab():
    with open(FACTS) as f:
        return json.load(f)


def host(hosts, name):
    return next(h for h in hosts if h["name"] == name)


def move_of(plan, vm):
    return next(m for m in plan["moves"] if m["vm"] == vm)


def final_load(hosts, plan):
    """Memory and vCPUs each host runs once the plan is carried out."""
    mem = {h["name"]: 0 for h in hosts}
    cpus = dict(mem)
    where = {}
    for h in hosts:
        for vm in h["vms"]:
            if vm["state"] in LOAD_STATES:
                where[vm["uuid"]] = (h["name"], vm)
    for m in plan["moves"]:
        if m["mode"] == "live":
            where[m["uuid"]] = (m["destination"], where[m["uuid"]][1])
    for name, vm in where.values():
        mem[name] += vm["memory_mib"]
        cpus[name] += vm["vcpus"]
    return mem, cpus


def assert_nobody_overfilled(hosts, plan, reserve=1024, overcommit=1.0, vcpu_overcommit=4.0):
    mem, cpus = final_load(hosts, plan)
    for m in plan["moves"]:
        h = host(hosts, m["destination"])
        assert mem[h["name"]] <= h["memory_total_mib"] * overcommit - reserve, h["name"]
        assert cpus[h["name"]] <= h["cpu"]["count"] * vcpu_overcommit, h["name"]


# --------------------------------------------------------------------------------------------------------------
# the lab


def test_default_policy_fails_the_plan_and_moves_nothing():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS)
    assert plan["ok"] is False
    assert plan["moves"] == [] and plan["waves"] == [] and plan["actions"] == []
    assert plan["predicted_seconds"] == 0
    gpu1 = next(u for u in plan["unplaceable"] if u["vm"] == "gpu1")
    assert gpu1["policy"] == "fail" and gpu1["tier"] == "normal"
    assert "passthrough" in gpu1["reasons"][0]
    assert plan["summary_lines"][0] == "drain hv1: NOT OK, nothing should move"


def test_critical_vms_move_first_then_tiers_in_order():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert plan["ok"] is True
    live = [m for m in plan["moves"] if m["mode"] == "live"]
    assert [m["vm"] for m in live[:3]] == ["db1", "db2", "dns1"]  # biggest first within the tier
    assert {m["tier"] for m in live[:3]} == {"critical"}
    order = ["critical", "high", "normal", "low"]
    ranks = [order.index(m["tier"]) for m in live]
    assert ranks == sorted(ranks)
    assert [(w["wave"], w["tier"], w["mode"]) for w in plan["waves"]] == [
        (1, "critical", "live"), (2, "high", "live"), (3, "normal", "live"), (4, "low", "live"),
        (5, "normal", "offline")]
    assert [m["order"] for m in plan["moves"]] == list(range(1, len(plan["moves"]) + 1))
    # The source holds nothing running afterwards except what the policy keeps there.
    moved = {m["vm"] for m in plan["moves"]}
    assert moved == {"db1", "db2", "dns1", "web1", "web2", "local1", "batch1", "paused1", "old1"}
    assert plan["actions"] == [{
        "vm": "gpu1", "uuid": next(v for v in host(lab(), "hv1")["vms"] if v["name"] == "gpu1")["uuid"],
        "host": "hv1", "tier": "normal", "action": "shutdown",
        "reason": plan["actions"][0]["reason"]}]
    assert plan["actions"][0]["reason"].startswith("shut down on hv1 and start again when it returns")


def test_nobody_is_overfilled():
    hosts = lab()
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert_nobody_overfilled(hosts, plan)
    # Tighter: hv2 declared at 32 GiB. Not everything fits any more; low-tier VMs stay (policy leave).
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY,
                           host_overrides={"hv2": {"memory_mib": 32768}})
    assert_nobody_overfilled(hosts, plan)
    assert plan["ok"] is True
    batch1 = next(u for u in plan["unplaceable"] if u["vm"] == "batch1")
    assert batch1["policy"] == "leave"
    assert "needs 12.0 GiB" in batch1["reasons"][0]
    assert {"vm": "batch1", "action": "leave"}.items() <= next(
        a for a in plan["actions"] if a["vm"] == "batch1").items()


def test_critical_vm_prefers_a_host_without_another_critical_vm():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    db1 = move_of(plan, "db1")
    # hv2 has more free memory but already runs db3 (critical); hv3 runs none.
    assert db1["destination"] == "hv3"
    assert db1["reason"] == ("most free memory among 2 compatible hosts (17.0 GiB free after);"
                             " no other critical VM there")


def test_reason_says_why_that_host():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert move_of(plan, "web1")["reason"] == "the only compatible host (20.0 GiB free after)"
    assert move_of(plan, "batch1")["reason"].startswith("most free memory among 2 compatible hosts (")


def test_anti_affinity_is_honoured_when_possible():
    # Without the group, batch1 goes to hv3 (most free memory at its turn); cache1 on hv3 now shares its group.
    plain = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert move_of(plain, "batch1")["destination"] == "hv3"
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY,
                           anti_affinity={"cachepair": ["batch1", "cache*"]})
    batch1 = move_of(plan, "batch1")
    assert batch1["destination"] == "hv2"
    assert "passed over 1 holding a member of group cachepair" in batch1["reason"]
    # db1 avoided hv2, which runs db3 of the same group (metadata.group).
    assert move_of(plan, "db1")["destination"] == "hv3"


def test_anti_affinity_impossible_places_anyway_and_warns():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    db2 = move_of(plan, "db2")  # db1 went to hv3, db3 runs on hv2: no host is free of group db
    assert db2["destination"] in ("hv2", "hv3")
    assert "anti_affinity" in [w["code"] for w in db2["warnings"]]
    assert any("db2 (group db) is placed on" in w for w in plan["warnings"])


def test_strict_anti_affinity_makes_the_vm_unplaceable():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, strict_anti_affinity=True)
    assert plan["ok"] is False and plan["moves"] == []
    db2 = next(u for u in plan["unplaceable"] if u["vm"] == "db2")
    assert db2["policy"] == "fail"
    assert "hold a member of group db (strict_anti_affinity)" in " ".join(db2["reasons"])
    # With a tolerant policy for critical VMs, db2 is left running and everything else proceeds.
    policy = dict(POLICY, critical="leave")
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=policy, strict_anti_affinity=True)
    assert plan["ok"] is True
    assert "db2" not in {m["vm"] for m in plan["moves"]}
    assert {a["vm"]: a["action"] for a in plan["actions"]} == {"db2": "leave", "gpu1": "shutdown"}


def test_suspend_policy_is_reported_as_an_action():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=dict(POLICY, normal="suspend"))
    assert [(a["vm"], a["action"]) for a in plan["actions"]] == [("gpu1", "suspend")]
    assert "restore when it returns" in plan["actions"][0]["reason"]


def test_playbook_tiers_win_over_metadata_and_default_tier_applies():
    plan = plan_evacuation(lab(), "hv1", tiers={"low": ["db1"]}, unplaceable_policy=POLICY)
    assert move_of(plan, "db1")["tier"] == "low"
    assert move_of(plan, "db2")["tier"] == "critical"  # metadata
    assert move_of(plan, "dns1")["tier"] == "normal"  # neither: default_tier
    plan = plan_evacuation(lab(), "hv1", default_tier="high", unplaceable_policy=POLICY)
    assert move_of(plan, "dns1")["tier"] == "high"


def test_a_vm_matching_several_tiers_gets_the_most_important():
    plan = plan_evacuation(lab(), "hv1", tiers={"low": ["web*"], "high": ["web1"]}, unplaceable_policy=POLICY)
    assert move_of(plan, "web1")["tier"] == "high"
    assert move_of(plan, "web2")["tier"] == "low"


def test_unknown_tiers_fail_clearly():
    with pytest.raises(HvmaintError, match=r"tiers names unknown tiers: gold \(tiers, in order: critical, high"):
        plan_evacuation(lab(), "hv1", tiers={"gold": ["db1"]})
    with pytest.raises(HvmaintError, match=r"default_tier medium is not a tier"):
        plan_evacuation(lab(), "hv1", default_tier="medium")
    with pytest.raises(HvmaintError, match=r"unplaceable_policy names unknown tiers: bronze"):
        plan_evacuation(lab(), "hv1", unplaceable_policy={"bronze": "leave"})
    with pytest.raises(HvmaintError, match=r"unplaceable_policy.low is 'delete': choose one of fail, shutdown"):
        plan_evacuation(lab(), "hv1", unplaceable_policy={"low": "delete"})
    hosts = lab()
    host(hosts, "hv1")["vms"][0]["metadata"]["tier"] = "critcal"
    # VM metadata is untrusted: an unknown tier there gets the default tier, with a warning, and stops nothing.
    plan = plan_evacuation(hosts, "hv1", unplaceable_policy={"normal": "leave", "low": "leave"})
    assert next(m for m in plan["moves"] if m["vm"] == "db1")["tier"] == "normal"
    assert any(w.startswith("VMs have a metadata tier that is not in tier_order: db1 (tier critcal); they get the"
                            " default tier normal") for w in plan["warnings"]), plan["warnings"]


def test_a_metadata_home_that_is_no_known_host_is_reported_not_obeyed():
    hosts = lab()
    host(hosts, "hv1")["vms"][0]["metadata"]["home"] = "hv9"
    plan = plan_evacuation(hosts, "hv1")
    assert any("db1 (home hv9)" in w and "not a known host" in w for w in plan["warnings"]), plan["warnings"]
    back = plan_return(hosts, "hv2")
    assert "db1" not in [m["vm"] for m in back["moves"]]
    assert any("db1 (home hv9)" in w for w in back["warnings"]), back["warnings"]


def test_custom_tier_order():
    # The mapping covers every VM ("*"), so metadata tiers outside tier_order do not matter.
    plan = plan_evacuation(lab(), "hv1", tier_order=["gold", "normal"],
                           tiers={"gold": ["db*", "dns1"], "normal": ["*"]}, unplaceable_policy={"normal": "shutdown"})
    assert plan["ok"] is True
    assert [m["vm"] for m in plan["waves"][0]["moves"]] == ["db1", "db2", "dns1"]
    assert {w["tier"] for w in plan["waves"][1:]} == {"normal"}
    # metadata says critical, high, low: those VMs get the default tier, with a warning
    plan = plan_evacuation(lab(), "hv1", tier_order=["gold", "normal"], unplaceable_policy={"normal": "shutdown"})
    assert {m["tier"] for m in plan["moves"]} == {"normal"}
    assert any("metadata tier that is not in tier_order" in w for w in plan["warnings"])


def test_unknown_hosts_fail_clearly():
    with pytest.raises(HvmaintError, match=r"source hv9 is not in hosts \(known hosts: hv1, hv2, hv3\)"):
        plan_evacuation(lab(), "hv9")
    with pytest.raises(HvmaintError, match=r"exclude_hosts names hosts that are not in hosts: hv8"):
        plan_evacuation(lab(), "hv1", exclude_hosts=["hv8"])
    with pytest.raises(HvmaintError, match=r"return_to hv9 is not in hosts"):
        plan_return(lab(), "hv9")


def test_shutoff_vms_move_as_definitions_last_or_stay():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    old1 = move_of(plan, "old1")
    assert old1["mode"] == "offline" and old1["estimated_seconds"] == 0
    assert old1["reason"].startswith("definition only: ")
    assert plan["moves"][-1]["vm"] == "old1"
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, shutoff_vms="leave")
    assert "old1" not in {m["vm"] for m in plan["moves"]}
    leave = next(a for a in plan["actions"] if a["vm"] == "old1")
    assert leave["action"] == "leave" and "shutoff_vms is leave" in leave["reason"]


def test_shutoff_vm_moves_even_where_it_could_not_start_and_says_so():
    hosts = lab()
    next(v for v in host(hosts, "hv1")["vms"] if v["name"] == "old1")["memory_mib"] = 100 * 1024
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    old1 = move_of(plan, "old1")
    assert old1["mode"] == "offline"
    assert "lacks room to start the VM" in old1["reason"]
    assert "no_room_to_start" in [w["code"] for w in old1["warnings"]]
    assert_nobody_overfilled(hosts, plan)


def test_vcpu_shortage_passes_hosts_over():
    # hv3 has 8 CPUs x 1.5 = 12 vCPUs and runs 4: batch1 (8 vCPUs) fits there only if nothing else went first.
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, vcpu_overcommit=1.5)
    assert_nobody_overfilled(lab(), plan, vcpu_overcommit=1.5)
    reasons = [m["reason"] for m in plan["moves"]] + [r for u in plan["unplaceable"] for r in u["reasons"]]
    assert any("short of vCPUs" in r or "cannot take its 8 vCPUs" in r for r in reasons)


def test_shutoff_vm_that_cannot_move_is_left_without_failing_the_plan():
    hosts = lab()
    local1 = next(v for v in host(hosts, "hv1")["vms"] if v["name"] == "local1")
    local1["state"] = "shutoff"
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert plan["ok"] is True
    leave = next(a for a in plan["actions"] if a["vm"] == "local1")
    assert leave["action"] == "leave" and "offline migration moves only the definition" in leave["reason"]


@pytest.mark.parametrize("parked", [{"managed_save": True}, {"metadata": {"home": "hv1", "parked": "suspend"}}],
                         ids=["managed_save", "parked_metadata"])
def test_a_vm_suspended_to_disk_by_a_drain_is_not_moved_offline_on_a_rerun(parked):
    # A rerun of a drain whose suspend policy parked web2 finds it shut off: moving its definition would orphan
    # the memory saved on hv1 (the return restores it there instead).
    hosts = lab()
    web2 = next(v for v in host(hosts, "hv1")["vms"] if v["name"] == "web2")
    web2.update(state="shutoff", **parked)
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert "web2" not in {m["vm"] for m in plan["moves"]}
    leave = next(a for a in plan["actions"] if a["vm"] == "web2")
    assert leave["action"] == "leave" and "suspended to disk on hv1 (managed save)" in leave["reason"]


def test_states_that_cannot_move_are_unplaceable():
    hosts = lab()
    next(v for v in host(hosts, "hv1")["vms"] if v["name"] == "web2")["state"] = "crashed"
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    web2 = next(u for u in plan["unplaceable"] if u["vm"] == "web2")
    assert web2["state"] == "crashed" and "virsh destroy" in web2["reasons"][0]


def test_paused_vm_migrates_with_a_warning():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    paused1 = move_of(plan, "paused1")
    assert paused1["mode"] == "live" and "paused" in [w["code"] for w in paused1["warnings"]]


def test_host_local_disk_is_copied_and_needs_pool_space():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    local1 = move_of(plan, "local1")
    assert local1["estimated_seconds"] == 123  # 2 GiB memory + 10 GiB disk at 100 MiB/s
    assert "storage_copy" in [w["code"] for w in local1["warnings"]]
    hosts = lab()
    for h in hosts:
        for pool in h["storage_pools"]:
            if pool["name"] == "default":
                pool["available_bytes"] = 5 * 2**30
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    local1 = next(u for u in plan["unplaceable"] if u["vm"] == "local1")
    assert "lack pool space for the copied disks" in " ".join(local1["reasons"])


def test_no_compatible_host_explains_each_blocker():
    hosts = lab()
    host(hosts, "hv2")["bridges"] = ["br0"]
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    web1 = next(u for u in plan["unplaceable"] if u["vm"] == "web1")
    assert web1["policy"] == "fail" and plan["ok"] is False
    assert web1["reasons"] == [
        "NIC 52:54:00:00:80:01 of web1 is on bridge br-app, which hv2 does not have: create the bridge there"
        " (same on 2 hosts: hv2, hv3)"]


def test_cpu_matrix_steers_away_from_incompatible_hosts():
    matrix = [{"guest": "db1", "host": "hv3", "result": "incompatible", "compatible": False,
               "missing_features": ["avx512f"], "reasons": []}]
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, cpu_matrix=matrix)
    db1 = move_of(plan, "db1")
    assert db1["destination"] == "hv2"
    warnings = " ".join(plan["warnings"])
    assert "no cpu_matrix given" not in warnings
    assert "CPU not checked: cpu_matrix has no entry for db2 on" in warnings  # pairs the matrix leaves out


def test_excluded_and_maintenance_hosts_are_never_destinations():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, exclude_hosts=["hv3"])
    assert {m["destination"] for m in plan["moves"]} == {"hv2"}
    assert plan["excluded_destinations"] == [{"host": "hv3", "reason": "hv3 is in exclude_hosts"}]
    plan = plan_evacuation(lab(), "hv2", unplaceable_policy=POLICY)
    assert {m["destination"] for m in plan["moves"]} <= {"hv3"}
    assert plan["excluded_destinations"][0]["host"] == "hv1"


def test_waves_split_by_max_wave_size():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, max_wave_size=2)
    assert all(len(w["moves"]) <= 2 for w in plan["waves"])
    assert [w["tier"] for w in plan["waves"]] == ["critical", "critical", "high", "normal", "low", "normal"]
    assert [m["vm"] for m in plan["moves"]] == [m["vm"] for m in plan_evacuation(
        lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)["moves"]]
    for wave in plan["waves"]:
        assert {m["wave"] for m in wave["moves"]} == {wave["wave"]}


def test_predicted_time_uses_bandwidth_and_parallel_slots():
    one = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, max_parallel_per_source=1)
    assert one["predicted_seconds"] == sum(m["estimated_seconds"] for m in one["moves"])
    two = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    # critical wave: db1 82 s and db2 82 s side by side, then dns1 11 s in the first free slot.
    assert two["waves"][0]["predicted_seconds"] == 93
    assert two["predicted_seconds"] == sum(w["predicted_seconds"] for w in two["waves"])
    assert two["predicted_seconds"] < one["predicted_seconds"]
    fast = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, bandwidth_mib_s=1000)
    assert fast["predicted_seconds"] < two["predicted_seconds"] / 5


def test_same_facts_give_the_same_plan_whatever_their_order():
    reference = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY) == reference
    rng = random.Random(7)
    for dummy in range(5):
        hosts = lab()
        rng.shuffle(hosts)
        for h in hosts:
            rng.shuffle(h["vms"])
        assert plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY) == reference


def test_ties_are_broken_by_name():
    hosts = lab()
    # Make hv2 and hv3 identical in room, capabilities and load.
    hv3 = copy.deepcopy(host(hosts, "hv2"))
    hv3["name"] = "hv3"
    hv3["vms"] = []
    host(hosts, "hv2")["vms"] = []
    hosts = [h for h in hosts if h["name"] != "hv3"] + [hv3]
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    assert move_of(plan, "db1")["destination"] == "hv2"
    assert move_of(plan, "db2")["destination"] == "hv3"


def test_summary_lines_show_the_plan():
    plan = plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    lines = plan["summary_lines"]
    assert lines[0].startswith("drain hv1: 9 moves in 5 waves, predicted ")
    assert lines[1].split()[:8] == ["wave", "tier", "VM", "mem", "from", "to", "est", "why"]
    db1 = next(line for line in lines if " db1 " in line)
    assert db1.split()[:7] == ["1", "critical", "db1", "8.0GiB", "hv1", "hv3", "82s"]
    assert any(line.startswith("shutdown: gpu1 on hv1") for line in lines)


# --------------------------------------------------------------------------------------------------------------
# bringing VMs home


def carry_out(hosts, plan):
    """The facts as they would be after the plan ran."""
    hosts = copy.deepcopy(hosts)
    by_name = {h["name"]: h for h in hosts}
    for m in plan["moves"]:
        src = by_name[m["source"]]
        vm = next(v for v in src["vms"] if v["uuid"] == m["uuid"])
        src["vms"].remove(vm)
        by_name[m["destination"]]["vms"].append(vm)
    return hosts


def drained_lab():
    hosts = lab()
    plan = plan_evacuation(hosts, "hv1", tiers=TIERS, unplaceable_policy=POLICY)
    after = carry_out(hosts, plan)
    host(after, "hv1")["maintenance"] = None
    return after, plan


def test_return_brings_every_vm_home_most_important_first():
    after, drain = drained_lab()
    back = plan_return(after, "hv1", tiers=TIERS)
    assert back["ok"] is True and back["cannot_return"] == []
    assert {m["vm"] for m in back["moves"]} == {m["vm"] for m in drain["moves"]}
    assert {m["destination"] for m in back["moves"]} == {"hv1"}
    assert back["moves"][0]["tier"] == "critical"
    assert back["moves"][-1]["mode"] == "offline"
    assert back["waves"][0]["predicted_seconds"] > 0
    home = carry_out(after, back)
    assert {v["name"] for v in host(home, "hv1")["vms"]} == {v["name"] for v in host(lab(), "hv1")["vms"]}


def test_return_never_overfills_the_home_host():
    after = drained_lab()[0]
    host(after, "hv1")["memory_total_mib"] = 16384  # 15 GiB usable, gpu1 (4 GiB) still runs there
    back = plan_return(after, "hv1", tiers=TIERS)
    mem = final_load(after, back)[0]
    assert mem["hv1"] <= 16384 - 1024
    assert back["ok"] is True
    assert back["moves"][0]["vm"] == "db1"  # critical first, biggest first
    refused = {c["vm"]: c for c in back["cannot_return"]}
    assert "batch1" in refused
    assert "left after the returns planned before it" in refused["batch1"]["reasons"][0]
    assert all(c["reasons"] for c in back["cannot_return"])


def test_return_to_a_host_still_under_maintenance_moves_nothing():
    after = drained_lab()[0]
    host(after, "hv1")["maintenance"] = {"since": "2025-11-20T08:00:00Z", "reason": "BIOS update", "by": "ops"}
    back = plan_return(after, "hv1")
    assert back["ok"] is False and back["moves"] == []
    assert all("under maintenance" in c["reasons"][0] for c in back["cannot_return"])


def test_return_skips_vms_already_home_and_checks_readiness():
    after = drained_lab()[0]
    host(after, "hv1")["bridges"] = ["br0"]  # br-app gone: web1 cannot come back
    back = plan_return(after, "hv1", tiers=TIERS)
    refused = {c["vm"]: c for c in back["cannot_return"]}
    assert list(refused) == ["web1"] and "br-app" in refused["web1"]["reasons"][0]
    assert "gpu1" not in {m["vm"] for m in back["moves"]}  # never left


def test_return_is_deterministic():
    after = drained_lab()[0]
    first = plan_return(after, "hv1", tiers=TIERS)
    shuffled = copy.deepcopy(after)
    random.Random(3).shuffle(shuffled)
    assert plan_return(shuffled, "hv1", tiers=TIERS) == first


# --------------------------------------------------------------------------------------------------------------
# generated fleets against a brute force


def fleet(seed, n_hosts, n_vms, source_share=0.2):
    rng = random.Random(seed)
    nets = ["lan", "dmz", "storage", "backup"]
    hosts = []
    for i in range(n_hosts):
        have = [n for n in nets if n == "lan" or rng.random() < 0.7]
        hosts.append({
            "name": "hv%03d" % i, "arch": "x86_64", "libvirt_version": "10.0.0", "hypervisor_version": "8.2.2",
            "cpu": {"count": rng.choice([8, 16, 32])}, "domain_types": ["kvm", "qemu"],
            "machine_types": ["pc-q35-8.2", "pc-q35-7.2"] if rng.random() < 0.8 else ["pc-q35-7.2"],
            "memory_total_mib": rng.choice([32768, 65536, 131072]),
            "networks": [{"name": n, "active": True} for n in have], "bridges": ["br0"] + (
                ["br-app"] if rng.random() < 0.5 else []),
            "storage_pools": [], "maintenance": None, "vms": []})
    for j in range(n_vms):
        target = hosts[0] if rng.random() < source_share else rng.choice(hosts)
        nics = [{"type": "network", "network": rng.choice(nets), "mac": "52:54:00:%06x" % j}]
        if rng.random() < 0.3:
            nics.append({"type": "bridge", "bridge": rng.choice(["br0", "br-app"]), "mac": "52:54:01:%06x" % j})
        meta = {}
        if rng.random() < 0.8:
            meta["tier"] = rng.choice(["critical", "high", "normal", "low"])
        if rng.random() < 0.3:
            meta["group"] = "g%d" % rng.randrange(12)
        target["vms"].append({
            "name": "vm%05d" % j, "uuid": "u%05d" % j, "state": "running" if rng.random() < 0.95 else "paused",
            "domain_type": "kvm", "machine": rng.choice(["pc-q35-8.2", "pc-q35-7.2", "pc-q35-7.2"]),
            "memory_mib": rng.choice([512, 1024, 2048, 4096, 8192, 16384]), "vcpus": rng.choice([1, 2, 4, 8]),
            "disks": [], "nics": nics, "hostdevs": [], "metadata": meta})
    return hosts


@pytest.mark.parametrize("seed, strict", [(1, False), (2, False), (3, True), (4, False)])
def test_plan_matches_brute_force_placement(seed, strict):
    # Sized so that most VMs move, some are passed over for vCPUs or groups, and a few find no room.
    hosts = fleet(seed, 25, 300)
    source = "hv000"
    policy = {t: "leave" for t in ("critical", "high", "normal", "low")}
    plan = plan_evacuation(hosts, source, unplaceable_policy=policy, strict_anti_affinity=strict,
                           memory_reserve_mib=2048, vcpu_overcommit=3.0)
    assert plan["ok"] is True
    assert plan["moves"] and plan["unplaceable"]
    opts = normalize_capacity_options(memory_reserve_mib=2048, vcpu_overcommit=3.0)
    views = build_host_views(hosts, None, opts)
    order = ["critical", "high", "normal", "low"]

    def tier(vm):
        return vm["metadata"].get("tier", "normal")

    state = {}
    for name, view in views.items():
        if name == source:
            continue
        groups = {}
        for vm in view.facts["vms"]:
            if vm["metadata"].get("group"):
                groups[vm["metadata"]["group"]] = groups.get(vm["metadata"]["group"], 0) + 1
        state[name] = {"free": view.mem_free, "vcpus": view.vcpu_capacity - view.vcpu_used, "groups": groups,
                       "critical": sum(1 for vm in view.facts["vms"] if tier(vm) == "critical")}
    moves = {m["vm"]: m for m in plan["moves"]}
    unplaceable = {u["vm"] for u in plan["unplaceable"]}
    to_place = sorted(views[source].facts["vms"], key=lambda v: (order.index(tier(v)), -v["memory_mib"], v["name"]))
    assert len(moves) + len(unplaceable) == len(to_place)
    for vm in to_place:
        feasible, conflicting = [], []
        for name in sorted(state):
            st = state[name]
            if destination_checks(vm, "live", views[source], views[name])[0]:
                continue
            if vm["memory_mib"] > st["free"] or vm["vcpus"] > st["vcpus"]:
                continue
            group = vm["metadata"].get("group")
            (conflicting if group and st["groups"].get(group) else feasible).append(name)

        def key(name, critical=tier(vm) == "critical"):
            st = state[name]
            return ((st["critical"] > 0) if critical else 0, -st["free"], name)

        if feasible:
            expected = min(feasible, key=key)
        elif conflicting and not strict:
            expected = min(conflicting, key=key)
        else:
            expected = None
        if expected is None:
            assert vm["name"] in unplaceable, vm["name"]
            continue
        assert moves[vm["name"]]["destination"] == expected, vm["name"]
        st = state[expected]
        st["free"] -= vm["memory_mib"]
        st["vcpus"] -= vm["vcpus"]
        if tier(vm) == "critical":
            st["critical"] += 1
        if vm["metadata"].get("group"):
            st["groups"][vm["metadata"]["group"]] = st["groups"].get(vm["metadata"]["group"], 0) + 1
    assert_nobody_overfilled(hosts, plan, reserve=2048, vcpu_overcommit=3.0)


def test_a_bigger_fleet_is_planned_quickly():
    import time

    hosts = fleet(11, 200, 2000, source_share=0.5)
    started = time.perf_counter()
    policy = {t: "leave" for t in ("critical", "high", "normal", "low")}
    plan = plan_evacuation(hosts, "hv000", unplaceable_policy=policy)
    assert time.perf_counter() - started < 10
    assert len(plan["moves"]) > 900
    assert_nobody_overfilled(hosts, plan)
