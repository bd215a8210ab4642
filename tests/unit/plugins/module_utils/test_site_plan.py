"""Site evacuation and failback plans (plugins/module_utils/_site_plan.py), on facts recorded from the lab
(tests/unit/fixtures/facts/lab3.json) made into two sites: east (hv1, hv2) and a west site (we1, we2) whose
network, bridges and pool have other names."""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_compat
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_plan import (
    plan_site_evacuation,
    plan_site_failback,
)

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")
CPU_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "cpu")
MAPPING = {"networks": {"lan": "lan-west"}, "bridges": {"br0": "br-west", "br-app": "br-west"},
           "pools": {"default": "west-images", "vmstore": "west-store"}}
EAST_VMS = ("dns1", "local1", "web2")


def sites(west_memory_mib=32768):
    with open(FACTS, encoding="utf-8") as handle:
        hosts = {h["name"]: h for h in json.load(handle)}
    east = copy.deepcopy(hosts["hv1"])
    east["maintenance"] = None
    east["vms"] = [vm for vm in east["vms"] if vm["name"] in EAST_VMS]
    west = []
    for name in ("we1", "we2"):
        host = copy.deepcopy(hosts["hv3"])
        host.update(name=name, vms=[], memory_total_mib=west_memory_mib, bridges=["br-west"],
                    networks=[{"name": "lan-west", "active": True, "autostart": True, "bridge": "br-west",
                               "forward_mode": "bridge"}])
        host["storage_pools"] = [dict(host["storage_pools"][0], name="west-images",
                                      path="/var/lib/libvirt/west-images"),
                                 dict(host["storage_pools"][1], name="west-store", path="/mnt/west-store")]
        host["host_uuid"] = "%s-uuid" % name
        # The same QEMU as east (hv3 is older): the tests are about the sites, not versions.
        for key in ("machine_types", "hypervisor_version", "libvirt_version"):
            host[key] = east[key]
        west.append(host)
    return [east] + west


def test_every_vm_of_the_site_is_placed_at_the_other_site_with_its_real_source():
    plan = plan_site_evacuation(sites(), ["hv1"], ["we1", "we2"], MAPPING)
    assert plan["ok"], plan["summary_lines"]
    assert sorted(m["vm"] for m in plan["moves"]) == sorted(EAST_VMS)
    assert {m["source"] for m in plan["moves"]} == {"hv1"}
    assert {m["destination"] for m in plan["moves"]} <= {"we1", "we2"}
    assert plan["site_mapping"]["networks"] == {"lan": "lan-west"}
    assert plan["summary_lines"][0].startswith("drain hv1:")


def test_a_site_without_room_stops_naming_the_reason():
    # Declared sizes (the inventory's) for every host, the source site's too, as the role passes them.
    overrides = {name: {"memory_mib": 2048} for name in ("hv1", "we1", "we2")}
    plan = plan_site_evacuation(sites(), ["hv1"], ["we1", "we2"], MAPPING, host_overrides=overrides)
    assert not plan["ok"] and plan["moves"] == []
    reasons = " ".join(r for u in plan["unplaceable"] for r in u["reasons"])
    assert "needs 2.0 GiB of memory" in reasons or "of memory" in reasons, reasons
    assert {u["source"] for u in plan["unplaceable"]} == {"hv1"}


def test_a_mapped_network_the_other_site_lacks_stops_naming_it():
    mapping = dict(MAPPING, networks={"lan": "lan-nowhere"})
    plan = plan_site_evacuation(sites(), ["hv1"], ["we1", "we2"], mapping)
    assert not plan["ok"]
    dns1 = next(u for u in plan["unplaceable"] if u["vm"] == "dns1")
    assert any("libvirt network lan-nowhere, which we1 does not have" in r for r in dns1["reasons"]), dns1


