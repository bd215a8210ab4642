"""The rebalance planner, on the three-host facts fixture and on generated fleets whose every plan is checked
against the rules (capacity, compatibility, anti-affinity, tiers, leases, maintenance), and run a second time on
the placement it leads to."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import build_host_views
from ansible_collections.hvmaint.libvirt.plugins.module_utils._rebalance_plan import (
    coefficient_of_variation,
    plan_rebalance,
)

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")
TIERS = {"critical": ["db*", "dns1"]}


def lab(maintenance=False):
    with open(FACTS) as f:
        hosts = json.load(f)
    if not maintenance:
        for h in hosts:
            h["maintenance"] = None
    return hosts


def apply(hosts, plan, loads=None):
    """The facts (and measured loads) once the plan's moves are done."""
    hosts = copy.deepcopy(hosts)
    loads = copy.deepcopy(loads)
    by_name = {h["name"]: h for h in hosts}
    load_by_name = {entry["name"]: entry for entry in loads or ()}
    for move in plan["moves"]:
        src, dst = by_name[move["source"]], by_name[move["destination"]]
        vm = next(v for v in src["vms"] if v["name"] == move["vm"])
        src["vms"].remove(vm)
        dst["vms"].append(vm)
        if loads is not None:
            entry = next(v for v in load_by_name[move["source"]]["vms"] if v["name"] == move["vm"])
            load_by_name[move["source"]]["vms"].remove(entry)
            load_by_name[move["destination"]]["vms"].append(entry)
    return hosts, loads


def where(hosts):
    return {vm["name"]: h["name"] for h in hosts for vm in h["vms"]}


# ---------------------------------------------------------------------------------------------------------------
# the fixture


def test_balance_reaches_the_threshold_within_max_moves_and_a_second_run_makes_none():
    hosts = lab()
    plan = plan_rebalance(hosts, "balance", max_moves=5, threshold=0.25, tiers=TIERS)
    assert plan["imbalance_before"]["imbalance"] > 0.25
    assert 0 < len(plan["moves"]) <= 5
    assert plan["balanced"] and plan["imbalance_after"]["imbalance"] <= 0.25
    previous = plan["imbalance_before"]["imbalance"]
    for move in sorted(plan["moves"], key=lambda m: m["plan_step"]):
        # Every move kept removes at least min_improvement of the two hosts' share (2 of 3) of the imbalance,
        # and says why.
        assert move["imbalance_before"] == pytest.approx(previous, abs=1e-4)
        assert move["imbalance_after"] <= move["imbalance_before"] * (1 - 0.1 * 2 / 3) + 1e-4
        assert move["why_vm"] and move["why_host"] and move["destination"] in move["why_host"]
        previous = move["imbalance_after"]
    moved = {m["vm"] for m in plan["moves"]}
    assert not moved & {"db1", "db2", "db3", "dns1", "gpu1"}
    again = plan_rebalance(apply(hosts, plan)[0], "balance", max_moves=5, threshold=0.25, tiers=TIERS)
    assert again["moves"] == []
    assert again["imbalance_before"]["imbalance"] == pytest.approx(plan["imbalance_after"]["imbalance"], abs=1e-4)
    assert "nothing to do" in again["stop_reason"]


def test_balance_is_the_same_whatever_the_order_of_the_facts():
    hosts = lab()
    plan = plan_rebalance(hosts, "balance", tiers=TIERS)
    shuffled = copy.deepcopy(hosts)[::-1]
    for h in shuffled:
        h["vms"].reverse()
    other = plan_rebalance(shuffled, "balance", tiers=TIERS)
    assert [(m["vm"], m["destination"]) for m in plan["moves"]] == [(m["vm"], m["destination"])
                                                                    for m in other["moves"]]


