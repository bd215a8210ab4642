# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Migration readiness: what would make moving a VM to a destination fail or harm the VM.

Pure computation from hypervisor facts (docs/facts.md): no libvirt calls, runs on the controller.
The checks are split so that the evacuation planner can reuse them at scale:

* vm_checks: depends on the VM alone (state, passthrough devices);
* destination_checks: the VM's requirements (networks, bridges, machine type, pools, ...) against the
  destination's static facts; each requirement is an atom whose verdict on a host does not depend on the VM,
  so a planner can test each atom once per host;
* capacity_checks: memory, vCPUs and pool space, which change as VMs are placed.

This is the rule book; _readiness_report.py applies it to a source host's VMs (migration_readiness) and renders
the report.
"""

from __future__ import annotations

import math
import posixpath

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._storage import carried, copied

MIB = 1024 * 1024

DEFAULT_MEMORY_OVERCOMMIT = 1.0
DEFAULT_MEMORY_RESERVE_MIB = 1024
DEFAULT_VCPU_OVERCOMMIT = 4.0
DEFAULT_BANDWIDTH_MIB_S = 100.0

# States in which a QEMU process exists and holds the VM's memory on its host: they count as load.
# (Wider than running+paused on purpose: a blocked, guest-suspended, crashed-but-preserved or shutting-down VM
# still occupies its RAM.)
LOAD_STATES = frozenset(("running", "blocked", "paused", "pmsuspended", "crashed", "shutdown"))

# States libvirt can live-migrate.
LIVE_STATES = frozenset(("running", "blocked", "paused"))

# What happens instead, for states that cannot move at all.
_STATE_BLOCKERS = {
    "crashed": "%(vm)s is crashed: libvirt cannot migrate a crashed domain, so it stays on %(src)s;"
               " destroy it (virsh destroy %(vm)s) to make it shut off and movable offline",
    "pmsuspended": "%(vm)s is suspended by its guest (S3/S4): libvirt cannot migrate it, so it stays on %(src)s"
                   " and stops with the host; wake it first (virsh dompmwakeup %(vm)s)",
    "shutdown": "%(vm)s is shutting down: it cannot be migrated now; once it is shut off it can move offline",
}

# NIC types whose host side the facts do not describe.
_NIC_TYPES_UNCHECKED = frozenset(("direct", "ethernet", "vhostuser", "server", "client", "mcast", "udp", "vdpa"))

_REMOVABLE = frozenset(("cdrom", "floppy"))

# --------------------------------------------------------------------------------------------------------------
# small helpers


def fmt_mib(mib):
    """512 MiB, 12.1 GiB: sizes as a person reads them."""
    if mib is None:
        return "?"
    if abs(mib) >= 1024:
        return "%.1f GiB" % (mib / 1024.0)
    return "%d MiB" % int(round(mib))


def fmt_bytes(size):
    return "?" if size is None else fmt_mib(size / float(MIB))


def version_tuple(text):
    """'9.0.0' -> (9, 0, 0); None when it cannot be read."""
    if not text:
        return None
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _issue(code, reason):
    return {"code": code, "reason": reason}


def _positive(name, value, allow_zero=False):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HvmaintError("%s must be a number, got %r" % (name, value)) from None
    if number < 0 or (number == 0 and not allow_zero) or math.isnan(number) or math.isinf(number):
        raise HvmaintError("%s must be %s, got %r" % (name, "zero or more" if allow_zero else "more than zero", value))
    return number


def normalize_capacity_options(memory_overcommit=None, memory_reserve_mib=None, vcpu_overcommit=None,
                               bandwidth_mib_s=None):
    """Fill in defaults and refuse nonsense (a zero bandwidth would make every estimate infinite)."""
    return {
        "memory_overcommit": _positive(
            "memory_overcommit", DEFAULT_MEMORY_OVERCOMMIT if memory_overcommit is None else memory_overcommit),
        "memory_reserve_mib": _positive(
            "memory_reserve_mib", DEFAULT_MEMORY_RESERVE_MIB if memory_reserve_mib is None else memory_reserve_mib,
            allow_zero=True),
        "vcpu_overcommit": _positive(
            "vcpu_overcommit", DEFAULT_VCPU_OVERCOMMIT if vcpu_overcommit is None else vcpu_overcommit),
        "bandwidth_mib_s": _positive(
            "bandwidth_mib_s", DEFAULT_BANDWIDTH_MIB_S if bandwidth_mib_s is None else bandwidth_mib_s),
    }


def known_list(names, limit=30):
    """'a, b, c' for error messages, cut short for fleets of thousands."""
    names = sorted(names)
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += ", ... (%d more)" % (len(names) - limit)
    return text or "(none)"


def host_vms(facts):
    return facts.get("vms") or []


# --------------------------------------------------------------------------------------------------------------
# hosts


class HostView:
    """One host's facts, pre-digested into sets and numbers so each check is a lookup."""

    __slots__ = (
        "name", "facts", "maintenance", "arch", "libvirt_version", "libvirt_version_text", "qemu_version",
        "qemu_version_text", "domain_types", "machine_types", "networks", "bridges", "pools_by_path",
        "pools_by_name", "memory_declared_mib", "memory_declared_from", "mem_capacity", "mem_used", "cpu_count",
        "vcpu_capacity", "vcpu_used", "load_count",
    )

    def __init__(self, facts, override, opts):
        self.facts = facts
        self.name = facts["name"]
        self.maintenance = facts.get("maintenance")
        self.arch = facts.get("arch")
        self.libvirt_version_text = facts.get("libvirt_version")
        self.libvirt_version = version_tuple(self.libvirt_version_text)
        self.qemu_version_text = facts.get("hypervisor_version")
        self.qemu_version = version_tuple(self.qemu_version_text)
        self.domain_types = _opt_set(facts.get("domain_types"))
        self.machine_types = _opt_set(facts.get("machine_types"))
        self.bridges = _opt_set(facts.get("bridges"))
        nets = facts.get("networks")
        self.networks = None if nets is None else {n.get("name"): bool(n.get("active")) for n in nets}
        pools = facts.get("storage_pools")
        if pools is None:
            self.pools_by_path = self.pools_by_name = None
        else:
            self.pools_by_path = {}
            self.pools_by_name = {}
            for pool in pools:
                self.pools_by_name[pool.get("name")] = pool
                if pool.get("path"):
                    self.pools_by_path[_norm_dir(pool["path"])] = pool

        override = override or {}
        declared = override.get("memory_mib")
        self.memory_declared_from = "host_overrides" if declared is not None else "memory_total_mib"
        if declared is None:
            declared = facts.get("memory_total_mib")
        self.memory_declared_mib = declared
        self.mem_capacity = None if declared is None else (
            declared * opts["memory_overcommit"] - opts["memory_reserve_mib"])
        cpus = override.get("vcpus")
        if cpus is None:
            cpus = (facts.get("cpu") or {}).get("count")
        self.cpu_count = cpus
        self.vcpu_capacity = None if cpus is None else cpus * opts["vcpu_overcommit"]

        self.mem_used = 0
        self.vcpu_used = 0
        self.load_count = 0
        for vm in host_vms(facts):
            if vm.get("state") in LOAD_STATES:
                self.mem_used += vm.get("memory_mib") or 0
                self.vcpu_used += vm.get("vcpus") or 0
                self.load_count += 1

    @property
    def mem_free(self):
        return None if self.mem_capacity is None else self.mem_capacity - self.mem_used

    def memory_explanation(self, opts, used=None, count=None):
        """How the free figure was reached, so a surprising number can be checked."""
        used = self.mem_used if used is None else used
        count = self.load_count if count is None else count
        text = "%s %s" % (fmt_mib(self.memory_declared_mib), self.memory_declared_from)
        if opts["memory_overcommit"] != 1:
            text += " x overcommit %g" % opts["memory_overcommit"]
        if opts["memory_reserve_mib"]:
            text += " - %s reserve" % fmt_mib(opts["memory_reserve_mib"])
        return text + " - %s used by %d VM%s" % (fmt_mib(used), count, "" if count == 1 else "s")