def test_a_missing_mapped_pool_and_pool_space_are_checked_for_copied_disks():
    facts = sites()
    for host in facts[1:]:
        host["storage_pools"] = [p for p in host["storage_pools"] if p["name"] != "west-images"]
    plan = plan_site_evacuation(facts, ["hv1"], ["we1", "we2"], MAPPING)
    local1 = next(u for u in plan["unplaceable"] if u["vm"] == "local1")
    assert any("no storage pool named west-images" in r for r in local1["reasons"]), local1
    facts = sites()
    for host in facts[1:]:
        host["storage_pools"][0]["available_bytes"] = 1024
    plan = plan_site_evacuation(facts, ["hv1"], ["we1", "we2"], MAPPING)
    local1 = next(u for u in plan["unplaceable"] if u["vm"] == "local1")
    assert any("lack pool space for the copied disks" in r for r in local1["reasons"]), local1


def test_an_incompatible_cpu_at_the_other_site_stops_naming_the_cpu():
    matrix = [{"guest": vm, "host": host, "compatible": vm != "web2", "result": "incompatible" if vm == "web2"
               else "identical", "missing_features": ["avx512f"] if vm == "web2" else []}
              for vm in EAST_VMS for host in ("we1", "we2")]
    plan = plan_site_evacuation(sites(), ["hv1"], ["we1", "we2"], MAPPING, cpu_matrix=matrix)
    web2 = next(u for u in plan["unplaceable"] if u["vm"] == "web2")
    assert any("marks the CPU of every compatible host (2) incompatible" in r for r in web2["reasons"]), web2


def recorded_cpu(cpu, kind):
    with open(os.path.join(CPU_FIXTURES, "x86_64-cpuid-%s-%s.xml" % (cpu, kind)), encoding="utf-8") as handle:
        return handle.read()


def test_a_site_whose_cpus_lack_a_vms_features_stops_naming_them():
    """Recorded CPUs (libvirt's test data): east runs on a Cascade Lake Xeon (Platinum 8268) and web2 has the CPU
    a host-model guest gets there; west's hosts are Haswell Xeons (E5-2650 v3), without AVX-512. The lab cannot
    show this: its hosts share one CPU. The matrix is the cpu_compat module's own, as the role computes it."""
    facts = sites()
    facts[0]["cpu"] = {"capabilities_xml": recorded_cpu("Xeon-Platinum-8268", "host")}
    for vm in facts[0]["vms"]:
        vm["cpu"] = {"xml": recorded_cpu("Xeon-Platinum-8268", "guest") if vm["name"] == "web2" else None}
    for host in facts[1:]:
        host["cpu"] = {"capabilities_xml": recorded_cpu("Xeon-E5-2650-v3", "host")}
    matrix = _cpu_compat.run(hypervisors=facts, cpu_map_dir=os.path.join(CPU_FIXTURES, "cpu_map-11.3.0"))["matrix"]
    plan = plan_site_evacuation(facts, ["hv1"], ["we1", "we2"], MAPPING, cpu_matrix=matrix)
    assert not plan["ok"] and plan["moves"] == []
    assert [u["vm"] for u in plan["unplaceable"]] == ["web2"]
    reasons = " ".join(plan["unplaceable"][0]["reasons"])
    assert "marks the CPU of every compatible host (2) incompatible" in reasons, reasons
    assert "we1 lacks" in reasons and "avx512f" in reasons and "we2 lacks" in reasons, reasons


def test_an_unmapped_network_stops_the_plan_before_placing():
    with pytest.raises(HvmaintError, match="uses network lan, which site_mapping does not map"):
        plan_site_evacuation(sites(), ["hv1"], ["we1", "we2"], dict(MAPPING, networks={}))
    with pytest.raises(HvmaintError, match="hosts in both sites: hv1"):
        plan_site_evacuation(sites(), ["hv1"], ["hv1", "we1"], MAPPING)


def test_a_policy_parks_what_cannot_go_on_its_own_host():
    plan = plan_site_evacuation(sites(west_memory_mib=2048), ["hv1"], ["we1", "we2"], MAPPING,
                                unplaceable_policy={"normal": "shutdown"})
    assert plan["ok"]
    assert {a["host"] for a in plan["actions"]} == {"hv1"}
    assert all("hv1" in a["reason"] and "source site" not in a["reason"] for a in plan["actions"])


