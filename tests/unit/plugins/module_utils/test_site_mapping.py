"""Site mapping (plugins/module_utils/_site_mapping.py): a VM's definition rewritten for another site's networks,
bridges and pools, from XML recorded on the lab (and hostile variants of it), and its facts as the planner sees
them at the target site."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_mapping import (
    map_vm_facts,
    normalize_mapping,
    reverse_mapping,
    rewrite_domain_xml,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "libvirt")
MAPPING = {"networks": {"lan": "lan-west"}, "pools": {"default": "west-images"}}
SOURCE_POOLS = {"default": "/var/lib/libvirt/images"}
TARGET_POOLS = {"west-images": "/var/lib/libvirt/west-images"}


def recorded(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def rewrite(xml, mapping=None, source=None, target=None):
    return rewrite_domain_xml(xml, normalize_mapping(MAPPING if mapping is None else mapping),
                              SOURCE_POOLS if source is None else source, TARGET_POOLS if target is None else target)


def test_recorded_running_vm_gets_target_network_and_pool_path():
    xml, changes, copied = rewrite(recorded("disk1-running.xml"))
    root = ET.fromstring(xml)
    iface = root.find("./devices/interface")
    # The live XML shows the bridge the NIC got on the source; the target gets the mapped network, no port.
    assert iface.get("type") == "network"
    assert iface.find("source").attrib == {"network": "lan-west"}
    assert iface.find("target") is None
    disk = root.find("./devices/disk")
    assert disk.find("source").get("file") == "/var/lib/libvirt/west-images/disk1.qcow2"
    assert disk.find("backingStore") is None
    assert copied == ["vda"]
    assert "NIC 52:54:00:cb:de:70: network lan -> lan-west" in changes
    assert any("disk vda: /var/lib/libvirt/images/disk1.qcow2 -> /var/lib/libvirt/west-images/disk1.qcow2"
               " (copied)" in line for line in changes)
    # Everything else is left as it was (ABI: CPU, devices, addresses).
    assert root.find("cpu").find("model").text == "qemu64"
    assert root.find("./devices/disk/address").get("slot") == "0x03"


def test_default_names_map_what_the_tables_do_not_list():
    xml, _changes, _copied = rewrite(recorded("work1-running.xml"),
                                     {"default_network": "lan-west", "default_pool": "west-images"})
    assert ET.fromstring(xml).find("./devices/interface/source").get("network") == "lan-west"


def test_unmapped_network_and_pool_are_named_before_anything_moves():
    with pytest.raises(HvmaintError) as exc:
        rewrite(recorded("disk1-running.xml"), {})
    text = str(exc.value)
    assert "uses network lan, which site_mapping does not map (give networks.lan or default_network)" in text
    assert "in pool default, which site_mapping does not map" in text


def test_target_pool_missing_on_the_target_host():
    with pytest.raises(HvmaintError, match="goes to pool west-images, which the target host does not have"):
        rewrite(recorded("disk1-running.xml"), target={})


DISK_XML = """<domain type='kvm'><name>%(name)s</name><devices>%(disk)s
<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface></devices></domain>"""


def domain(disk, name="vm1"):
    return DISK_XML % {"name": name, "disk": disk}


BRIDGES = dict(MAPPING, bridges={"br0": "br-west"})


def test_disk_outside_any_pool_is_refused():
    xml = domain("<disk type='file' device='disk'><source file='/srv/vm1.img'/><target dev='vda'/></disk>")
    with pytest.raises(HvmaintError, match="lies in no storage pool"):
        rewrite(xml, BRIDGES)


def test_path_that_climbs_out_of_a_pool_is_not_in_it():
    xml = domain("<disk type='file' device='disk'><source file='/var/lib/libvirt/images/../../../etc/shadow'/>"
                 "<target dev='vda'/></disk>")
    with pytest.raises(HvmaintError, match="lies in no storage pool"):
        rewrite(xml, BRIDGES)


def test_block_device_and_shareable_disk_are_refused():
    block = domain("<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vda'/></disk>")
    with pytest.raises(HvmaintError, match="block device of its host"):
        rewrite(block, BRIDGES)
    shared = domain("<disk type='file' device='disk'><source file='/var/lib/libvirt/images/s.img'/>"
                    "<target dev='vdb'/><shareable/></disk>")
    with pytest.raises(HvmaintError, match="shareable"):
        rewrite(shared, BRIDGES)


def test_read_only_disk_is_mapped_but_not_copied_and_network_disk_left_alone():
    xml = domain("<disk type='file' device='cdrom'><source file='/var/lib/libvirt/images/boot.iso'/>"
                 "<target dev='sda'/><readonly/></disk>"
                 "<disk type='network' device='disk'><source protocol='rbd' name='pool/vm1'/><target dev='vdb'/>"
                 "</disk><disk type='volume' device='disk'><source pool='default' volume='vm1-data'/>"
                 "<target dev='vdc'/></disk>")
    new, changes, copied = rewrite(xml, BRIDGES)
    root = ET.fromstring(new)
    disks = root.findall("./devices/disk")
    assert disks[0].find("source").get("file") == "/var/lib/libvirt/west-images/boot.iso"
    assert disks[1].find("source").attrib == {"protocol": "rbd", "name": "pool/vm1"}
    assert disks[2].find("source").attrib == {"pool": "west-images", "volume": "vm1-data"}
    assert copied == ["vdc"]
    assert "disk sda: /var/lib/libvirt/images/boot.iso -> /var/lib/libvirt/west-images/boot.iso (not copied)" \
        in changes
    assert root.find("./devices/interface/source").get("bridge") == "br-west"


def test_entities_are_refused_and_direct_nics_named():
    bomb = ("<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
            "<domain><name>&b;</name></domain>")
    with pytest.raises(HvmaintError, match="DOCTYPE"):
        rewrite(bomb)
    direct = ("<domain><name>vm2</name><devices><interface type='direct'><mac address='52:54:00:00:00:02'/>"
              "<source dev='eth0' mode='bridge'/></interface></devices></domain>")
    with pytest.raises(HvmaintError, match="NIC 52:54:00:00:00:02 of vm2 is of type direct"):
        rewrite(direct)
    with pytest.raises(HvmaintError, match="cannot be read"):
        rewrite("<domain><name>x</name>")


def test_mapping_is_validated_and_reversed():
    with pytest.raises(HvmaintError) as exc:
        normalize_mapping({"networks": {"lan": "../x"}, "pool": {}})
    assert "unknown keys: pool" in str(exc.value) and "'../x' is not a libvirt" in str(exc.value)
    back = reverse_mapping(dict(MAPPING, default_network="lan-west"))
    assert back["networks"] == {"lan-west": "lan"} and back["pools"] == {"west-images": "default"}
    assert back["default_network"] is None
    with pytest.raises(HvmaintError, match="networks a and b both map to c"):
        reverse_mapping({"networks": {"a": "c", "b": "c"}})


def test_facts_at_the_target_site_for_the_planner():
    vm = {"name": "disk1", "nics": [{"type": "network", "network": "lan", "mac": "m"}],
          "disks": [{"target": "vda", "device": "disk", "type": "file", "path": "/var/lib/libvirt/images/disk1.qcow2",
                     "pool": "default", "shared": False, "readonly": False, "size_bytes": 33554432},
                    {"target": "sda", "device": "cdrom", "type": "file", "path": "/var/lib/libvirt/images/b.iso",
                     "pool": "default", "shared": False, "readonly": True, "size_bytes": None}]}
    mapped, problems = map_vm_facts(vm, normalize_mapping(MAPPING), SOURCE_POOLS)
    assert problems == []
    assert mapped["nics"][0]["network"] == "lan-west"
    assert mapped["disks"][0]["pool"] == "west-images" and mapped["disks"][0]["shared"] is False
    assert mapped["disks"][0]["type"] == "volume" and mapped["disks"][0]["size_bytes"] == 33554432
    # A read-only disk is not copied: no pool space is asked for it (the facts say shared, nothing to copy).
    assert mapped["disks"][1]["shared"] is True
    assert vm["nics"][0]["network"] == "lan", "the source facts are left as they were"
    _mapped, problems = map_vm_facts(vm, normalize_mapping({}), SOURCE_POOLS)
    assert len(problems) == 3


def test_facts_of_a_running_vm_map_its_network_not_the_bridge_it_got():
    # hypervisor_info reads the live XML: a network NIC shows as type bridge with the network's name.
    vm = {"name": "s-work1", "nics": [{"type": "bridge", "network": "lan", "bridge": "br-vm", "mac": "m"}],
          "disks": []}
    mapped, problems = map_vm_facts(vm, normalize_mapping(MAPPING), SOURCE_POOLS)
    assert problems == []
    assert mapped["nics"][0] == {"type": "network", "network": "lan-west", "bridge": None, "mac": "m"}
