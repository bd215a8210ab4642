# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Pre-flight: every VM of a list is looked up and what will happen to it is decided, before anything moves."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import state_name
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, libvirt, unknown_vms
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import (
    _lookup,
    _memory_bytes,
    _pool_type,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import parse_libvirt_uri
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import ALREADY_THERE
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_mapping import rewrite_domain_xml
from ansible_collections.hvmaint.libvirt.plugins.module_utils._storage import (
    NOT_COPIED,
    classify_disks,
    decide_copy_storage,
    domain_disks,
    local_filesystem_of,
    writable_disks,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import read_domain_metadata


class Plan:
    """One VM of the list after pre-flight: what will happen to it."""

    def __init__(self, name):
        self.name = name
        self.uuid = None
        self.dom = None
        self.action = None        # move | already_there
        self.offline = False      # a shut-off VM: its definition moves, nothing runs
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.copy_storage = False
        self.migrate_disks = None
        self.inactive_xml = None
        self.metadata = {}
        self.destination_defined = False
        self.notes = []
        # A move to another site (site_mapping): the definitions the destination is given, rewritten for its
        # networks and pools, and the source's copies of the disks the move copies ({target, path}).
        self.destination_xml = None
        self.persistent_xml = None
        self.source_copies = []


class Preflight:
    """The pre-flight half of a Migrator (mixed into it): needs its connections (sconn, dconn), source,
    destination and policy."""

    def preflight(self, names):
        """Look every VM up and decide what happens to it; raise HvmaintError before anything moves."""
        refuse_duplicates(names)
        return [plan for _migrator, plan in plan_moves([(self, name) for name in names])]

    def _plan(self, name):
        plan = Plan(name)
        dom = _lookup(self.sconn, name=name)
        if dom is None:
            there = _lookup(self.dconn, name=name)
            if there is not None and (there.isActive() or (self.policy.shutoff_vms == "move"
                                                           and there.isPersistent())):
                plan.uuid, plan.action = there.UUIDString(), ALREADY_THERE
                return plan
            raise unknown_vms([name], self.source, [d.name() for d in self.sconn.listAllDomains(0)])
        plan.dom, plan.uuid = dom, dom.UUIDString()
        state = dom.state()[0]
        plan.offline = state == libvirt.VIR_DOMAIN_SHUTOFF and not dom.isActive()
        if plan.offline and self.policy.shutoff_vms != "move":
            raise HvmaintError("%s is shut off on %s: live migration moves running VMs only (shutoff_vms=move"
                               " moves its definition offline)" % (name, self.source))
        if not plan.offline and state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED,
                                              libvirt.VIR_DOMAIN_BLOCKED):
            raise HvmaintError("%s is not running on %s (state %s): live migration moves running VMs only"
                               % (name, self.source, state_name(state)))
        if not dom.isPersistent():
            raise HvmaintError("%s is transient on %s: it has no definition to move" % (name, self.source))
        if plan.offline and dom.hasManagedSaveImage(0):
            # Its memory is saved in a file of this host: moving the definition alone would leave that file
            # behind (lost to the VM) and start the VM afresh elsewhere.
            raise HvmaintError("%s is shut off on %s with a managed save image (suspended to disk, as a drain"
                               " parks a VM): an offline migration would orphan its saved memory; start it"
                               " here (return_host does) or remove the image (virsh managedsave-remove) first"
                               % (name, self.source))
        by_uuid = _lookup(self.dconn, uuid=plan.uuid)
        by_name = _lookup(self.dconn, name=name)
        if by_uuid is not None and by_uuid.isActive():
            if plan.offline:
                raise HvmaintError("%s is shut off on %s but runs on %s: refusing to touch it (the definition on %s"
                                   " is stale)" % (name, self.source, self.destination, self.source))
            raise HvmaintError("%s runs on both %s and %s: refusing to touch it" % (name, self.source,
                                                                                    self.destination))
        if by_name is not None and by_name.UUIDString() != plan.uuid:
            raise HvmaintError("%s already defines a different VM named %s (UUID %s)"
                               % (self.destination, name, by_name.UUIDString()))
        if by_uuid is not None and by_uuid.name() != name:
            raise HvmaintError("%s already defines VM %s with the UUID of %s" % (self.destination, by_uuid.name(),
                                                                                 name))
        if by_uuid is not None:
            plan.destination_defined = True
            plan.notes.append("a stale shut-off definition of %s on %s is replaced" % (name, self.destination))
        plan.inactive_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = ET.fromstring(plan.inactive_xml)
        plan.memory_bytes = _memory_bytes(root)
        if self.site_mapping is not None:
            self._plan_site(plan, root)
        elif plan.offline:
            self._plan_offline_storage(plan, root)
        else:
            self._plan_storage(plan, root)
        # Also read for the escalation its last migration needed (policy.start_from_history).
        plan.metadata = read_domain_metadata(dom) if self.record_history or self.policy.from_history else {}
        plan.action = "move"
        return plan

    def _plan_site(self, plan, root):
        """A move to another site: both definitions rewritten for the destination's networks and pools (the
        mapping's copy decision replaces copy_storage: every writable disk in a mapped pool is copied, since the
        other site reaches none of this site's storage)."""
        source_pools, target_pools = pool_paths(self.sconn), pool_paths(self.dconn)
        plan.persistent_xml, changes, copied = rewrite_domain_xml(plan.inactive_xml, self.site_mapping,
                                                                  source_pools, target_pools)
        if plan.offline:
            if copied:
                raise HvmaintError("%s is shut off and its disks %s must be copied to the other site: an offline"
                                   " migration moves the definition only; start the VM to move it live with its"
                                   " storage" % (plan.name, ", ".join(copied)))
        else:
            live_xml = plan.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            plan.destination_xml, _changes, copied = rewrite_domain_xml(live_xml, self.site_mapping, source_pools,
                                                                        target_pools)
        plan.notes.extend("at %s: %s" % (self.destination, change) for change in changes)
        if copied:
            plan.copy_storage, plan.migrate_disks = True, copied
            disks = {d["target"]: d for d in domain_disks(root)}
            for target in copied:
                plan.source_copies.append({"target": target, "path": disks[target]["path"] or "%s/%s" % (
                    disks[target]["pool"], disks[target]["volume"])})
                try:
                    plan.disk_bytes += plan.dom.blockInfo(target)[0]
                except libvirt.libvirtError:
                    pass
            plan.notes.append("copies disks %s to the other site" % ", ".join(copied))

    def _classify_disks(self, disks):
        """classify_disks with this source's storage pools, and its mounts when the module runs on the source."""
        local = parse_libvirt_uri(self.source_uri, "uri")[1] is None
        return classify_disks(
            disks, pool_type_of_path=self._pool_type_of_path, pool_type_of_name=self._pool_type_of_name,
            fs_type_of_path=local_filesystem_of if local else None)

    def _plan_storage(self, plan, root):
        disks = domain_disks(root)
        if not disks or self.policy.copy_storage == "never":
            return
        classified = self._classify_disks(disks)
        plan.copy_storage, plan.migrate_disks = decide_copy_storage(self.policy.copy_storage, classified, plan.name)
        if plan.copy_storage:
            for disk in classified:
                if disk["copy"] or (plan.migrate_disks is None and disk["how"] != NOT_COPIED):
                    plan.source_copies.append({"target": disk["target"],
                                               "path": disk["path"] or "%s/%s" % (disk["pool"], disk["volume"])})
                    try:
                        plan.disk_bytes += plan.dom.blockInfo(disk["target"])[0]
                    except libvirt.libvirtError:
                        pass
            plan.notes.append("copies disks %s (%s)" % (
                ", ".join(plan.migrate_disks or [d["target"] for d in classified if d["copy"]]),
                "; ".join("%s: %s" % (d["target"], d["how"]) for d in classified if d["how"])))

    def _plan_offline_storage(self, plan, root):
        """An offline migration moves the definition only: every disk it writes must be reachable from the
        destination already (copy_storage=never says so for disks that cannot be told)."""
        classified = self._classify_disks(domain_disks(root))
        local = [d for d in writable_disks(classified) if d["shared"] is False
                 or (d["shared"] is None and self.policy.copy_storage != "never")]
        if local:
            disk = local[0]
            where = ("on host-local storage (%s)" % disk["how"] if disk["shared"] is False
                     else "on storage not known to be shared")
            raise HvmaintError("%s is shut off and its disk %s (%s) is %s: an offline migration moves the"
                               " definition only, not the disk; start the VM to migrate it live with its storage,"
                               " or set copy_storage=never if the disk is shared" % (
                                   plan.name, disk["target"], disk["path"] or disk["volume"], where))
        plan.notes.append("shut off: its definition moves offline")

    def _pool_type_of_path(self, path):
        try:
            vol = self.sconn.storageVolLookupByPath(path)
            return _pool_type(vol.storagePoolLookupByVolume())
        except libvirt.libvirtError:
            return None

    def _pool_type_of_name(self, name):
        try:
            return _pool_type(self.sconn.storagePoolLookupByName(name))
        except libvirt.libvirtError:
            return None


def pool_paths(conn):
    """{pool name: target directory} of a host's storage pools (pools without a directory left out)."""
    paths = {}
    for pool in conn.listAllStoragePools(0):
        try:
            path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
        except (libvirt.libvirtError, ET.ParseError):
            continue
        if path:
            paths[pool.name()] = path
    return paths


def refuse_duplicates(names):
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise HvmaintError("VMs listed more than once: %s" % ", ".join(twice))


def plan_moves(entries):
    """[(migrator, name)] -> [(migrator, plan)]; every VM's problem at once, before anything moves."""
    plans, problems = [], []
    for migrator, name in entries:
        try:
            plans.append((migrator, migrator._plan(name)))
        except HvmaintError as exc:
            problems.append(str(exc))
    if problems:
        raise HvmaintError("nothing was moved: " + "; ".join(problems))
    return plans