def test_within_a_phase_no_host_both_sends_and_takes_and_phases_run_in_order():
    plan = plan_rebalance(lab(), "balance", max_moves=10, threshold=0.01, tiers=TIERS)
    assert plan["moves"]
    phases = sorted({m["phase"] for m in plan["moves"]})
    assert phases == list(range(1, len(phases) + 1))
    for phase in phases:
        moves = [m for m in plan["moves"] if m["phase"] == phase]
        assert not {m["source"] for m in moves} & {m["destination"] for m in moves}
        assert len({m["vm"] for m in moves}) == len(moves)
    # Every wave of a phase comes before the next phase's, and the moves are listed wave by wave.
    assert [m["phase"] for m in plan["moves"]] == sorted(m["phase"] for m in plan["moves"])
    assert [w["phase"] for w in plan["waves"]] == sorted(w["phase"] for w in plan["waves"])
    # A VM that moves again does so from where its earlier move took it.
    at = {}
    for move in sorted(plan["moves"], key=lambda m: m["plan_step"]):
        assert move["source"] == at.get(move["vm"], move["source"])
        assert move["leg"] == (2 if move["vm"] in at else 1) or move["vm"] in at
        at[move["vm"]] = move["destination"]


def test_a_plan_that_stops_short_of_max_moves_leaves_nothing_for_a_second_run():
    """A plan that ends before max_moves is the whole work: a second run on the placement it leads to plans
    nothing. (Before phases, a host that took a VM could not send one in the same plan: the plan stopped saying
    the fleet stays as it is, and the next run moved more, in about half of these fleets.)"""
    for seed in range(16):
        for n_hosts, n_vms in ((3, 20), (4, 30), (6, 40)):
            hosts, loads = make_fleet(seed, n_hosts=n_hosts, n_vms=n_vms, crowd=0.6)
            for given in (loads, None):
                plan = plan_rebalance(hosts, "balance", loads=given, max_moves=200, threshold=0.05)
                assert "max_moves" not in plan["stop_reason"]
                check_rules(hosts, plan, "balance")
                moved_hosts, moved_loads = apply(hosts, plan, given)
                again = plan_rebalance(moved_hosts, "balance", loads=moved_loads, max_moves=200, threshold=0.05)
                assert again["moves"] == [], (seed, n_hosts, plan["stop_reason"], again["summary_lines"][:4])
                assert again["imbalance_before"]["imbalance"] == pytest.approx(
                    plan["imbalance_after"]["imbalance"], abs=1e-4)


def test_critical_vms_move_only_when_allowed():
    hosts = lab()
    hosts[0]["vms"] = [vm for vm in hosts[0]["vms"] if vm["name"] in ("db1", "db2", "dns1")]
    held = plan_rebalance(hosts, "balance", tiers=TIERS, threshold=0.05)
    assert {f["vm"] for f in held["fixed"]} >= {"db1", "db2", "dns1"}
    assert "critical" not in {m["tier"] for m in held["moves"]}
    allowed = plan_rebalance(hosts, "balance", tiers=TIERS, move_critical=True, threshold=0.05)
    assert "critical" in {m["tier"] for m in allowed["moves"]}


def test_a_host_under_maintenance_or_held_by_another_job_neither_sends_nor_takes():
    hosts = lab()
    hosts[2]["maintenance"] = {"since": "2026-12-01T00:00:00Z", "reason": "disk", "by": "alice"}
    plan = plan_rebalance(hosts, "balance", tiers=TIERS, threshold=0.01)
    assert all("hv3" not in (m["source"], m["destination"]) for m in plan["moves"])
    hosts = lab()
    hosts[1]["lease"] = {"job": "4711", "by": "alice", "operation": "drain", "subject": "hv2", "role": "source",
                         "since": "2026-12-01T22:27:58Z", "expires": "2026-12-01T23:27:58Z"}
    during = 1796167800  # 2026-12-01T23:30:00Z, after the expiry; 10 minutes earlier the lease holds
    plan = plan_rebalance(hosts, "balance", tiers=TIERS, threshold=0.01, now=during - 600)
    assert all("hv2" not in (m["source"], m["destination"]) for m in plan["moves"])
    assert any("held by job 4711, by alice" in e["reason"] for e in plan["excluded_hosts"])
    lapsed = plan_rebalance(hosts, "balance", tiers=TIERS, threshold=0.01, now=during)
    assert not any(e["host"] == "hv2" for e in lapsed["excluded_hosts"])
    broken = plan_rebalance(hosts, "balance", tiers=TIERS, threshold=0.01, now=during - 600, lease_break_job="4711")
    assert not any(e["host"] == "hv2" for e in broken["excluded_hosts"])


