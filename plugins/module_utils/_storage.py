# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Storage, the collection's one vocabulary for it: which storage every host of a cluster reaches, where each disk
of a VM lives, which disks a migration copies, and the mount table that tells file systems apart.

hypervisor_info's facts (`shared` on pools and disks), migration_readiness and evacuation_plan (the copy they
predict) and live_migrate's engine (the copy it makes) all classify with the functions here, so that what is
planned is what happens. docs/facts.md explains each choice to users.
"""

from __future__ import annotations

import os

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

# Storage pool types whose volumes every host of a cluster sees: network storage, and multipath devices (the
# several paths of a SAN's LUNs).
SHARED_POOL_TYPES = frozenset(("netfs", "rbd", "gluster", "iscsi", "iscsi-direct", "sheepdog", "vstorage", "mpath"))
# Pool types on one host's own disks.
LOCAL_POOL_TYPES = frozenset(("dir", "fs", "logical", "disk", "zfs"))
# Neither: a scsi pool is one host adapter, whose LUNs are local disks (scsi_host) or a SAN's (fc_host, NPIV), so
# a scsi pool (like any type not listed) is "cannot be told" and copy_storage must say.

# File systems that several hosts mount at once.
SHARED_FS_TYPES = frozenset(("nfs", "nfs4", "cifs", "smb3", "ceph", "fuse.ceph", "fuse.cephfs", "glusterfs",
                             "fuse.glusterfs", "ocfs2", "gfs2", "lustre", "beegfs", "gpfs", "fuse.sshfs"))
# File systems on one host's own disks (or memory).
LOCAL_FS_TYPES = frozenset(("ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "f2fs", "jfs",
                            "reiserfs", "vfat"))
# Neither: virtiofs and 9p are how a guest sees a directory of its host; on a hypervisor they mean the hypervisor
# is itself a VM, and whether its peers see the same directory cannot be told from here. Nor can any file system
# not listed.


def pool_type_is_shared(pool_type):
    """True (every host reaches it), False (host-local) or None (cannot be told) for a storage pool type."""
    return True if pool_type in SHARED_POOL_TYPES else False if pool_type in LOCAL_POOL_TYPES else None


def fs_type_is_shared(fs_type):
    """True, False or None, as pool_type_is_shared, for a file system type."""
    return True if fs_type in SHARED_FS_TYPES else False if fs_type in LOCAL_FS_TYPES else None


# ---- disks -----------------------------------------------------------------------------------------------------


def disk_source(disk):
    """One <disk> element: target, device, type, path (file/block), pool+volume, protocol, readonly, shareable."""
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
    return entry


def domain_disks(domain_root):
    """The disks of a <domain> element (disk_source of each)."""
    return [disk_source(disk) for disk in domain_root.findall("./devices/disk")]


def carried(disk):
    """Whether a migration carries the disk at all: libvirt copies no read-only disk, CD-ROM, floppy or empty
    drive. `disk` is a disk_source entry or a disk of hypervisor_info's facts."""
    has_source = disk.get("path") or disk.get("volume") or disk.get("protocol")
    return bool(has_source) and not disk.get("readonly") and disk.get("device") not in ("cdrom", "floppy")


def copied(disk):
    """Whether copy_storage=auto copies the disk: carried, and on host-local storage (`shared` False)."""
    return carried(disk) and disk.get("shared") is False


def where_stored(disk, pool_type_of_path=None, pool_type_of_name=None, fs_type_of_path=None):
    """(shared, how) for a disk_source entry: shared True, False or None (cannot be told), and how that was told
    (None when it was not). The look-ups return a type name or None: first the storage pool, then the file system."""
    if disk["shareable"]:
        return True, "marked <shareable/>"
    if disk["type"] == "network":
        return True, "network disk (%s)" % disk["protocol"]
    pool_type = None
    if disk["type"] == "volume" and pool_type_of_name and disk["pool"]:
        pool_type = pool_type_of_name(disk["pool"])
    elif disk["path"] and pool_type_of_path:
        pool_type = pool_type_of_path(disk["path"])
    shared = pool_type_is_shared(pool_type)
    if shared is not None:
        return shared, "storage pool of type %s" % pool_type
    if disk["path"] and fs_type_of_path:
        fs_type = fs_type_of_path(disk["path"])
        shared = fs_type_is_shared(fs_type)
        if shared is not None:
            return shared, ("on a %s file system" if shared else "on a local %s file system") % fs_type
    return None, None


# How classify_disks marks a disk libvirt never copies (read-only, CD-ROM, floppy, no source).
NOT_COPIED = "not copied (read-only or empty)"


def writable_disks(classified):
    """The classified disks a migration would have to carry: all but read-only and empty ones."""
    return [d for d in classified if d["how"] != NOT_COPIED]


def classify_disks(disks, pool_type_of_path=None, pool_type_of_name=None, fs_type_of_path=None):
    """Mark each disk shared True/False/None (None: cannot be told). Read-only and empty disks are not copied by
    libvirt, so they are marked copy=False. The look-ups are where_stored's."""
    result = []
    for disk in disks:
        entry = dict(disk, shared=None, how=None, copy=False)
        if not carried(disk):
            entry.update(shared=None, how=NOT_COPIED)
        else:
            shared, how = where_stored(disk, pool_type_of_path, pool_type_of_name, fs_type_of_path)
            entry.update(shared=shared, how=how, copy=shared is False)
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
    local = [d["target"] for d in writable if copied(d)]
    if not local:
        return False, None
    # Copying only the local disks keeps libvirt from writing a shared disk onto itself.
    return True, local


# ---- the mount table -------------------------------------------------------------------------------------------


def fs_type_from_mountinfo(path, mountinfo_text):
    """The file system type of the mount holding `path`, from the text of /proc/self/mountinfo (or, line by line,
    of /proc/mounts)."""
    best, best_type = "", None
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if " - " in line and len(fields) >= 5:
            mount_point, fs_type = fields[4], line.split(" - ", 1)[1].split()[0]
        elif " - " not in line and len(fields) >= 3:
            mount_point, fs_type = fields[1], fields[2]
        else:
            continue
        mount_point = mount_point.replace("\\040", " ")
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def local_filesystem_of(path, mounts_file="/proc/self/mountinfo"):
    """File system type of the mount holding `path` on this machine (symbolic links followed), or None when it
    cannot be told."""
    try:
        with open(mounts_file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    return fs_type_from_mountinfo(os.path.realpath(path), text)