def _opt_set(values):
    return None if values is None else frozenset(values)


def _norm_dir(path):
    return posixpath.normpath(path)


def build_host_views(hosts, host_overrides=None, opts=None):
    """HostView per host name, checking the facts and host_overrides a person typed."""
    opts = opts or normalize_capacity_options()
    if not isinstance(hosts, list) or not hosts:
        raise HvmaintError("hosts must be a non-empty list of hypervisor facts (hvmaint.libvirt.hypervisor_info)")
    views = {}
    for index, facts in enumerate(hosts):
        if not isinstance(facts, dict) or not facts.get("name"):
            raise HvmaintError("hosts[%d] is not a hypervisor facts dictionary: it has no name" % index)
        name = facts["name"]
        if name in views:
            raise HvmaintError("host %s appears twice in hosts: pass each host's facts once" % name)
        views[name] = None
    overrides = host_overrides or {}
    if not isinstance(overrides, dict):
        raise HvmaintError("host_overrides must be a dictionary {hostname: {memory_mib, vcpus}}")
    unknown = sorted(set(overrides) - set(views))
    if unknown:
        raise HvmaintError("host_overrides names hosts that are not in hosts: %s (known hosts: %s)"
                           % (", ".join(unknown), known_list(views)))
    for name, override in overrides.items():
        if not isinstance(override, dict):
            raise HvmaintError("host_overrides.%s must be a dictionary with memory_mib and/or vcpus" % name)
        extra = sorted(set(override) - {"memory_mib", "vcpus"})
        if extra:
            raise HvmaintError("host_overrides.%s has unknown keys %s: only memory_mib and vcpus are understood"
                               % (name, ", ".join(extra)))
        for key, value in override.items():
            if value is not None:
                _positive("host_overrides.%s.%s" % (name, key), value)
    for facts in hosts:
        views[facts["name"]] = HostView(facts, overrides.get(facts["name"]), opts)
    return views


