# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Storage: which disks of a VM live on host-local storage, and whether a migration copies them (pure, with the
look-ups passed in).
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

# Storage pool types whose volumes every host of a cluster sees (network or SAN storage). The list matches what
# hypervisor_info reports as shared (docs/facts.md).
SHARED_POOL_TYPES = frozenset(("netfs", "rbd", "gluster", "iscsi", "iscsi-direct", "sheepdog", "vstorage", "mpath",
                               "scsi"))
LOCAL_POOL_TYPES = frozenset(("dir", "fs", "logical", "disk", "zfs"))
# File systems that several hosts mount at once.
SHARED_FS_TYPES = frozenset(("nfs", "nfs4", "cifs", "smb3", "ceph", "fuse.ceph", "fuse.cephfs", "glusterfs",
                             "fuse.glusterfs", "ocfs2", "gfs2", "lustre", "beegfs", "gpfs", "fuse.sshfs"))
LOCAL_FS_TYPES = frozenset(("ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "f2fs", "jfs",
                            "reiserfs", "vfat"))


def domain_disks(domain_root):
    """The disks of a <domain> element: target, device, type, path (file/block), pool+volume, protocol, readonly."""
    disks = []
    for disk in domain_root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        entry = {
            "target": target.get("dev") if target is not None else None,
            "device": disk.get("device", "disk"),
            "type": disk.get("type", "file"),
            "path": None, "pool": None, "volume": None, "protocol": None,
            "readonly": disk.find("readonly") is not None,
            "shareable": disk.find("shareable") is not None,
        }
        if source is not None:
            entry["path"] = source.get("file") or source.get("dev")
            entry["pool"] = source.get("pool")
            entry["volume"] = source.get("volume")
            entry["protocol"] = source.get("protocol")
        disks.append(entry)
    return disks


# How classify_disks marks a disk libvirt never copies (read-only, CD-ROM, floppy, no source).
NOT_COPIED = "not copied (read-only or empty)"


def writable_disks(classified):
    """The classified disks a migration would have to carry: all but read-only and empty ones."""
    return [d for d in classified if d["how"] != NOT_COPIED]


def classify_disks(disks, pool_type_of_path=None, pool_type_of_name=None, fs_type_of_path=None):
    """Mark each disk shared True/False/None (None: cannot be told). Read-only and empty disks are not copied by
    libvirt, so they are marked copy=False. The look-ups return a type name or None."""
    result = []
    for disk in disks:
        entry = dict(disk, shared=None, how=None, copy=False)
        empty = not (disk["path"] or disk["volume"] or disk["protocol"])
        if disk["readonly"] or disk["device"] in ("cdrom", "floppy") or empty:
            entry.update(shared=None, how=NOT_COPIED)
            result.append(entry)
            continue
        if disk["shareable"]:
            entry.update(shared=True, how="marked <shareable/>")
        elif disk["type"] == "network":
            entry.update(shared=True, how="network disk (%s)" % disk["protocol"])
        else:
            pool_type = None
            if disk["type"] == "volume" and pool_type_of_name and disk["pool"]:
                pool_type = pool_type_of_name(disk["pool"])
            elif disk["path"] and pool_type_of_path:
                pool_type = pool_type_of_path(disk["path"])
            if pool_type in SHARED_POOL_TYPES:
                entry.update(shared=True, how="storage pool of type %s" % pool_type)
            elif pool_type in LOCAL_POOL_TYPES:
                entry.update(shared=False, how="storage pool of type %s" % pool_type)
            elif disk["path"] and fs_type_of_path:
                fs_type = fs_type_of_path(disk["path"])
                if fs_type in SHARED_FS_TYPES:
                    entry.update(shared=True, how="on a %s file system" % fs_type)
                elif fs_type in LOCAL_FS_TYPES:
                    entry.update(shared=False, how="on a local %s file system" % fs_type)
        entry["copy"] = entry["shared"] is False
        result.append(entry)
    return result


def decide_copy_storage(mode, classified, vm_name):
    """Return (copy, targets): whether to copy storage and which disk targets (None: let libvirt pick)."""
    writable = writable_disks(classified)
    if mode == "never":
        return False, None
    if mode == "always":
        return bool(writable), None
    unknown = [d for d in writable if d["shared"] is None]
    if unknown:
        raise HvmaintError(
            "%s: cannot tell whether disk %s (%s) is on shared or host-local storage; set copy_storage to always"
            " (copy it) or never (it is shared)" % (vm_name, unknown[0]["target"], unknown[0]["path"]))
    local = [d["target"] for d in writable if d["shared"] is False]
    if not local:
        return False, None
    # Copying only the local disks keeps libvirt from writing a shared disk onto itself.
    return True, local


def fs_type_from_mountinfo(path, mountinfo_text):
    """The file system type of the mount holding `path`, from /proc/self/mountinfo text."""
    best, best_type = "", None
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fs_type = line.split(" - ", 1)[1].split()[0]
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type
