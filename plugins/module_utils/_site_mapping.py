# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Site mapping (pure): how a VM defined at one site is defined at another, whose networks, bridges and storage
pools have other names.

A mapping names, for each kind, the target site's name of each source site's name, with a default for names it
does not list: {networks: {lan: lan-west}, default_network: null, bridges: {}, default_bridge: null,
pools: {default: west-images}, default_pool: null}. The same mapping serves the planner (a VM's facts as they
would be at the target site, map_vm_facts) and the engine (the domain XML the target host is given,
rewrite_domain_xml), so what is checked is what is defined. Failback uses reverse_mapping.

The domain XML is untrusted input (anyone who can edit the domain writes it): it is parsed without a DOCTYPE (no
entity can expand), only the source elements of interfaces and disks are rewritten, and a new disk path is
always the target pool's own directory plus the old file name, which must lie directly in a source pool.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._storage import carried

KINDS = ("networks", "bridges", "pools")
DEFAULT_KEYS = {"networks": "default_network", "bridges": "default_bridge", "pools": "default_pool"}
_FORBIDDEN = set("/\\'\"<>&\0\n\t ")


def _name_problem(value):
    if not isinstance(value, str) or not value or set(value) & _FORBIDDEN or value in (".", ".."):
        return "%r is not a libvirt network, bridge or pool name" % (value,)
    return None


def normalize_mapping(mapping):
    """The mapping with every key present; raises HvmaintError naming every problem at once."""
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise HvmaintError("site_mapping must be a dictionary (networks, bridges, pools and their defaults)")
    problems = []
    unknown = sorted(set(mapping) - set(KINDS) - set(DEFAULT_KEYS.values()))
    if unknown:
        problems.append("site_mapping has unknown keys: %s (known: %s)" % (
            ", ".join(map(str, unknown)), ", ".join(KINDS + tuple(DEFAULT_KEYS.values()))))
    result = {}
    for kind in KINDS:
        table = mapping.get(kind) or {}
        if not isinstance(table, dict):
            problems.append("site_mapping.%s must map source names to target names" % kind)
            table = {}
        for source, target in table.items():
            for value in (source, target):
                problem = _name_problem(value)
                if problem:
                    problems.append("site_mapping.%s: %s" % (kind, problem))
        result[kind] = dict(table)
        default = mapping.get(DEFAULT_KEYS[kind])
        if default is not None:
            problem = _name_problem(default)
            if problem:
                problems.append("site_mapping.%s: %s" % (DEFAULT_KEYS[kind], problem))
        result[DEFAULT_KEYS[kind]] = default
    if problems:
        raise HvmaintError("invalid site_mapping: " + "; ".join(problems))
    return result


def reverse_mapping(mapping):
    """The mapping back (for failback): each target name to its source name. A target name that two source
    names map to cannot be reversed; defaults are not reversed (a name that was mapped by default has no one
    source name to go back to, so the failback must list it)."""
    mapping = normalize_mapping(mapping)
    result, problems = {}, []
    for kind in KINDS:
        back = {}
        for source, target in sorted(mapping[kind].items()):
            if target in back:
                problems.append("%s %s and %s both map to %s" % (kind, back[target], source, target))
            back[target] = source
        result[kind] = back
        result[DEFAULT_KEYS[kind]] = None
    if problems:
        raise HvmaintError("site_mapping cannot be reversed for failback: " + "; ".join(problems)
                           + " (give the failback its own mapping)")
    return result


def map_name(mapping, kind, name):
    """The target site's name for `name` (a network, bridge or pool), or None when the mapping has none."""
    if name in mapping[kind]:
        return mapping[kind][name]
    return mapping[DEFAULT_KEYS[kind]]


def _norm_dir(path):
    return posixpath.normpath(path).rstrip("/") or "/"


def pool_of_path(path, pool_paths):
    """(pool name, file name) when `path` lies directly in one of pool_paths ({name: directory}), else None."""
    if not path or not path.startswith("/"):
        return None
    directory, file_name = posixpath.split(posixpath.normpath(path))
    if not file_name or file_name in (".", ".."):
        return None
    for name, pool_dir in sorted(pool_paths.items()):
        if pool_dir and _norm_dir(pool_dir) == directory:
            return name, file_name
    return None