def not_candidate_reason(view, source_name, ignore_mark=False):
    """Why a host is never a destination, or None. `ignore_mark`: the host's own maintenance mark does not count
    (a return plans its home host before it clears that host's mark)."""
    if view.name == source_name:
        return "%s is the source host being drained" % view.name
    if view.maintenance and not ignore_mark:
        m = view.maintenance if isinstance(view.maintenance, dict) else {}
        details = ", ".join("%s %s" % (k, m[k]) for k in ("reason", "since", "by") if m.get(k))
        return "%s is under maintenance%s" % (view.name, " (%s)" % details if details else "")
    return None


# --------------------------------------------------------------------------------------------------------------
# the checks


def vm_mode(vm):
    """'live', 'offline' (shut off: only the definition moves) or None (cannot move)."""
    state = vm.get("state")
    if state in LIVE_STATES:
        return "live"
    if state == "shutoff":
        return "offline"
    return None


def vm_checks(vm, source_name):
    """Checks that depend on the VM alone: {mode, blockers, warnings, notes}."""
    name = vm.get("name")
    state = vm.get("state")
    mode = vm_mode(vm)
    blockers, warnings, notes = [], [], []
    if mode is None:
        template = _STATE_BLOCKERS.get(state, "libvirt reports state %(state)s for %(vm)s: it cannot be migrated"
                                              " and stays on %(src)s; check virsh domstate %(vm)s")
        blockers.append(_issue("state", template % {"vm": name, "src": source_name, "state": state}))
    elif state == "paused":
        warnings.append(_issue("paused", "%s is paused: it migrates paused and stays paused on the destination;"
                                         " resume it there when wanted" % name))
    elif mode == "offline" and (vm.get("managed_save") or (vm.get("metadata") or {}).get("parked") == "suspend"):
        # Parked by a drain (managed save): its memory is in a file on this host, which an offline migration
        # of the definition would orphan. It stays; the return restores it here.
        blockers.append(_issue("managed_save", "%s is suspended to disk on %s (managed save): its saved memory"
                               " stays there, so it is not moved; return_host restores it" % (name, source_name)))
    elif mode == "offline":
        notes.append(_issue("offline", "%s is shut off: offline migration, the definition moves, nothing runs"
                            % name))
    if mode == "live" and vm.get("memory_mib") is None:
        blockers.append(_issue("memory_unknown", "the facts give no memory size for %s: it cannot be placed" % name))
    for dev in vm.get("hostdevs") or []:
        what = " ".join(str(dev[k]) for k in ("type", "address") if dev.get(k)) or "a host device"
        blockers.append(_issue("hostdev", "%s has a passthrough device (%s): assigned host devices cannot be"
                                          " live-migrated and belong to %s's hardware; detach it"
                                          " (virsh detach-device) or shut the VM down for the maintenance"
                                          % (name, what, source_name)))
    for nic in vm.get("nics") or []:
        if nic.get("type") == "hostdev":
            blockers.append(_issue("hostdev", "%s has a passthrough NIC (SR-IOV, MAC %s): it cannot be live-migrated;"
                                              " detach it or shut the VM down" % (name, nic.get("mac"))))
    return {"mode": mode, "blockers": blockers, "warnings": warnings, "notes": notes}