def test_measured_load_moves_the_busy_vm_and_ignores_an_idle_fleet():
    hosts = lab()
    # Every VM uses the same memory; only web1 and web2, both on hv1, are busy.
    loads = [{"name": h["name"], "vms": [
        {"name": vm["name"], "uuid": vm["uuid"], "cpu_cores": 2.0 if vm["name"] in ("web1", "web2") else 0.01,
         "memory_used_mib": 100.0} for vm in h["vms"] if vm["state"] != "shutoff"]} for h in hosts]
    plan = plan_rebalance(hosts, "balance", loads=loads, tiers=TIERS, cpu_weight=1.0, max_moves=1)
    assert plan["measure"] == "measured"
    assert [m["vm"] for m in plan["moves"]] in (["web1"], ["web2"])
    assert "uses 2.00 cores" in plan["moves"][0]["why_vm"]
    idle = [dict(entry, vms=[dict(vm, cpu_cores=0.001) for vm in entry["vms"]]) for entry in loads]
    quiet = plan_rebalance(hosts, "balance", loads=idle, tiers=TIERS, cpu_weight=1.0)
    # A fleet whose mean CPU load is below min_load has nothing worth moving for.
    assert quiet["imbalance_before"]["cpu_cv"] == 0 and quiet["moves"] == []


def test_a_host_without_measured_load_takes_no_part():
    hosts = lab()
    loads = [{"name": h["name"], "vms": []} for h in hosts if h["name"] != "hv3"]
    plan = plan_rebalance(hosts, "balance", loads=loads, tiers=TIERS)
    assert any(e["host"] == "hv3" and "no measured load" in e["reason"] for e in plan["excluded_hosts"])


def test_ledger_history_makes_a_slow_vm_costlier():
    hosts = lab()
    base = plan_rebalance(hosts, "balance", tiers=TIERS, max_moves=1, history=[])
    first = base["moves"][0]["vm"]
    slow = [{"operation": "drain", "vm": first, "source": "hv1", "destination": "hv2", "outcome": "migrated",
             "duration_s": 600.0, "data_bytes": 50 * 2**30} for _attempt in range(3)]
    plan = plan_rebalance(hosts, "balance", tiers=TIERS, max_moves=1, history=slow)
    assert plan["moves"][0]["vm"] != first


def test_consolidate_empties_the_cheapest_host_and_lists_it():
    hosts = lab()
    plan = plan_rebalance(hosts, "consolidate", tiers=TIERS, max_moves=10)
    assert plan["ok"] and plan["hosts_emptied"] == ["hv3"] and "hv3" in plan["hosts_left_empty"]
    assert {m["vm"] for m in plan["moves"]} == {"mon1", "cache1"}
    after = apply(hosts, plan)[0]
    assert not next(h for h in after if h["name"] == "hv3")["vms"]
    refusals = {r["host"]: r["reasons"] for r in plan["refusals"]}
    assert any("db3" in reason for reason in refusals["hv2"])


def test_consolidate_refuses_with_reasons_when_capacity_does_not_allow():
    hosts = lab()
    # Every host nearly full (declared sizes just above what its VMs hold): no host's VMs fit on the others.
    overrides = {"hv1": {"memory_mib": 42 * 1024}, "hv2": {"memory_mib": 18 * 1024},
                 "hv3": {"memory_mib": 7 * 1024}}
    plan = plan_rebalance(hosts, "consolidate", tiers=TIERS, host_overrides=overrides, move_critical=True,
                          max_moves=20)
    assert not plan["ok"] and plan["moves"] == [] and plan["hosts_emptied"] == []
    reasons = " ".join(r for refusal in plan["refusals"] for r in refusal["reasons"])
    assert "fits no other host in use" in reasons and "memory" in reasons
    assert any(line.startswith("consolidate: NOT OK") for line in plan["summary_lines"])


