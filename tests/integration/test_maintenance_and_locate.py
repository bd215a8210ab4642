"""maintenance_mode and vm_locate on the lab: check mode before, the real run, check mode after."""

from __future__ import annotations

import pytest

from conftest import ansible_module_json, clear_maintenance_marks

pytestmark = pytest.mark.lab

HOST = "hv3"


@pytest.fixture
def unmarked(lab):
    clear_maintenance_marks(lab)
    yield lab
    clear_maintenance_marks(lab)


def test_mark_is_idempotent_and_seen_by_hypervisor_info(unmarked, ansible_env):
    lab = unmarked
    args = {"reason": "disk swap", "by": "integration-test"}
    before = ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", args, ansible_env,
                                 check_mode=True, diff=True)
    assert before["changed"] and before["diff"]["before"] == {"maintenance": None}
    assert ansible_module_json(lab, HOST, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)[
        "hypervisor"]["maintenance"] is None, "check mode wrote the mark"

    marked = ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", args, ansible_env)
    assert marked["changed"] and marked["maintenance"]["reason"] == "disk swap"
    assert marked["maintenance"]["host"] == HOST and marked["maintenance"]["by"] == "integration-test"
    seen = ansible_module_json(lab, HOST, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)["hypervisor"]
    assert seen["maintenance"] == marked["maintenance"]

    after = ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", args, ansible_env, check_mode=True)
    assert not after["changed"]
    again = ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", args, ansible_env)
    assert not again["changed"] and again["maintenance"]["since"] == marked["maintenance"]["since"]

    # The mark is the host's own: other hosts do not see it.
    assert ansible_module_json(lab, "hv2", "hvmaint.libvirt.hypervisor_info", {}, ansible_env)[
        "hypervisor"]["maintenance"] is None

    cleared = ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", {"state": "absent"}, ansible_env)
    assert cleared["changed"] and cleared["maintenance"] is None
    assert not ansible_module_json(lab, HOST, "hvmaint.libvirt.maintenance_mode", {"state": "absent"},
                                   ansible_env)["changed"]


def test_vm_locate_agrees_with_virsh(lab, ansible_env):
    facts = [ansible_module_json(lab, host, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)["hypervisor"]
             for host in lab.hosts]
    result = ansible_module_json(lab, "hv1", "hvmaint.libvirt.vm_locate", {"hosts": facts}, ansible_env)
    located = {vm["name"]: vm for vm in result["vms"]}
    for guest in lab.config["guests"]:
        defined, running = lab.locate_guest(guest["name"])
        vm = located[guest["name"]]
        assert vm["running_on"] == running and vm["defined_on"] == defined
        assert vm["problems"] == []
    missing = ansible_module_json(lab, "hv1", "hvmaint.libvirt.vm_locate", {"hosts": facts, "names": ["nope"]},
                                  ansible_env, check=False)
    assert missing["failed"] and "nope" in missing["msg"]
