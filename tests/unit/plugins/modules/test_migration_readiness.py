"""migration_readiness as Ansible runs it: arguments in, JSON out."""

from __future__ import annotations

import json
import os

from ansible_collections.hvmaint.libvirt.plugins.modules.migration_readiness import main

from .utils import run_module

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")


def lab():
    with open(FACTS) as f:
        return json.load(f)


def test_reports_pairs_summaries_and_a_table():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "vms": ["web1", "gpu1"]})
    assert code == 0
    assert result["changed"] is False
    assert result["ready"] is False
    assert {(p["vm"], p["destination"], p["migratable"]) for p in result["pairs"]} == {
        ("web1", "hv2", True), ("web1", "hv3", False), ("gpu1", "hv2", False), ("gpu1", "hv3", False)}
    verdicts = {s["vm"]: s["verdict"] for s in result["vm_summaries"]}
    assert verdicts == {"gpu1": "blocked", "web1": "ok"}
    assert result["summary_lines"][0].split() == ["VM", "state", "mem", "candidates", "blockers"]
    assert result["excluded_destinations"] == []


def test_options_reach_the_checks():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "vms": ["batch1"], "vcpu_overcommit": 1,
                                     "bandwidth_mib_s": 200, "host_overrides": {"hv2": {"memory_mib": 16384}}})
    assert code == 0
    by_dst = {p["destination"]: p for p in result["pairs"]}
    assert [b["code"] for b in by_dst["hv2"]["blockers"]] == ["memory", "vcpus"]
    assert [b["code"] for b in by_dst["hv3"]["blockers"]] == ["vcpus"]
    assert by_dst["hv3"]["estimated_seconds"] == 62  # 12 GiB at 200 MiB/s


def test_unknown_vm_fails_listing_the_known_ones():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "vms": ["web9"]})
    assert code == 1 and result["failed"] is True
    assert result["msg"].startswith("vms names VMs that are not on hv1: web9 (VMs on hv1: batch1, db1, db2, dns1")


def test_unknown_destination_and_source_fail():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "destinations": ["hv4"]})
    assert code == 1 and "destinations names hosts that are not in hosts: hv4" in result["msg"]
    result, code = run_module(main, {"hosts": lab(), "source": "hvX"})
    assert code == 1 and "source hvX is not in hosts (known hosts: hv1, hv2, hv3)" in result["msg"]


def test_source_is_required():
    result, code = run_module(main, {"hosts": lab()})
    assert code == 1 and "source" in result["msg"]


def test_check_mode_gives_the_same_answer():
    args = {"hosts": lab(), "source": "hv1"}
    normal = run_module(main, args)[0]
    checked = run_module(main, dict(args, _ansible_check_mode=True))[0]
    assert checked["pairs"] == normal["pairs"] and checked["changed"] is False