def test_consolidate_respects_max_moves():
    plan = plan_rebalance(lab(), "consolidate", tiers=TIERS, max_moves=1)
    assert plan["moves"] == []
    assert any("max_moves leaves 1" in r for refusal in plan["refusals"] for r in refusal["reasons"])


@pytest.mark.parametrize("options, message", [
    ({"strategy": "spread"}, "strategy must be one of"),
    ({"threshold": -0.1}, "threshold"),
    ({"min_improvement": 0}, "min_improvement"),
    ({"min_improvement": 1.5}, "min_improvement"),
    ({"max_moves": 0}, "max_moves"),
    ({"max_moves": 2.5}, "max_moves"),
    ({"cpu_weight": 2}, "cpu_weight"),
    ({"min_load": "lots"}, "min_load"),
    ({"loads": {"hv1": {}}}, "loads must be a list"),
    ({"tiers": {"gold": ["db*"]}}, "unknown tiers"),
    ({"exclude_hosts": ["hv9"]}, "exclude_hosts names hosts"),
])
def test_bad_input_is_refused(options, message):
    with pytest.raises(HvmaintError, match=message):
        plan_rebalance(lab(), **options)


def test_coefficient_of_variation():
    assert coefficient_of_variation(3.0, 3.0, 3, 0.0) == 0
    assert coefficient_of_variation(1.0, 1.0, 2, 0.0) == pytest.approx(1.0)
    assert coefficient_of_variation(0.01, 0.0001, 2, 0.02) == 0


# ---------------------------------------------------------------------------------------------------------------
# generated fleets


NETWORKS = ["lan", "dmz", "storage"]


def make_fleet(seed, n_hosts=12, n_vms=80, crowd=0.5):
    """Hosts of differing sizes and networks, a share of the VMs crowded onto the first host."""
    rng = random.Random(seed)
    hosts = []
    for i in range(n_hosts):
        hosts.append({
            "name": "hv%02d" % i, "arch": "x86_64", "libvirt_version": "9.0.0", "hypervisor_version": "7.2.0",
            "cpu": {"count": rng.choice([8, 16, 32])}, "domain_types": ["kvm"], "machine_types": ["pc"],
            "memory_total_mib": rng.choice([32, 64, 128]) * 1024,
            "networks": [{"name": n, "active": True} for n in NETWORKS if n == "lan" or rng.random() < 0.7],
            "bridges": ["br0"], "storage_pools": [], "maintenance": None, "vms": []})
    hosts[-1]["maintenance"] = {"since": "2026-12-01T00:00:00Z", "reason": "x", "by": "y"}
    for j in range(n_vms):
        target = hosts[0] if rng.random() < crowd else hosts[rng.randrange(n_hosts)]
        views = build_host_views([target])
        net = rng.choice([n["name"] for n in target["networks"]])
        memory = rng.choice([512, 1024, 2048, 4096])
        if views[target["name"]].mem_free < memory:
            continue
        metadata = {"tier": rng.choice(["critical", "high", "normal", "normal", "low"])}
        if rng.random() < 0.2:
            metadata["group"] = "g%d" % rng.randrange(5)
        target["vms"].append({
            "name": "vm%03d" % j, "uuid": "00000000-0000-4000-8000-%012d" % j, "state": "running",
            "persistent": True, "domain_type": "kvm", "machine": "pc", "memory_mib": memory,
            "vcpus": rng.choice([1, 2, 4]), "disks": [],
            "nics": [{"type": "network", "network": net, "bridge": None, "mac": "52:54:00:00:%02x:%02x"
                      % (j >> 8, j & 255), "model": "virtio"}],
            "hostdevs": [], "metadata": metadata})
    loads = [{"name": h["name"], "vms": [
        {"name": vm["name"], "uuid": vm["uuid"], "cpu_cores": round(rng.random() * vm["vcpus"], 2),
         "memory_used_mib": round(vm["memory_mib"] * rng.uniform(0.2, 1), 1)} for vm in h["vms"]]} for h in hosts]
    return hosts, loads


