"""The one storage vocabulary (plugins/module_utils/_storage.py): every pool type and file system pinned, and
hypervisor_info's facts, the planner's copy prediction and the engine's copy decision agreeing on each.

The lab test tests/integration/test_storage_agreement.py shows the same agreement for every disk of the lab.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _hypervisor_facts as facts
from ansible_collections.hvmaint.libvirt.plugins.module_utils import _readiness as readiness
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._storage import (
    LOCAL_FS_TYPES,
    LOCAL_POOL_TYPES,
    SHARED_FS_TYPES,
    SHARED_POOL_TYPES,
    classify_disks,
    decide_copy_storage,
    domain_disks,
    fs_type_from_mountinfo,
    local_filesystem_of,
)

DOMAIN_XML = """<domain type='kvm'>
  <name>m-disk1</name>
  <uuid>8c1f0d1e-4c4b-4f3e-9a55-0f3c2b1d9e77</uuid>
  <memory unit='KiB'>98304</memory>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/m-disk1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/mnt/nfs/data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='sda' bus='sata'/><readonly/>
    </disk>
    <disk type='block' device='disk'><source dev='/dev/vg0/lv1'/><target dev='vdd' bus='virtio'/></disk>
  </devices>
</domain>"""


MOUNTINFO = """22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /mnt/nfs rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 22 0:41 / /var/lib/libvirt/images rw - xfs /dev/sdb1 rw
"""


def test_disks_are_read_from_the_domain_xml():
    disks = domain_disks(ET.fromstring(DOMAIN_XML))
    assert [(d["target"], d["type"], d["path"]) for d in disks] == [
        ("vda", "file", "/var/lib/libvirt/images/m-disk1.qcow2"), ("vdb", "file", "/mnt/nfs/data.raw"),
        ("vdc", "network", None), ("sda", "file", "/iso/install.iso"), ("vdd", "block", "/dev/vg0/lv1")]
    assert disks[3]["readonly"] and disks[2]["protocol"] == "rbd"


def test_storage_is_classified_by_pool_then_file_system():
    pools = {"/var/lib/libvirt/images/m-disk1.qcow2": "dir", "/dev/vg0/lv1": "logical"}
    classified = classify_disks(domain_disks(ET.fromstring(DOMAIN_XML)), pool_type_of_path=pools.get,
                                fs_type_of_path=lambda path: fs_type_from_mountinfo(path, MOUNTINFO))
    by_target = {d["target"]: d for d in classified}
    assert by_target["vda"]["shared"] is False and by_target["vda"]["how"] == "storage pool of type dir"
    assert by_target["vdb"]["shared"] is True and by_target["vdb"]["how"] == "on a nfs4 file system"
    assert by_target["vdc"]["shared"] is True
    assert by_target["sda"]["copy"] is False
    assert by_target["vdd"]["shared"] is False
    assert decide_copy_storage("auto", classified, "m-disk1") == (True, ["vda", "vdd"])
    assert decide_copy_storage("never", classified, "m-disk1") == (False, None)
    assert decide_copy_storage("always", classified, "m-disk1") == (True, None)


def test_all_shared_storage_is_not_copied():
    classified = classify_disks(domain_disks(ET.fromstring(DOMAIN_XML))[1:3],
                                fs_type_of_path=lambda path: fs_type_from_mountinfo(path, MOUNTINFO))
    assert decide_copy_storage("auto", classified, "vm") == (False, None)


def test_storage_that_cannot_be_told_is_an_error_in_auto_mode():
    classified = classify_disks(domain_disks(ET.fromstring(DOMAIN_XML))[:1])
    with pytest.raises(HvmaintError) as refused:
        decide_copy_storage("auto", classified, "m-disk1")
    assert "cannot tell whether disk vda" in str(refused.value) and "copy_storage" in str(refused.value)


def test_mountinfo_picks_the_longest_mount_point():
    assert fs_type_from_mountinfo("/var/lib/libvirt/images/a.qcow2", MOUNTINFO) == "xfs"
    assert fs_type_from_mountinfo("/var/lib/other", MOUNTINFO) == "ext4"
    assert fs_type_from_mountinfo("/mnt/nfsx/a", MOUNTINFO) == "ext4"


# ---- one vocabulary: every pool type and file system, as a KVM admin reads them (docs/facts.md) --------------

POOL_TYPES = {
    "netfs": True, "rbd": True, "gluster": True, "iscsi": True, "iscsi-direct": True, "sheepdog": True,
    "vstorage": True, "mpath": True,
    "dir": False, "fs": False, "logical": False, "disk": False, "zfs": False,
    "scsi": None, "weird": None,
}
FS_TYPES = {
    "nfs": True, "nfs4": True, "cifs": True, "smb3": True, "ceph": True, "fuse.ceph": True, "fuse.cephfs": True,
    "glusterfs": True, "fuse.glusterfs": True, "ocfs2": True, "gfs2": True, "lustre": True, "beegfs": True,
    "gpfs": True, "fuse.sshfs": True,
    "ext2": False, "ext3": False, "ext4": False, "xfs": False, "btrfs": False, "zfs": False, "tmpfs": False,
    "overlay": False, "f2fs": False, "jfs": False, "reiserfs": False, "vfat": False,
    "virtiofs": None, "9p": None, "fuse.weird": None,
}


def test_every_pool_type_and_file_system_is_pinned():
    assert SHARED_POOL_TYPES == {t for t, shared in POOL_TYPES.items() if shared is True}
    assert LOCAL_POOL_TYPES == {t for t, shared in POOL_TYPES.items() if shared is False}
    assert SHARED_FS_TYPES == {t for t, shared in FS_TYPES.items() if shared is True}
    assert LOCAL_FS_TYPES == {t for t, shared in FS_TYPES.items() if shared is False}


def vm_xml(disk):
    return ("<domain type='kvm'><name>vm</name><uuid>00000000-0000-0000-0000-000000000001</uuid>"
            "<memory unit='KiB'>131072</memory><vcpu>1</vcpu><devices>%s</devices></domain>" % disk)


FILE_DISK = "<disk type='file' device='disk'><source file='%s'/><target dev='vda' bus='virtio'/></disk>"
VOLUME_DISK = "<disk type='volume' device='disk'><source pool='p' volume='a.qcow2'/><target dev='vda'/></disk>"


def both_views(xml, pool_type=None, fs_type=None):
    """(facts' disk, the engine's classified disk) for the one disk of `xml`, with the same pool and mount."""
    pools = []
    if pool_type:
        pools = [facts.parse_pool("<pool type='%s'><name>p</name><target><path>/pool</path></target></pool>"
                                  % pool_type, False)]
    filesystem_of = (lambda _path: fs_type) if fs_type else None
    facts_disk = facts.parse_domain(xml, pools, filesystem_of)["disks"][0]
    engine_disk = classify_disks(domain_disks(ET.fromstring(xml)),
                                 pool_type_of_path=lambda path: pool_type if path.startswith("/pool/") else None,
                                 pool_type_of_name=lambda name: pool_type if name == "p" else None,
                                 fs_type_of_path=filesystem_of)[0]
    return facts_disk, engine_disk


def copy_views(facts_disk, engine_disk):
    """(the planner's copy prediction, the engine's copy decision) for one disk: copied or not, or None when the
    engine refuses to guess (copy_storage=auto with storage it cannot tell)."""
    predicted = [d["target"] for d in readiness.local_disks({"name": "vm", "disks": [facts_disk]})]
    try:
        copy, targets = decide_copy_storage("auto", [engine_disk], "vm")
    except HvmaintError:
        return predicted, None
    return predicted, (targets or []) if copy else []


@pytest.mark.parametrize("pool_type", sorted(POOL_TYPES))
@pytest.mark.parametrize("disk", [FILE_DISK % "/pool/a.qcow2", VOLUME_DISK], ids=["file", "volume"])
def test_facts_and_engine_agree_on_every_pool_type(pool_type, disk):
    facts_disk, engine_disk = both_views(vm_xml(disk), pool_type=pool_type)
    assert facts_disk["shared"] is engine_disk["shared"] is POOL_TYPES[pool_type]
    predicted, decided = copy_views(facts_disk, engine_disk)
    assert predicted == (["vda"] if POOL_TYPES[pool_type] is False else [])
    assert decided == (None if POOL_TYPES[pool_type] is None else predicted)


@pytest.mark.parametrize("fs_type", sorted(FS_TYPES))
def test_facts_and_engine_agree_on_every_file_system(fs_type):
    facts_disk, engine_disk = both_views(vm_xml(FILE_DISK % "/srv/vms/a.qcow2"), fs_type=fs_type)
    assert facts_disk["shared"] is engine_disk["shared"] is FS_TYPES[fs_type]
    predicted, decided = copy_views(facts_disk, engine_disk)
    assert predicted == (["vda"] if FS_TYPES[fs_type] is False else [])
    assert decided == (None if FS_TYPES[fs_type] is None else predicted)


def test_a_pool_that_cannot_be_told_defers_to_the_file_system():
    facts_disk, engine_disk = both_views(vm_xml(FILE_DISK % "/pool/a.qcow2"), pool_type="scsi", fs_type="nfs4")
    assert facts_disk["shared"] is engine_disk["shared"] is True


def test_read_only_and_shareable_disks_are_predicted_as_the_engine_decides():
    readonly = FILE_DISK.replace("<target", "<readonly/><target") % "/pool/a.iso"
    facts_disk, engine_disk = both_views(vm_xml(readonly), pool_type="dir")
    # Where it lives is still reported; but libvirt never copies a read-only disk, so neither is one predicted.
    assert facts_disk["shared"] is False
    assert copy_views(facts_disk, engine_disk) == ([], [])
    shareable = FILE_DISK.replace("<target", "<shareable/><target") % "/pool/a.raw"
    facts_disk, engine_disk = both_views(vm_xml(shareable), pool_type="dir")
    assert facts_disk["shared"] is engine_disk["shared"] is True
    assert copy_views(facts_disk, engine_disk) == ([], [])


def test_the_mount_table_is_read_in_either_format(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nnas:/vms /srv/vms nfs4 rw 0 0\n")
    assert local_filesystem_of("/srv/vms/a.qcow2", str(mounts)) == "nfs4"
    assert local_filesystem_of("/var/lib/x", str(mounts)) == "ext4"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert local_filesystem_of("/mnt/nfs/a.raw", str(mountinfo)) == "nfs4"
    assert local_filesystem_of("/nonexistent/a", str(tmp_path / "missing")) is None
