"""Migration readiness, judged on the three-host lab facts (tests/unit/fixtures/facts/lab3.json).

hv1 (64 GiB, under maintenance, being drained), hv2 (48 GiB, has every bridge), hv3 (32 GiB, older QEMU and
libvirt, lacks bridge br-app and machine type pc-q35-8.2).
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import version_tuple
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness_report import assess

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")


def lab():
    with open(FACTS) as f:
        return json.load(f)


def host(hosts, name):
    return next(h for h in hosts if h["name"] == name)


def vm_of(hosts, host_name, vm_name):
    return next(v for v in host(hosts, host_name)["vms"] if v["name"] == vm_name)


def pair(result, vm, dst):
    return next(p for p in result["pairs"] if p["vm"] == vm and p["destination"] == dst)


def summary(result, vm):
    return next(s for s in result["vm_summaries"] if s["vm"] == vm)


def codes(issues):
    return [i["code"] for i in issues]


def test_every_vm_of_the_source_is_judged_against_every_other_host():
    result = assess(lab(), "hv1")
    assert {s["vm"] for s in result["vm_summaries"]} == {
        "batch1", "db1", "db2", "dns1", "gpu1", "local1", "old1", "paused1", "web1", "web2"}
    assert {p["destination"] for p in result["pairs"]} == {"hv2", "hv3"}
    assert len(result["pairs"]) == 20
    assert summary(result, "db1") == {
        "vm": "db1", "uuid": vm_of(lab(), "hv1", "db1")["uuid"], "source": "hv1", "state": "running",
        "memory_mib": 8192, "vcpus": 4, "candidates": ["hv2", "hv3"], "verdict": "ok", "blocked_by": {},
        "vm_blockers": []}


def test_missing_bridge_blocks_and_names_the_nic_and_bridge():
    result = assess(lab(), "hv1", vms=["web1"])
    blocked = pair(result, "web1", "hv3")
    assert not blocked["migratable"]
    assert codes(blocked["blockers"]) == ["bridge"]
    reason = blocked["blockers"][0]["reason"]
    assert "52:54:00:00:80:01" in reason and "br-app" in reason and "hv3" in reason
    assert pair(result, "web1", "hv2")["migratable"]
    assert summary(result, "web1")["candidates"] == ["hv2"]
    assert summary(result, "web1")["blocked_by"] == {"bridge": ["hv3"]}


def test_libvirt_network_must_exist_and_be_active():
    hosts = lab()
    for net in host(hosts, "hv3")["networks"]:
        net["active"] = False
    host(hosts, "hv2")["networks"] = [n for n in host(hosts, "hv2")["networks"] if n["name"] != "lan"]
    result = assess(hosts, "hv1", vms=["dns1"])
    inactive = pair(result, "dns1", "hv3")["blockers"]
    assert codes(inactive) == ["network"] and "not active" in inactive[0]["reason"]
    assert "virsh net-start lan" in inactive[0]["reason"]
    missing = pair(result, "dns1", "hv2")["blockers"]
    assert codes(missing) == ["network"] and "does not have" in missing[0]["reason"]
    assert "52:54:00:00:53:01" in missing[0]["reason"]
    assert summary(result, "dns1")["verdict"] == "blocked"


def test_machine_type_missing_on_destination_blocks():
    result = assess(lab(), "hv1", vms=["web2"])
    blockers = pair(result, "web2", "hv3")["blockers"]
    assert codes(blockers) == ["machine_type"]
    assert "pc-q35-8.2" in blockers[0]["reason"]


def test_older_qemu_and_libvirt_on_destination_warn():
    result = assess(lab(), "hv1", vms=["db1"])
    to_hv3 = pair(result, "db1", "hv3")
    assert to_hv3["migratable"]
    assert set(codes(to_hv3["warnings"])) == {"qemu_older", "libvirt_older"}
    assert "7.2.0" in " ".join(w["reason"] for w in to_hv3["warnings"])
    assert pair(result, "db1", "hv2")["warnings"] == []


def test_kvm_and_architecture_are_required():
    hosts = lab()
    host(hosts, "hv3")["domain_types"] = ["qemu"]
    host(hosts, "hv2")["arch"] = "aarch64"
    result = assess(hosts, "hv1", vms=["db1"])
    assert "domain_type" in codes(pair(result, "db1", "hv3")["blockers"])
    assert "arch" in codes(pair(result, "db1", "hv2")["blockers"])


def test_passthrough_device_blocks_everywhere():
    result = assess(lab(), "hv1", vms=["gpu1"])
    for dst in ("hv2", "hv3"):
        p = pair(result, "gpu1", dst)
        assert not p["migratable"]
        assert "hostdev" in codes(p["blockers"])
        assert "0000:3b:00.0" in p["blockers"][0]["reason"]
    s = summary(result, "gpu1")
    assert s["verdict"] == "blocked" and s["candidates"] == []
    assert codes(s["vm_blockers"]) == ["hostdev"]


def test_host_local_disk_must_be_copied_into_a_pool():
    result = assess(lab(), "hv1", vms=["local1"])
    p = pair(result, "local1", "hv2")
    assert p["migratable"]
    copy_warning = [w for w in p["warnings"] if w["code"] == "storage_copy"]
    assert len(copy_warning) == 1
    assert "storage must be copied" in copy_warning[0]["reason"]
    assert "about 103 s more at 100 MiB/s" in copy_warning[0]["reason"]  # 10 GiB at 100 MiB/s
    # 2 GiB of memory plus 10 GiB of disk at 100 MiB/s
    assert p["estimated_seconds"] == 123
    # The empty CD-ROM drive of local1 raises nothing.
    assert not [w for w in p["warnings"] if "sda" in w["reason"]]


def test_faster_bandwidth_shortens_the_estimate():
    result = assess(lab(), "hv1", vms=["local1"], bandwidth_mib_s=1000)
    p = pair(result, "local1", "hv2")
    assert p["estimated_seconds"] == 13
    assert "about 11 s more at 1000 MiB/s" in " ".join(w["reason"] for w in p["warnings"])


def test_copied_disk_without_pool_or_with_inactive_pool_blocks():
    hosts = lab()
    host(hosts, "hv2")["storage_pools"] = [p for p in host(hosts, "hv2")["storage_pools"] if p["name"] != "default"]
    for pool in host(hosts, "hv3")["storage_pools"]:
        if pool["name"] == "default":
            pool["active"] = False
    result = assess(hosts, "hv1", vms=["local1"])
    no_pool = pair(result, "local1", "hv2")["blockers"]
    assert codes(no_pool) == ["storage_pool"]
    assert "/var/lib/libvirt/images" in no_pool[0]["reason"] and "no storage pool" in no_pool[0]["reason"]
    inactive = pair(result, "local1", "hv3")["blockers"]
    assert codes(inactive) == ["storage_pool"] and "not active" in inactive[0]["reason"]


def test_read_only_local_disk_needs_no_pool_only_the_same_file_there():
    # libvirt does not copy a read-only disk: asking the destination for a pool for it would block for nothing.
    hosts = lab()
    local1 = vm_of(hosts, "hv1", "local1")
    local1["disks"] = [dict(d, readonly=True) if d.get("path") else d for d in local1["disks"]]
    host(hosts, "hv2")["storage_pools"] = [p for p in host(hosts, "hv2")["storage_pools"] if p["name"] != "default"]
    found = pair(assess(hosts, "hv1", vms=["local1"]), "local1", "hv2")
    assert "storage_pool" not in codes(found["blockers"])
    assert "readonly_not_copied" in codes(found["warnings"])


def test_copied_disk_needs_pool_space():
    hosts = lab()
    for pool in host(hosts, "hv2")["storage_pools"]:
        pool["available_bytes"] = 2 * 2**30
    result = assess(hosts, "hv1", vms=["local1"])
    assert codes(pair(result, "local1", "hv2")["blockers"]) == ["storage_space"]


def test_unknown_sharing_warns():
    hosts = lab()
    vm_of(hosts, "hv1", "db1")["disks"][0]["shared"] = None
    p = pair(assess(hosts, "hv1", vms=["db1"]), "db1", "hv2")
    assert p["migratable"]
    assert codes(p["warnings"]) == ["storage_unknown"]
    assert "cannot tell whether" in p["warnings"][0]["reason"]


def test_memory_room_counts_reserve_overcommit_and_running_vms():
    # hv2: 48 GiB - 1 GiB reserve - 16 GiB of running VMs (its shut-off template does not count) = 31 GiB
    hosts = lab()
    result = assess(hosts, "hv1", vms=["batch1", "dns1"], host_overrides={"hv2": {"memory_mib": 20000}})
    blockers = pair(result, "batch1", "hv2")["blockers"]
    assert codes(blockers) == ["memory"]
    assert "12.0 GiB" in blockers[0]["reason"] and "2.5 GiB" in blockers[0]["reason"]
    assert "host_overrides" in blockers[0]["reason"]
    assert pair(result, "dns1", "hv2")["migratable"]
    # Overcommitting memory makes room again: 20000 * 1.5 - 1024 - 16384 = 12592 MiB.
    result = assess(hosts, "hv1", vms=["batch1"], host_overrides={"hv2": {"memory_mib": 20000}},
                    memory_overcommit=1.5)
    assert pair(result, "batch1", "hv2")["migratable"]
    # A bigger reserve takes it away.
    result = assess(hosts, "hv1", vms=["batch1"], host_overrides={"hv2": {"memory_mib": 20000}},
                    memory_overcommit=1.5, memory_reserve_mib=2048)
    assert codes(pair(result, "batch1", "hv2")["blockers"]) == ["memory"]


def test_vcpus_are_checked_with_their_overcommit():
    # hv3: 8 CPUs, 4 vCPUs in use; batch1 has 8 vCPUs.
    assert pair(assess(lab(), "hv1", vms=["batch1"]), "batch1", "hv3")["migratable"]
    blocked = pair(assess(lab(), "hv1", vms=["batch1"], vcpu_overcommit=1.0), "batch1", "hv3")
    assert codes(blocked["blockers"]) == ["vcpus"]
    assert "needs 8 vCPUs" in blocked["blockers"][0]["reason"]
    overridden = pair(assess(lab(), "hv1", vms=["batch1"], host_overrides={"hv3": {"vcpus": 2}}), "batch1", "hv3")
    assert codes(overridden["blockers"]) == ["vcpus"]


def test_cpu_matrix_blocks_incompatible_pairs():
    matrix = [
        {"guest": "db1", "host": "hv3", "result": "incompatible", "compatible": False,
         "missing_features": ["avx512f"], "reasons": ["host CPU EPYC lacks avx512f"]},
        {"guest": "db1", "host": "hv2", "result": "identical", "compatible": True, "missing_features": [],
         "reasons": []},
    ]
    result = assess(lab(), "hv1", vms=["db1", "dns1"], cpu_matrix=matrix)
    blocked = pair(result, "db1", "hv3")
    assert codes(blocked["blockers"]) == ["cpu"]
    assert "avx512f" in blocked["blockers"][0]["reason"]
    assert pair(result, "db1", "hv2")["migratable"] and pair(result, "db1", "hv2")["notes"] == []
    # A VM the matrix does not cover is not checked, and says so.
    assert "cpu_not_checked" in codes(pair(result, "dns1", "hv2")["warnings"])


def test_cpu_matrix_error_is_a_warning_not_a_blocker():
    matrix = [{"guest": "db1", "host": "hv2", "result": "error", "compatible": False, "missing_features": [],
               "reasons": ["host-passthrough needs an identical host CPU"]}]
    p = pair(assess(lab(), "hv1", vms=["db1"], cpu_matrix=matrix), "db1", "hv2")
    assert p["migratable"]
    assert codes(p["warnings"]) == ["cpu_unknown"]
    assert "host-passthrough" in p["warnings"][0]["reason"]


def test_without_cpu_matrix_cpu_is_a_note_not_a_blocker():
    p = pair(assess(lab(), "hv1", vms=["db1"]), "db1", "hv2")
    assert p["migratable"]
    assert codes(p["notes"]) == ["cpu_not_checked"]
    assert p["notes"][0]["reason"].startswith("CPU not checked")


def test_shutoff_vm_moves_offline_and_needs_no_room():
    hosts = lab()
    vm_of(hosts, "hv1", "old1")["memory_mib"] = 10**6
    result = assess(hosts, "hv1", vms=["old1"])
    s = summary(result, "old1")
    assert s["verdict"] == "offline" and s["candidates"] == ["hv2", "hv3"]
    p = pair(result, "old1", "hv2")
    assert p["mode"] == "offline" and p["estimated_seconds"] == 0
    assert "offline" in codes(p["notes"])
    assert "the definition moves, nothing runs" in " ".join(n["reason"] for n in p["notes"])


def test_shutoff_vm_with_host_local_disk_cannot_move_offline():
    hosts = lab()
    vm_of(hosts, "hv1", "local1")["state"] = "shutoff"
    p = pair(assess(hosts, "hv1", vms=["local1"]), "local1", "hv2")
    assert codes(p["blockers"]) == ["storage_offline"]


def test_paused_vm_migrates_paused():
    result = assess(lab(), "hv1", vms=["paused1"])
    assert summary(result, "paused1")["verdict"] == "ok"
    assert "paused" in codes(pair(result, "paused1", "hv2")["warnings"])


@pytest.mark.parametrize("state, words", [
    ("crashed", "virsh destroy"),
    ("pmsuspended", "dompmwakeup"),
    ("nostate", "stays on hv1"),
    ("shutdown", "once it is shut off"),
])
def test_states_that_cannot_move_say_what_happens_instead(state, words):
    hosts = lab()
    vm_of(hosts, "hv1", "db1")["state"] = state
    result = assess(hosts, "hv1", vms=["db1"])
    s = summary(result, "db1")
    assert s["verdict"] == "blocked"
    assert codes(s["vm_blockers"]) == ["state"]
    assert words in s["vm_blockers"][0]["reason"]
    assert pair(result, "db1", "hv2")["mode"] is None


def test_source_and_hosts_under_maintenance_are_not_candidates():
    result = assess(lab(), "hv1", destinations=["hv1", "hv2"])
    assert result["excluded_destinations"] == [{"host": "hv1", "reason": "hv1 is the source host being drained"}]
    assert {p["destination"] for p in result["pairs"]} == {"hv2"}
    # Draining hv2: hv1 is under maintenance.
    result = assess(lab(), "hv2")
    assert [e["host"] for e in result["excluded_destinations"]] == ["hv1"]
    assert "under maintenance" in result["excluded_destinations"][0]["reason"]
    assert "BIOS update" in result["excluded_destinations"][0]["reason"]
    assert {p["destination"] for p in result["pairs"]} == {"hv3"}


def test_ready_only_when_every_vm_has_somewhere_to_go():
    assert assess(lab(), "hv1", vms=["db1", "old1"])["ready"] is True
    assert assess(lab(), "hv1", vms=["db1", "gpu1"])["ready"] is False


def test_unknown_names_fail_clearly():
    with pytest.raises(HvmaintError, match=r"vms names VMs that are not on hv1: nosuchvm \(VMs on hv1: batch1, db1"):
        assess(lab(), "hv1", vms=["nosuchvm", "db1"])
    with pytest.raises(HvmaintError, match=r"destinations names hosts that are not in hosts: hv9 \(known hosts: hv1"):
        assess(lab(), "hv1", destinations=["hv9"])
    with pytest.raises(HvmaintError, match=r"source hv7 is not in hosts"):
        assess(lab(), "hv7")
    with pytest.raises(HvmaintError, match=r"host_overrides names hosts that are not in hosts: hv5"):
        assess(lab(), "hv1", host_overrides={"hv5": {"memory_mib": 1}})
    with pytest.raises(HvmaintError, match=r"host_overrides.hv2 has unknown keys memory"):
        assess(lab(), "hv1", host_overrides={"hv2": {"memory": 1}})
    with pytest.raises(HvmaintError, match=r"bandwidth_mib_s must be more than zero"):
        assess(lab(), "hv1", bandwidth_mib_s=0)
    hosts = lab()
    hosts.append(copy.deepcopy(hosts[1]))
    with pytest.raises(HvmaintError, match=r"host hv2 appears twice"):
        assess(hosts, "hv1")


def test_summary_table_has_fixed_width_columns():
    result = assess(lab(), "hv1")
    lines = result["summary_lines"]
    assert lines[0].split() == ["VM", "state", "mem", "candidates", "blockers"]
    starts = [lines[0].index(h) for h in ("state", "mem", "candidates", "blockers")]
    rows = lines[2:12]
    assert len(rows) == 10
    for row in rows:
        for start in starts:
            assert row[start - 2:start] == "  " and row[start] != " "
    web1 = next(r for r in rows if r.startswith("web1 "))
    assert "bridge(hv3)" in web1 and "hv2" in web1 and "2.0GiB" in web1
    gpu1 = next(r for r in rows if r.startswith("gpu1 "))
    assert gpu1.rstrip().endswith("hostdev")


def test_version_tuple_reads_real_version_strings():
    assert version_tuple("9.0.0") == (9, 0, 0)
    assert version_tuple("8.2.2-1ubuntu1") == (8, 2, 2)
    assert version_tuple(None) is None
    assert version_tuple("unknown") is None
