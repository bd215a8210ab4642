"""hypervisor_info on each lab host agrees with what virsh on that host says."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conftest import ansible_module_json

pytestmark = pytest.mark.lab


def virsh_in_host(lab, host, *args):
    """virsh run inside the host's own namespaces, as an administrator logged in there would run it."""
    return lab.in_host(host, ["virsh", "-q"] + list(args)).stdout


@pytest.fixture(scope="module")
def facts(lab, ansible_env):
    return {host: ansible_module_json(lab, host, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)["hypervisor"]
            for host in lab.hosts}


def test_host_identity_matches_virsh(lab, facts):
    for host, hv in facts.items():
        assert hv["name"] == virsh_in_host(lab, host, "hostname").strip() == host
        caps = ET.fromstring(virsh_in_host(lab, host, "capabilities"))
        assert hv["host_uuid"] == caps.findtext("host/uuid")
        assert hv["cpu"]["model"] == caps.findtext("host/cpu/model")
        assert hv["cpu"]["vendor"] == caps.findtext("host/cpu/vendor")
        version = virsh_in_host(lab, host, "version")
        assert "libvirt %s" % hv["libvirt_version"] in version.replace("library: ", "").replace(
            "Using library: ", "") or hv["libvirt_version"] in version
        assert hv["hypervisor_version"] in version
    # Every lab host has its own identity.
    assert len({hv["host_uuid"] for hv in facts.values()}) == len(facts)


def test_cpu_and_memory_match_virsh(lab, facts):
    for host, hv in facts.items():
        nodeinfo = dict(line.split(":", 1) for line in virsh_in_host(lab, host, "nodeinfo").splitlines() if ":" in line)
        assert hv["cpu"]["count"] == int(nodeinfo["CPU(s)"])
        memstats = {k.strip(): int(v.split()[0]) for k, v in (
            line.split(":", 1) for line in virsh_in_host(lab, host, "nodememstats").splitlines())}
        assert hv["memory_total_mib"] == memstats["total"] // 1024
        # Free memory moves while guests run: agree within 5 %.
        assert abs(hv["memory_free_mib"] - memstats["free"] // 1024) <= max(64, hv["memory_total_mib"] // 20)
        # The lab's hosts expose neither vmx nor svm (nested virtualization is off here), and the module says so.
        host_flags = set(virsh_in_host(lab, host, "capabilities").split('"'))
        expected = "vmx" if "vmx" in host_flags else "svm" if "svm" in host_flags else None
        assert hv["cpu"]["virtualization_extension"] == expected
        assert hv["cpu"]["host_model_xml"].startswith("<cpu mode=")


def test_vms_match_virsh(lab, facts):
    for host, hv in facts.items():
        listed = {}
        for line in virsh_in_host(lab, host, "list", "--all").splitlines():
            fields = line.split()
            listed[fields[1]] = " ".join(fields[2:])
        assert {vm["name"]: vm["state"] for vm in hv["vms"]} == {
            name: state.replace("shut off", "shutoff") for name, state in listed.items()}
        for vm in hv["vms"]:
            dominfo = dict((k.strip(), v.strip()) for k, v in (
                line.split(":", 1) for line in virsh_in_host(lab, host, "dominfo", vm["name"]).splitlines()))
            assert vm["uuid"] == dominfo["UUID"]
            assert vm["vcpus"] == int(dominfo["CPU(s)"])
            assert vm["memory_mib"] == int(dominfo["Max memory"].split()[0]) // 1024
            assert vm["persistent"] == (dominfo["Persistent"] == "yes")
            assert vm["autostart"] == (dominfo["Autostart"] == "enable")
            macs = {line.split()[-1] for line in virsh_in_host(lab, host, "domiflist", vm["name"]).splitlines()}
            assert {nic["mac"] for nic in vm["nics"]} == macs
            blk = {line.split()[0]: line.split()[1] for line in
                   virsh_in_host(lab, host, "domblklist", vm["name"]).splitlines()}
            assert {d["target"]: d["path"] for d in vm["disks"]} == blk


def test_local_disk_is_reported_on_local_storage(lab, facts):
    disk_guests = [g["name"] for g in lab.config["guests"] if g.get("disk_mib")]
    assert disk_guests, "the lab config has a guest with a qcow2 disk"
    found = [vm for hv in facts.values() for vm in hv["vms"] if vm["name"] in disk_guests]
    assert found
    for vm in found:
        disk = vm["disks"][0]
        assert disk["format"] == "qcow2"
        assert disk["pool"] == "default"
        assert disk["shared"] is False
        guest = next(g for g in lab.config["guests"] if g["name"] == vm["name"])
        assert disk["size_bytes"] == guest["disk_mib"] * 1024 * 1024


def test_networks_and_bridges_differ_as_declared(lab, facts):
    for host, hv in facts.items():
        declared = set(lab.hosts[host].get("bridges", [])) | {"br0"}
        assert declared <= set(hv["bridges"])
        names = set(virsh_in_host(lab, host, "net-list", "--all", "--name").split())
        assert {n["name"] for n in hv["networks"]} == names
        pools = set(virsh_in_host(lab, host, "pool-list", "--all", "--name").split())
        assert {p["name"] for p in hv["storage_pools"]} == pools


def test_unknown_vm_is_a_clear_error(lab, ansible_env):
    host = next(iter(lab.hosts))
    result = ansible_module_json(lab, host, "hvmaint.libvirt.hypervisor_info", {"vms": ["no-such-vm"]},
                                 ansible_env, check=False)
    assert result["failed"]
    assert "no VM named no-such-vm" in result["msg"]
