"""Facts parsing on XML recorded from the lab (and one hand-written domain for devices the lab lacks)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _hypervisor_facts as facts
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "libvirt")


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


@pytest.fixture
def pools():
    return [facts.parse_pool(fixture("pool-default.xml"), True, [2, 1000, 400, 600])]


def test_capabilities_give_host_cpu_topology_and_machines():
    caps = facts.parse_capabilities(fixture("hv1-capabilities.xml"))
    assert caps["arch"] == "x86_64"
    assert caps["cpu"]["vendor"] == "AMD"
    assert caps["cpu"]["model"]
    assert "avx2" in caps["cpu"]["features"]
    assert caps["cpu"]["capabilities_xml"].startswith("<cpu>")
    assert {"kvm", "qemu"} <= set(caps["domain_types"])
    # Both the alias and the versioned machine type are known, so a VM defined with either can be matched.
    assert "pc" in caps["machine_types"] and "pc-i440fx-7.2" in caps["machine_types"]
    assert caps["numa_cells"] and caps["numa_cells"][0]["cpus"]


def test_domain_capabilities_give_host_model_cpu():
    xml = facts.parse_domain_capabilities(fixture("hv1-domcapabilities-kvm.xml"))
    assert xml.startswith('<cpu mode="custom" match="exact">')
    assert "EPYC" in xml


def test_virtualization_extension_is_read_from_features():
    assert facts.virtualization_extension(["avx", "vmx"], None) == "vmx"
    assert facts.virtualization_extension(["avx"], "<cpu><feature policy='require' name='svm'/></cpu>") == "svm"
    assert facts.virtualization_extension(["avx"], "<cpu><feature policy='disable' name='svm'/></cpu>") is None


def test_running_vm_with_local_qcow2_disk(pools):
    vm = facts.parse_domain(fixture("disk1-running.xml"), pools)
    assert vm["name"] == "disk1"
    assert vm["memory_mib"] == 96 and vm["vcpus"] == 1
    assert vm["machine"].startswith("pc-i440fx")
    disk = vm["disks"][0]
    assert disk == {"target": "vda", "bus": "virtio", "device": "disk", "type": "file",
                    "path": "/var/lib/libvirt/images/disk1.qcow2", "format": "qcow2", "pool": "default",
                    "shared": False, "readonly": False, "size_bytes": None}
    nic = vm["nics"][0]
    assert nic["network"] == "lan" and nic["bridge"] == "br0" and nic["mac"].startswith("52:54:00:")
    assert vm["cpu"]["model"] == "qemu64"
    assert {"name": "svm", "policy": "disable"} in vm["cpu"]["features"]
    assert vm["hostdevs"] == [] and vm["metadata"] == {}


def test_passthrough_devices_network_disk_and_metadata(pools):
    vm = facts.parse_domain(fixture("passthrough-vm.xml"), pools)
    assert vm["memory_mib"] == 8192
    assert vm["cpu"]["mode"] == "host-passthrough" and vm["cpu"]["model"] is None
    rbd, cdrom = vm["disks"]
    assert rbd["type"] == "network" and rbd["shared"] is True and rbd["path"] == "rbd:vms/gpu1-root"
    # A file outside every pool, with no way to look at the file system: unknown, not guessed.
    assert cdrom["shared"] is None and cdrom["readonly"] is True
    # The GPU and the SR-IOV NIC are both devices that pin the VM to its host.
    assert vm["hostdevs"] == [{"type": "pci", "mode": "subsystem", "address": "0000:65:00.0"},
                              {"type": "pci", "mode": "interface", "address": "0000:3b:02.1"}]
    assert vm["nics"][1] == {"type": "direct", "network": None, "bridge": None, "device": "eno2",
                             "mac": "52:54:00:6d:90:03", "model": "virtio"}
    assert vm["metadata"]["home"] == "hv1" and vm["metadata"]["tier"] == "critical"
    assert [m["to"] for m in vm["metadata"]["moves"]] == ["hv2", "hv1"]
    assert vm["metadata"]["moves"][0]["downtime_ms"] == 41


def test_file_system_decides_sharing_outside_pools(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nnas:/vms /srv/vms nfs4 rw 0 0\n")
    assert facts.local_filesystem_of("/srv/vms/a.qcow2", str(mounts)) == "nfs4"
    assert facts.local_filesystem_of("/var/lib/x", str(mounts)) == "ext4"
    xml = fixture("passthrough-vm.xml").replace("/srv/iso/installer.iso", "/srv/vms/a.qcow2")
    vm = facts.parse_domain(xml, [], lambda path: facts.local_filesystem_of(path, str(mounts)))
    assert vm["disks"][1]["shared"] is True


def test_pool_types_are_classified():
    assert facts.parse_pool("<pool type='netfs'><name>n</name></pool>", False)["shared"] is True
    assert facts.parse_pool("<pool type='dir'><name>d</name></pool>", False)["shared"] is False
    assert facts.parse_pool("<pool type='weird'><name>w</name></pool>", False)["shared"] is None


def test_network_forward_modes():
    net = facts.parse_network(fixture("net-lan.xml"), True, True)
    assert net == {"name": "lan", "active": True, "autostart": True, "bridge": "br0", "forward_mode": "bridge"}
    assert facts.parse_network("<network><name>i</name></network>", False, False)["forward_mode"] == "isolated"


def test_local_uri_detection():
    assert facts.is_local_uri("qemu:///system")
    assert not facts.is_local_uri("qemu+tls://hv1/system")
    assert not facts.is_local_uri("qemu+ssh://root@hv1/system")


def test_bad_xml_is_a_clear_error():
    with pytest.raises(HvmaintError, match="domain XML is not valid XML"):
        facts.parse_domain("<domain><name>x</name>")
    with pytest.raises(HvmaintError, match="expected a <domain>"):
        facts.parse_domain("<network/>")