def local_disks(vm):
    """Disks the destination cannot reach: host-local ones that migration has to copy (the engine's own
    decision, _storage.copied, so that the copy predicted is the copy made)."""
    return [d for d in vm.get("disks") or [] if copied(d)]


def _disk_pool_key(disk):
    # libvirt pre-creates a copied disk in the pool whose target path is the disk's directory (or, for a
    # <disk type='volume'>, in the pool of that name).
    if disk.get("type") == "volume" and disk.get("pool"):
        return ("name", disk["pool"])
    return ("path", _norm_dir(posixpath.dirname(disk["path"]))) if disk.get("path") else ("name", disk.get("pool"))


def requirements(vm, mode, src):
    """What the VM needs from any destination, as [(atom, detail)].

    An atom is hashable and check_requirement's verdict on a host depends on the atom alone (detail only names
    the NIC or disk in the message), so a planner can find the hosts meeting each atom once for all VMs.
    """
    reqs = []
    if src is not None:
        if src.arch:
            reqs.append((("arch", src.arch), None))
        reqs.append((("versions", src.name), None))
    if vm.get("domain_type") == "kvm":
        reqs.append((("kvm",), None))
    if vm.get("machine"):
        reqs.append((("machine", vm["machine"]), None))
    for nic in vm.get("nics") or []:
        kind = nic.get("type")
        mac = nic.get("mac") or "?"
        if kind == "network" or (kind is None and nic.get("network")):
            reqs.append((("network", nic.get("network")), mac))
        elif kind == "bridge":
            reqs.append((("bridge", nic.get("bridge")), mac))
        elif kind in _NIC_TYPES_UNCHECKED:
            reqs.append((("nic_unchecked", kind), mac))
    for disk in vm.get("disks") or []:
        if not (disk.get("path") or disk.get("pool")) or disk.get("shared") is True:
            continue  # an empty CD-ROM drive, or storage every host reaches
        label = "disk %s of %s (%s)" % (disk.get("target"), vm.get("name"), disk.get("path") or disk.get("pool"))
        if disk.get("device") in _REMOVABLE:
            reqs.append((("media",), label))
        elif not carried(disk):
            # Read-only: libvirt does not copy it (_storage.carried), so no pool is needed for it there; the same
            # file must be there already.
            reqs.append((("readonly_not_copied",), label))
        elif disk.get("shared") is None:
            reqs.append((("storage_unknown",), label))
        elif mode == "offline":
            reqs.append((("storage_offline",), label))
        else:
            reqs.append((("pool",) + _disk_pool_key(disk), label))
    return reqs