def _disk_label(disk):
    return "disk %s (%s)" % (disk.get("target") or "?", disk.get("path") or "%s/%s" % (
        disk.get("pool") or "?", disk.get("volume") or "?"))


def plan_disk(disk, mapping, source_pool_paths):
    """What a site move does with one disk (a disk_source entry or a disk of the facts): a dict with `copy`
    (bool), `pool` (target pool name or None), `file_name`, and `problem` (text, or None)."""
    entry = {"copy": False, "pool": None, "file_name": None, "problem": None}
    if disk.get("type") == "network" or disk.get("protocol"):
        return entry  # reached over the network by address: the same from every site
    if not (disk.get("path") or disk.get("volume")):
        return entry  # an empty drive
    if disk.get("type") == "volume":
        # hypervisor_info's facts give a volume's path as pool/volume.
        source_pool = disk.get("pool")
        file_name = disk.get("volume") or (disk.get("path") or "").partition("/")[2] or None
        if not source_pool or not file_name:
            entry["problem"] = "%s names no pool and volume" % _disk_label(disk)
            return entry
    else:
        if disk.get("type") == "block":
            entry["problem"] = "%s is a block device of its host: it cannot be mapped to another site" % (
                _disk_label(disk))
            return entry
        found = pool_of_path(disk.get("path"), source_pool_paths)
        if found is None:
            entry["problem"] = ("%s lies in no storage pool of its host: the target site's place for it cannot be"
                                " told (put it in a pool)" % _disk_label(disk))
            return entry
        source_pool, file_name = found
    target_pool = map_name(mapping, "pools", source_pool)
    if target_pool is None:
        entry["problem"] = ("%s is in pool %s, which site_mapping does not map (give pools.%s or default_pool)"
                            % (_disk_label(disk), source_pool, source_pool))
        return entry
    entry.update(pool=target_pool, file_name=file_name)
    if not carried(disk):
        return entry  # read-only or removable: not copied, the target site must hold its own copy
    if disk.get("shareable"):
        entry["problem"] = ("%s is <shareable/> (written by several VMs): copying it to another site would split"
                            " it" % _disk_label(disk))
        return entry
    entry["copy"] = True
    return entry


def map_vm_facts(vm, mapping, source_pool_paths):
    """(facts, problems): a VM of hypervisor_info's facts as it would be at the target site (mapped networks and
    bridges; each copied disk a volume of the mapped pool, host-local there), so that the planner's own rules
    (networks, pools and their space, capacity, CPU) judge it against the target site's hosts."""
    vm = dict(vm)
    problems = []
    nics = []
    for nic in vm.get("nics") or []:
        nic = dict(nic)
        # A running VM's facts show a network NIC as the bridge it got there (type bridge, with the network's
        # name): it is the network that is mapped, and the target host gives it a bridge of its own.
        kind = "network" if nic.get("network") else nic.get("type")
        if kind in ("network", "bridge"):
            key = "networks" if kind == "network" else "bridges"
            target = map_name(mapping, key, nic.get(kind))
            if target is None:
                problems.append("NIC %s of %s uses %s %s, which site_mapping does not map (give %s.%s or %s)" % (
                    nic.get("mac") or "?", vm.get("name"), kind, nic.get(kind), key, nic.get(kind),
                    DEFAULT_KEYS[key]))
            elif kind == "network":
                nic.update(type="network", network=target, bridge=None)
            else:
                nic["bridge"] = target
        else:
            problems.append("NIC %s of %s is of type %s: only network and bridge NICs can be mapped to another"
                            " site" % (nic.get("mac") or "?", vm.get("name"), kind))
        nics.append(nic)
    vm["nics"] = nics
    disks = []
    for disk in vm.get("disks") or []:
        decision = plan_disk(disk, mapping, source_pool_paths)
        if decision["problem"]:
            problems.append("%s: %s" % (vm.get("name"), decision["problem"]))
            disks.append(dict(disk))
        elif decision["pool"] is None:
            disks.append(dict(disk))
        else:
            # A volume of the target pool: the planner checks that pool by name on each target host, and its
            # space when the disk is copied.
            disks.append(dict(disk, type="volume", path=None, pool=decision["pool"], volume=decision["file_name"],
                              shared=False if decision["copy"] else True))
    vm["disks"] = disks
    return vm, problems