def check_rules(hosts, plan, strategy):
    """Every move by the rules, and every destination within capacity and anti-affinity at the end of each phase
    (the moves of a phase run in any order, the phases one after the other)."""
    views = build_host_views(hosts)
    after = {h["name"]: list(h["vms"]) for h in hosts}
    by_vm = {vm["name"]: (h["name"], vm) for h in hosts for vm in h["vms"]}
    at = {name: src for name, (src, _vm) in by_vm.items()}
    for phase in sorted({m.get("phase", 1) for m in plan["moves"]}):
        moves = [m for m in plan["moves"] if m.get("phase", 1) == phase]
        assert not {m["source"] for m in moves} & {m["destination"] for m in moves}
        for move in moves:
            vm = by_vm[move["vm"]][1]
            assert at[move["vm"]] == move["source"]
            dst = views[move["destination"]]
            assert dst.maintenance is None and views[move["source"]].maintenance is None
            assert vm["metadata"]["tier"] != "critical"
            nets = {n["name"] for n in dst.facts["networks"]}
            assert all(nic["network"] in nets for nic in vm["nics"])
            after[move["source"]].remove(vm)
            after[move["destination"]].append(vm)
            at[move["vm"]] = move["destination"]
        for name in {m["destination"] for m in moves}:
            vms, view = after[name], views[name]
            assert sum(vm["memory_mib"] for vm in vms) <= view.mem_capacity
            assert sum(vm["vcpus"] for vm in vms) <= view.vcpu_capacity
            groups = [vm["metadata"].get("group") for vm in vms if vm["metadata"].get("group")]
            moved_in = {m["vm"] for m in moves if m["destination"] == name}
            for vm in vms:
                group = vm["metadata"].get("group")
                if vm["name"] in moved_in and group:
                    assert groups.count(group) == 1, "%s joins a member of %s on %s" % (vm["name"], group, name)
    if strategy == "consolidate":
        for host in plan["hosts_emptied"]:
            assert after[host] == []


@pytest.mark.parametrize("seed", range(12))
def test_generated_fleets_balance_by_the_rules_and_stay_stable(seed):
    hosts, loads = make_fleet(seed)
    plan = plan_rebalance(hosts, "balance", loads=loads, max_moves=6, threshold=0.15)
    check_rules(hosts, plan, "balance")
    assert len(plan["moves"]) <= 6
    steps = sorted(plan["moves"], key=lambda m: m["plan_step"])
    values = [plan["imbalance_before"]["imbalance"]] + [m["imbalance_after"] for m in steps]
    share = 0.1 * min(1.0, 2.0 / len(plan["hosts_after"]))
    assert all(b <= a * (1 - share) + 1e-4 for a, b in zip(values, values[1:]))
    if plan["moves"]:
        assert plan["imbalance_after"]["imbalance"] < plan["imbalance_before"]["imbalance"]
    moved_hosts, moved_loads = apply(hosts, plan, loads)
    again = plan_rebalance(moved_hosts, "balance", loads=moved_loads, max_moves=6, threshold=0.15)
    if "max_moves" not in (plan["stop_reason"] or ""):
        assert again["moves"] == [], (plan["stop_reason"], again["summary_lines"][:3])


@pytest.mark.parametrize("seed", range(8))
def test_generated_fleets_consolidate_by_the_rules(seed):
    hosts, loads = make_fleet(seed, crowd=0.1, n_vms=40)
    plan = plan_rebalance(hosts, "consolidate", loads=loads, max_moves=40)
    check_rules(hosts, plan, "consolidate")
    assert plan["ok"] == bool(plan["hosts_emptied"])
    assert set(plan["hosts_left_empty"]) >= set(plan["hosts_emptied"])
    for refusal in plan["refusals"]:
        assert refusal["reasons"]