def check_requirement(atom, detail, vm_name, src, dst):
    """(blockers, warnings) of one requirement on one destination."""
    kind = atom[0]
    if kind == "arch":
        if dst.arch and dst.arch != atom[1]:
            return [_issue("arch", "%s is %s and %s is %s: a VM cannot move between architectures"
                           % (src.name, atom[1], dst.name, dst.arch))], []
    elif kind == "versions":
        warnings = []
        for label, mine, theirs, mine_text, theirs_text, code in (
                ("libvirt", src.libvirt_version, dst.libvirt_version, src.libvirt_version_text,
                 dst.libvirt_version_text, "libvirt_older"),
                ("QEMU", src.qemu_version, dst.qemu_version, src.qemu_version_text, dst.qemu_version_text,
                 "qemu_older")):
            if mine and theirs and theirs < mine:
                warnings.append(_issue(code, "%s runs %s %s, older than %s's %s: migrating to an older version is"
                                             " not supported upstream and may fail or break the guest"
                                       % (dst.name, label, theirs_text, src.name, mine_text)))
        return [], warnings
    elif kind == "kvm":
        if dst.domain_types is None:
            return [], [_issue("domain_type_unknown", "%s reports no domain types: cannot tell whether it offers KVM"
                               % dst.name)]
        if "kvm" not in dst.domain_types:
            return [_issue("domain_type", "%s runs under KVM but %s offers no KVM (domain types: %s): load the kvm"
                                          " module and enable virtualization in the firmware"
                           % (vm_name, dst.name, ", ".join(sorted(dst.domain_types)) or "none"))], []
    elif kind == "machine":
        if dst.machine_types is None:
            return [], [_issue("machine_type_unknown", "%s reports no machine types: cannot tell whether its QEMU"
                                                       " offers %s" % (dst.name, atom[1]))]
        if atom[1] not in dst.machine_types:
            return [_issue("machine_type", "machine type %s of %s is not offered by %s (QEMU %s), which would"
                                           " refuse the VM; upgrade QEMU there or pick another host"
                           % (atom[1], vm_name, dst.name, dst.qemu_version_text or "?"))], []
    elif kind == "network":
        net = atom[1]
        if dst.networks is None:
            return [], [_issue("network_unknown", "%s reports no networks: cannot tell whether network %s (NIC %s"
                                                  " of %s) exists there" % (dst.name, net, detail, vm_name))]
        if net not in dst.networks:
            return [_issue("network", "NIC %s of %s uses libvirt network %s, which %s does not have: define it"
                                      " there (virsh net-define, net-start)" % (detail, vm_name, net, dst.name))], []
        if not dst.networks[net]:
            return [_issue("network", "NIC %s of %s uses libvirt network %s, which is defined on %s but not active:"
                                      " virsh net-start %s there" % (detail, vm_name, net, dst.name, net))], []
    elif kind == "bridge":
        bridge = atom[1]
        if dst.bridges is None:
            return [], [_issue("bridge_unknown", "%s reports no bridges: cannot tell whether bridge %s (NIC %s of"
                                                 " %s) exists there" % (dst.name, bridge, detail, vm_name))]
        if bridge not in dst.bridges:
            return [_issue("bridge", "NIC %s of %s is on bridge %s, which %s does not have: create the bridge"
                                     " there" % (detail, vm_name, bridge, dst.name))], []
    elif kind == "nic_unchecked":
        return [], [_issue("nic_unchecked", "NIC %s of %s is of type %s: the facts do not describe its host side,"
                                            " make sure %s provides it" % (detail, vm_name, atom[1], dst.name))]
    elif kind == "media":
        return [], [_issue("media", "%s is removable media and is not copied: it must exist at the same path on %s"
                           % (detail, dst.name))]
    elif kind == "readonly_not_copied":
        return [], [_issue("readonly_not_copied", "%s is read-only and is not copied: it must exist at the same path"
                                                  " on %s" % (detail, dst.name))]
    elif kind == "storage_unknown":
        return [], [_issue("storage_unknown", "%s: cannot tell whether %s reaches it; if it is host-local the"
                                              " migration fails unless storage is copied" % (detail, dst.name))]
    elif kind == "storage_offline":
        return [_issue("storage_offline", "%s is host-local and an offline migration moves only the definition:"
                                          " copy the disk to %s first or leave the VM where it is"
                       % (detail, dst.name))], []
    elif kind == "pool":
        if dst.pools_by_path is None:
            return [], [_issue("storage_pool_unknown", "%s must be copied and %s reports no storage pools: cannot"
                                                       " tell whether libvirt can create it there"
                               % (detail, dst.name))]
        pool = dst.pools_by_name.get(atom[2]) if atom[1] == "name" else dst.pools_by_path.get(atom[2])
        if pool is None:
            where = "named %s" % atom[2] if atom[1] == "name" else "at %s" % atom[2]
            return [_issue("storage_pool", "%s must be copied but %s has no storage pool %s: libvirt creates copied"
                                           " disks only inside a pool, define one there"
                           % (detail, dst.name, where))], []
        if not pool.get("active"):
            return [_issue("storage_pool", "%s must be copied but pool %s on %s is not active: virsh pool-start %s"
                                           " there" % (detail, pool.get("name"), dst.name, pool.get("name")))], []
    return [], []