def _reject_doctype(xml_text):
    if "<!DOCTYPE" in xml_text.upper() or "<!ENTITY" in xml_text.upper():
        raise HvmaintError("the domain XML holds a DOCTYPE or an ENTITY declaration: refusing to read it")


def rewrite_domain_xml(xml_text, mapping, source_pool_paths, target_pool_paths):
    """The domain XML for the target site, and what changed.

    Returns (xml_text, changes, copied): changes are human-readable lines, copied the targets (vda...) of the
    disks the move must copy. Raises HvmaintError naming every problem (an unmapped network, bridge or pool, a
    disk outside any pool, a target pool the target host lacks) before anything moves."""
    _reject_doctype(xml_text)
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise HvmaintError("the domain XML cannot be read: %s" % exc) from exc
    if root.tag != "domain":
        raise HvmaintError("not a domain XML (root element %s)" % root.tag)
    name = root.findtext("name") or "?"
    problems, changes, copied_targets = [], [], []
    for iface in root.findall("./devices/interface"):
        kind = iface.get("type")
        source = iface.find("source")
        mac = iface.find("mac")
        label = "NIC %s" % (mac.get("address") if mac is not None else "?")
        if source is not None and source.get("network"):
            # A running VM's live XML shows a network NIC as the bridge it got (type='bridge' with both names).
            kind = "network"
            iface.set("type", "network")
        if kind not in ("network", "bridge") or source is None:
            problems.append("%s of %s is of type %s: only network and bridge NICs can be mapped to another site"
                            % (label, name, kind))
            continue
        key = "networks" if kind == "network" else "bridges"
        old = source.get(kind)
        new = map_name(mapping, key, old)
        if new is None:
            problems.append("%s of %s uses %s %s, which site_mapping does not map (give %s.%s or %s)"
                            % (label, name, kind, old, key, old, DEFAULT_KEYS[key]))
            continue
        # The network's port and bridge on the source host mean nothing at the target: libvirt allocates new ones.
        for attribute in list(source.attrib):
            if attribute not in (kind, "portgroup"):
                del source.attrib[attribute]
        target = iface.find("target")
        if target is not None and (target.get("dev") or "").startswith("vnet"):
            iface.remove(target)
        source.set(kind, new)
        if new != old:
            changes.append("%s: %s %s -> %s" % (label, kind, old, new))
    for disk_el in root.findall("./devices/disk"):
        source = disk_el.find("source")
        target = disk_el.find("target")
        disk = {
            "target": target.get("dev") if target is not None else None,
            "device": disk_el.get("device", "disk"), "type": disk_el.get("type", "file"),
            "path": None, "pool": None, "volume": None, "protocol": None,
            "readonly": disk_el.find("readonly") is not None, "shareable": disk_el.find("shareable") is not None,
        }
        if source is not None:
            disk.update(path=source.get("file") or source.get("dev"), pool=source.get("pool"),
                        volume=source.get("volume"), protocol=source.get("protocol"))
        decision = plan_disk(disk, mapping, source_pool_paths)
        if decision["problem"]:
            problems.append("%s: %s" % (name, decision["problem"]))
            continue
        if decision["pool"] is None:
            continue
        if decision["copy"]:
            copied_targets.append(disk["target"])
        old = disk["path"] or "%s/%s" % (disk["pool"], disk["volume"])
        if disk["type"] == "volume":
            source.set("pool", decision["pool"])
            new = "%s/%s" % (decision["pool"], decision["file_name"])
        else:
            pool_dir = target_pool_paths.get(decision["pool"])
            if not pool_dir:
                problems.append("%s: %s goes to pool %s, which the target host does not have (or has no directory)"
                                % (name, _disk_label(disk), decision["pool"]))
                continue
            new = posixpath.join(_norm_dir(pool_dir), decision["file_name"])
            source.set("file", new)
        # A copied disk arrives whole (libvirt copies the full chain into one image): no backing chain there.
        for backing in disk_el.findall("backingStore"):
            disk_el.remove(backing)
        if new != old:
            changes.append("disk %s: %s -> %s%s" % (disk["target"], old, new,
                                                    " (copied)" if decision["copy"] else " (not copied)"))
    if problems:
        raise HvmaintError("; ".join(problems))
    return ET.tostring(root, encoding="unicode"), changes, copied_targets