def moved_west(vm, home):
    """The VM as it runs at west after the evacuation: home kept in its metadata, mapped network, bridge and pool."""
    vm["metadata"] = dict(vm.get("metadata") or {}, home=home)
    for nic in vm["nics"]:
        nic.update(network="lan-west" if nic.get("network") else None,
                   bridge="br-west" if nic.get("type") == "bridge" else nic.get("bridge"))
    for disk in vm["disks"]:
        if disk.get("path"):
            disk.update(path=disk["path"].replace("/mnt/vmstore", "/mnt/west-store"), pool="west-store")
    return vm


def test_failback_brings_each_vm_home_with_the_mapping_reversed_and_then_nothing():
    facts = sites()
    east, we1 = facts[0], facts[1]
    moved = [moved_west(vm, "hv1") for vm in east["vms"] if vm["name"] != "local1"]
    east["vms"] = [vm for vm in east["vms"] if vm["name"] == "local1"]
    we1["vms"] = moved
    east["maintenance"] = {"since": "2026-12-02T01:00:00Z", "reason": "site evacuation", "by": "ops"}
    mapping = dict(MAPPING, bridges={"br0": "br-west"})
    plan = plan_site_failback(facts, ["we1", "we2"], ["hv1"], mapping)
    assert plan["ok"], plan["summary_lines"]
    assert sorted(m["vm"] for m in plan["moves"]) == ["dns1", "web2"]
    assert {(m["source"], m["destination"]) for m in plan["moves"]} == {("we1", "hv1")}
    assert plan["site_mapping"]["networks"] == {"lan-west": "lan"}
    # Home again: a second failback has nothing to do.
    east["vms"] += moved
    we1["vms"] = []
    assert plan_site_failback(facts, ["we1", "we2"], ["hv1"], mapping)["moves"] == []


def test_failback_fills_every_home_host_at_once_tier_by_tier():
    """Two east hosts, their VMs at west: the returns to both homes share waves (one per tier) instead of one home
    after the other, and a critical VM of the second home goes before the first home's normal VMs."""
    facts = sites()
    hv1, we1, we2 = facts
    hv2 = copy.deepcopy(hv1)
    hv2.update(name="hv2", host_uuid="hv2-uuid", vms=[])
    for vm in copy.deepcopy(hv1["vms"]):
        if vm["name"] == "local1":
            continue
        vm.update(name=vm["name"] + "-b", uuid="b" + vm["uuid"][1:])
        if vm["name"] == "dns1-b":
            vm["metadata"] = dict(vm.get("metadata") or {}, tier="critical")
        hv2["vms"].append(moved_west(vm, "hv2"))
    we1["vms"] = [moved_west(vm, "hv1") for vm in hv1["vms"] if vm["name"] != "local1"] + [hv2["vms"][0]]
    we2["vms"] = hv2["vms"][1:]
    hv1["vms"], hv2["vms"] = [vm for vm in hv1["vms"] if vm["name"] == "local1"], []
    for host in (hv1, hv2):
        host["maintenance"] = {"since": "2026-12-02T01:00:00Z", "reason": "site evacuation", "by": "ops"}
    plan = plan_site_failback(facts + [hv2], ["we1", "we2"], ["hv1", "hv2"], dict(MAPPING, bridges={"br0": "br-west"}),
                              max_parallel_per_source=1)
    assert plan["ok"], plan["summary_lines"]
    assert [(w["tier"], sorted(m["vm"] for m in w["moves"])) for w in plan["waves"]] == [
        ("critical", ["dns1-b"]), ("normal", ["dns1", "web2", "web2-b"])]
    assert {m["vm"]: m["destination"] for m in plan["moves"]} == {
        "dns1-b": "hv2", "dns1": "hv1", "web2": "hv1", "web2-b": "hv2"}
    assert [m["order"] for m in plan["moves"]] == [1, 2, 3, 4]
    # we1 and we2 send side by side, each one at a time: the wave lasts as long as we1's two moves.
    normal = plan["waves"][1]
    assert normal["predicted_seconds"] == sum(m["estimated_seconds"] for m in normal["moves"] if m["source"] == "we1")
    assert plan["predicted_seconds"] == round(sum(w["predicted_seconds"] for w in plan["waves"]), 1)
    assert plan["summary_lines"][0].startswith("return to hv1, hv2: 4 moves in 2 waves"), plan["summary_lines"]