def destination_checks(vm, mode, src, dst, reqs=None):
    """Static checks of one VM against one destination: (blockers, warnings). src/dst are HostViews."""
    blockers, warnings = [], []
    name = vm.get("name")
    for atom, detail in requirements(vm, mode, src) if reqs is None else reqs:
        b, w = check_requirement(atom, detail, name, src, dst)
        blockers += b
        warnings += w
    return blockers, warnings


def copy_warnings(vm, mode, bandwidth):
    """The 'storage must be copied' warnings, with the time the copy adds."""
    if mode != "live":
        return []
    warnings = []
    for disk in local_disks(vm):
        size = disk.get("size_bytes")
        if size is None:
            extra = "size unknown, so the extra time is not estimated"
        else:
            extra = "about %d s more at %g MiB/s" % (math.ceil(size / float(MIB) / bandwidth), bandwidth)
        warnings.append(_issue("storage_copy", "disk %s of %s (%s, %s) is host-local: storage must be copied, %s"
                               % (disk.get("target"), vm.get("name"), disk.get("path") or disk.get("pool"),
                                  fmt_bytes(size), extra)))
    return warnings


def pool_needs(vm, dst):
    """{pool name: bytes} the VM's copied disks take from the destination's pools (known sizes only)."""
    needs = {}
    if dst.pools_by_path is None:
        return needs
    for disk in local_disks(vm):
        kind, key = _disk_pool_key(disk)
        pool = dst.pools_by_name.get(key) if kind == "name" else dst.pools_by_path.get(key)
        if pool is not None and disk.get("size_bytes"):
            needs[pool.get("name")] = needs.get(pool.get("name"), 0) + disk["size_bytes"]
    return needs


