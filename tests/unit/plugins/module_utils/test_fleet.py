"""The fleet's facts as the controller holds them (plugins/module_utils/_fleet.py) and what the plan hands on
(plugins/module_utils/_plan_output.py), on the lab's recorded facts."""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet import Fleet, FleetError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._plan_output import add_live_migrate_moves, drain_lines

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")


@pytest.fixture
def host_vars():
    with open(FIXTURE, encoding="utf-8") as handle:
        facts = json.load(handle)
    return {
        "kvm1": {"fleet_facts__info": {"changed": False, "hypervisor": facts[0]}, "hvmaint_memory_mib": "4096",
                 "hvmaint_migration_uri": "qemu+tls://kvm1.example.com/system"},
        "kvm2": {"fleet_facts__info": {"changed": False, "hypervisor": facts[1]}, "hvmaint_vcpus": 8},
        "kvm3": {"fleet_facts__info": {"changed": False, "hypervisor": facts[2]}},
        "down": {"fleet_facts__info": {"unreachable": True, "msg": "ssh: connect to host down port 22: refused"}},
        "broken": {"fleet_facts__info": {"failed": True, "msg": "cannot connect to libvirt at qemu:///system"}},
        "new": {},
    }


def test_facts_held_once_and_hosts_left_out_named(host_vars):
    fleet = Fleet(list(host_vars), host_vars.__getitem__)
    assert [h["name"] for h in fleet.hypervisors] == ["hv1", "hv2", "hv3"]
    # The very dictionaries registered on each host, not copies.
    assert fleet.hypervisors[0] is host_vars["kvm1"]["fleet_facts__info"]["hypervisor"]
    assert fleet.get("names") == {"kvm1": "hv1", "kvm2": "hv2", "kvm3": "hv3"}
    assert fleet.get("left_out") == [
        {"host": "down", "error": "unreachable: ssh: connect to host down port 22: refused"},
        {"host": "broken", "error": "its facts could not be read: cannot connect to libvirt at qemu:///system"},
        {"host": "new", "error": "its facts were not read in this play"}]
    assert fleet.get("host_overrides") == {"hv1": {"memory_mib": 4096}, "hv2": {"vcpus": 8}, "hv3": {}}
    assert fleet.get("migration_uris") == {"hv1": "qemu+tls://kvm1.example.com/system"}
    assert fleet.get("summary_lines")[0] == "3 hypervisors read"
    with pytest.raises(FleetError, match="down is not among the hosts whose facts were read .unreachable"):
        fleet.libvirt_name("down")


def test_two_hosts_with_one_libvirt_name_are_refused(host_vars):
    host_vars["kvm3"]["fleet_facts__info"]["hypervisor"] = copy.deepcopy(
        host_vars["kvm1"]["fleet_facts__info"]["hypervisor"])
    with pytest.raises(FleetError, match="kvm1 and kvm3 report the same host name to libvirt .hv1."):
        Fleet(["kvm1", "kvm2", "kvm3"], host_vars.__getitem__)


def test_cpu_check_gets_every_host_but_only_the_vms_concerned(host_vars):
    fleet = Fleet(["kvm1", "kvm2", "kvm3"], host_vars.__getitem__)
    drain = fleet.get("cpus", vms_of=["kvm1"])
    assert [(h["name"], len(h["vms"])) for h in drain] == [("hv1", 10), ("hv2", 0), ("hv3", 0)]
    assert set(drain[0]) == {"name", "cpu", "vms"} and set(drain[0]["vms"][0]) == {"name", "domain_type", "cpu"}
    # Only the definition cpu_compat compares with (host-model where the facts have it): half the arguments.
    assert list(drain[0]["cpu"]) == ["host_model_xml"] and drain[0]["cpu"]["host_model_xml"].startswith("<cpu")
    home = fleet.get("hypervisors", vms_homed_on="kvm2")
    assert {vm["metadata"]["home"] for host in home for vm in host["vms"]} == {"hv2"}
    # Trimming never changes the facts held on the hosts.
    assert len(host_vars["kvm2"]["fleet_facts__info"]["hypervisor"]["vms"]) == 4
    assert len(host_vars["kvm1"]["fleet_facts__info"]["hypervisor"]["vms"]) == 10


def test_plan_moves_are_live_migrate_moves():
    plan = {"moves": [{"vm": "web1", "destination": "hv2", "tier": "high", "source": "hv1"},
                      {"vm": "db1", "destination": "hv3", "tier": "critical", "source": "hv1"}],
            "waves": [{"wave": 1, "moves": [{"vm": "db1", "destination": "hv3", "tier": "critical"}]}]}
    add_live_migrate_moves(plan, {"hv2": "qemu+tls://hv2.example.com/system"})
    assert plan["live_migrate_moves"] == [
        {"name": "web1", "destination": "hv2", "destination_uri": "qemu+tls://hv2.example.com/system"},
        {"name": "db1", "destination": "hv3", "destination_uri": None}]
    assert plan["waves"][0]["live_migrate_moves"] == [{"name": "db1", "destination": "hv3", "destination_uri": None}]
    assert drain_lines(plan["moves"]) == ["web1 -> hv2 (high)", "db1 -> hv3 (critical)"]
    assert drain_lines([]) == ["nothing to move"]