def capacity_checks(vm, mode, dst, opts, mem_free=None, vcpu_free=None, pool_free=None):
    """Memory, vCPU and pool-space blockers for a live move; free figures default to the destination's now."""
    if mode != "live":
        return [], []
    name = vm.get("name")
    blockers, warnings = [], []
    memory = vm.get("memory_mib") or 0
    if dst.mem_capacity is None:
        blockers.append(_issue("memory_unknown", "%s reports no memory_total_mib: give host_overrides.%s.memory_mib"
                                                 " to use it as a destination" % (dst.name, dst.name)))
    else:
        free = dst.mem_free if mem_free is None else mem_free
        if memory > free:
            blockers.append(_issue("memory", "%s needs %s of memory and %s can give %s (%s)"
                                   % (name, fmt_mib(memory), dst.name, fmt_mib(max(free, 0)),
                                      dst.memory_explanation(opts))))
    vcpus = vm.get("vcpus") or 0
    if dst.vcpu_capacity is None:
        warnings.append(_issue("vcpus_unknown", "%s reports no CPU count: vCPUs not checked" % dst.name))
    else:
        free = dst.vcpu_capacity - dst.vcpu_used if vcpu_free is None else vcpu_free
        if vcpus > free:
            blockers.append(_issue("vcpus", "%s needs %d vCPUs and %s has %g left (%s CPUs x overcommit %g - %d in"
                                            " use)" % (name, vcpus, dst.name, max(free, 0), dst.cpu_count,
                                                       opts["vcpu_overcommit"], dst.vcpu_used)))
    for pool_name, need in sorted(pool_needs(vm, dst).items()):
        pool = dst.pools_by_name[pool_name]
        available = pool.get("available_bytes") if pool_free is None else pool_free.get(pool_name)
        if available is not None and need > available:
            blockers.append(_issue("storage_space", "the copied disks of %s need %s in pool %s on %s, which has %s"
                                                    " free" % (name, fmt_bytes(need), pool_name, dst.name,
                                                               fmt_bytes(available))))
    return blockers, warnings


def index_cpu_matrix(cpu_matrix):
    """{(vm name, host name): entry} from cpu_compat's output; None when no matrix was given."""
    if cpu_matrix is None:
        return None
    if not isinstance(cpu_matrix, list):
        raise HvmaintError("cpu_matrix must be a list of cpu_compat results ({guest, host, compatible, ...})")
    index = {}
    for n, entry in enumerate(cpu_matrix):
        if not isinstance(entry, dict) or not entry.get("guest") or not entry.get("host"):
            raise HvmaintError("cpu_matrix[%d] has no guest and host: pass the cpu_compat module's results" % n)
        guest = entry["guest"]
        if isinstance(guest, dict):  # tolerate a guest given as {name: ...}
            guest = guest.get("name")
        index[(guest, entry["host"])] = entry
    return index


def cpu_checks(vm, dst_name, cpu_index):
    """(blockers, warnings, notes) from the cpu_compat matrix."""
    name = vm.get("name")
    if cpu_index is None:
        return [], [], [_issue("cpu_not_checked", "CPU not checked: no cpu_matrix given")]
    entry = cpu_index.get((name, dst_name))
    if entry is None:
        return [], [_issue("cpu_not_checked", "CPU not checked: cpu_matrix has no entry for %s on %s"
                           % (name, dst_name))], []
    compatible = entry.get("compatible")
    details = []
    if entry.get("missing_features"):
        details.append("missing features: %s" % ", ".join(str(f) for f in entry["missing_features"]))
    details.extend(str(r) for r in entry.get("reasons") or [])
    detail = ("; " + "; ".join(details)) if details else ""
    # cpu_compat says "error" (compatible false) when it could not judge, e.g. host-passthrough without the
    # source's CPU: that is not knowing, not a known incompatibility.
    if entry.get("result") == "error":
        compatible = None
    if compatible is False:
        return [_issue("cpu", "the CPU of %s cannot run %s as defined (%s)%s"
                       % (dst_name, name, entry.get("result") or "incompatible", detail))], [], []
    if compatible is None:
        return [], [_issue("cpu_unknown", "CPU compatibility of %s with %s is unknown (%s)%s"
                           % (name, dst_name, entry.get("result") or "no result", detail))], []
    return [], [], []


def estimate_seconds(vm, mode, bandwidth):
    """Lower bound of a move's duration: one pass over memory plus the copied disks, at bandwidth MiB/s."""
    if mode != "live":
        return 0
    mib = vm.get("memory_mib") or 0
    mib += sum(d.get("size_bytes") or 0 for d in local_disks(vm)) / float(MIB)
    return int(math.ceil(mib / bandwidth)) if mib else 0
