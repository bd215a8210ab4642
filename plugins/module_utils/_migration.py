# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The live-migration engine behind hvmaint.libvirt.live_migrate.

One connection to the source and one to the destination serve a whole list of VMs. Each migration is libvirt's
peer-to-peer migration (the source libvirtd drives it and opens its own connection to the destination), run in a
worker thread because virDomainMigrateToURI3 blocks until the VM has moved; libvirt-python releases the GIL while
it waits. The calling thread is the monitor: about once a second it reads each running job's statistics to show
progress, to take the escalation steps of the policy and to enforce its timeouts.

The split between pure functions (option validation, policy and timeout computation, escalation, result building:
unit-tested with recorded libvirt data) and the Migrator class (libvirt calls: proven on the lab) is deliberate.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import urlsplit

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    close_quietly,
    explain,
    libvirt,
    open_connection,
    unknown_vms,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import state_name
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import (
    read_domain_metadata,
    with_move,
    write_domain_metadata,
)

MIB = 1024 * 1024
GIB = 1024 * MIB

# ---- defaults, and where each comes from (docs/live_migrate.md repeats this table for users) ---------------
# QEMU's own downtime-limit default; libvirt does not change it.
DEFAULT_MAX_DOWNTIME_MS = 300
# KubeVirt (parallelOutboundMigrationsPerNode), oVirt/VDSM (max_outgoing_migrations) and Hyper-V (simultaneous
# live migrations) all default to two outbound migrations per host.
DEFAULT_MAX_PARALLEL = 2
# Ours, the outbound figure mirrored: when one call sends VMs to several hosts, no destination takes more than two
# incoming migrations at a time (each starts a QEMU and receives a full-rate stream).
DEFAULT_MAX_PARALLEL_PER_DESTINATION = 2
# KubeVirt's completionTimeoutPerGiB as documented for KubeVirt / OpenShift Virtualization (pkg/virt-config).
DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB = 800
# Ours: fixed costs (starting QEMU on the destination, handshakes) do not scale with memory, so a 64 MiB VM
# must not get a 50 s budget.
DEFAULT_COMPLETION_TIMEOUT_MIN_S = 60
# KubeVirt's progressTimeout.
DEFAULT_PROGRESS_TIMEOUT_S = 150
# Ours: two memory passes that do not finish the migration are what "does not converge" means here (oVirt's
# convergence schedule also steps on stalled iterations, not on time).
DEFAULT_ITERATIONS_PER_STEP = 2
# Ceiling of a downtime step: QEMU accepts up to 2000 s, but a VM paused for minutes is no longer "live".
MAX_DOWNTIME_STEP_MS = 60000

POLL_INTERVAL_S = 1.0
# Longest wait for a call that steers a running migration (downtime, post-copy, abort). Seen once on the lab: a
# migrateSetMaxDowntime that never returned while the migration ran on, which would have kept every later step
# and timeout from firing; past this the step is reported as failed and the watcher goes on.
CONTROL_CALL_TIMEOUT_S = 30.0
PROGRESS_WRITE_INTERVAL_S = 1.0

TRANSPORT_SCHEMES = {"tls": "qemu+tls", "ssh": "qemu+ssh", "tcp": "qemu+tcp"}
COPY_STORAGE_MODES = ("auto", "always", "never")
TIMEOUT_ACTIONS = ("abort", "postcopy")
COMPRESSION_METHODS = ("none", "xbzrle", "zstd", "zlib")
SHUTOFF_CHOICES = ("fail", "move")
# Multifd compression methods: QEMU compresses per channel, so they need parallel connections.
MULTIFD_COMPRESSION = ("zstd", "zlib")

# Outcomes of one VM in the results.
MIGRATED, ALREADY_THERE, FAILED, ABORTED, WOULD_MIGRATE, SKIPPED = (
    "migrated", "already_there", "failed", "aborted", "would_migrate", "skipped")

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

_NAME_FORBIDDEN = set("/?#@ \t\n\\'\"")


def _flag(name, fallback):
    """A libvirt constant, or its documented value when the bindings on the host are older than the daemon."""
    return getattr(libvirt, name, fallback) if libvirt is not None else fallback


def utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ==============================================================================================================
# Options and policy (pure)


def parse_libvirt_uri(uri, role):
    """Check that `uri` is a libvirt QEMU URI; return (transport, host). `role` names it in errors."""
    if not isinstance(uri, str) or not uri.strip():
        raise HvmaintError("%s is empty" % role)
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise HvmaintError("%s %r is not a valid libvirt URI: %s" % (role, uri, exc)) from exc
    del port
    driver, transport = parts.scheme.split("+", 1) if "+" in parts.scheme else (parts.scheme, "")
    if driver != "qemu":
        raise HvmaintError("%s %r is not a valid libvirt URI for QEMU/KVM: it must start with qemu://, qemu+tls://,"
                           " qemu+ssh:// or qemu+tcp://" % (role, uri))
    if transport not in ("", "tls", "tcp", "ssh", "libssh", "libssh2", "unix", "ext"):
        raise HvmaintError("%s %r names an unknown libvirt transport %r" % (role, uri, transport))
    if parts.path not in ("/system", "/session"):
        raise HvmaintError("%s %r must end in /system (the system libvirtd)" % (role, uri))
    return transport or ("unix" if not parts.hostname else "tls"), parts.hostname


def derive_destination_uri(destination, transport):
    if not destination:
        raise HvmaintError("give destination (a host name) or destination_uri")
    if set(destination) & _NAME_FORBIDDEN:
        raise HvmaintError("destination %r is not a host name" % destination)
    return "%s://%s/system" % (TRANSPORT_SCHEMES[transport], destination)


class Policy:
    """The validated migration policy for a whole run (every VM of a list gets the same)."""

    def __init__(self, **kw):
        self.bandwidth_mib_s = int(kw.get("bandwidth_mib_s") or 0)
        self.max_downtime_ms = int(kw.get("max_downtime_ms") or DEFAULT_MAX_DOWNTIME_MS)
        escalation = kw.get("escalation") or {}
        self.downtime_steps = [int(v) for v in (escalation.get("downtime_steps") or [])]
        self.auto_converge = bool(escalation.get("auto_converge"))
        self.post_copy = bool(escalation.get("post_copy"))
        self.iterations_per_step = int(escalation.get("iterations_per_step") or DEFAULT_ITERATIONS_PER_STEP)
        self.parallel_connections = int(kw.get("parallel_connections") or 1)
        self.compression = kw.get("compression") or "none"
        self.copy_storage = kw.get("copy_storage") or "auto"
        self.tls_stream = bool(kw.get("tls_stream"))
        per_gib = kw.get("completion_timeout_s_per_gib")
        self.completion_timeout_s_per_gib = DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB if per_gib is None else per_gib
        minimum = kw.get("completion_timeout_min_s")
        self.completion_timeout_min_s = DEFAULT_COMPLETION_TIMEOUT_MIN_S if minimum is None else minimum
        self.completion_timeout_action = kw.get("completion_timeout_action") or "abort"
        progress = kw.get("progress_timeout_s")
        self.progress_timeout_s = DEFAULT_PROGRESS_TIMEOUT_S if progress is None else progress
        self.progress_timeout_action = kw.get("progress_timeout_action") or "abort"
        self.max_parallel = int(kw.get("max_parallel") or DEFAULT_MAX_PARALLEL)
        self.max_parallel_per_destination = int(kw.get("max_parallel_per_destination")
                                                or DEFAULT_MAX_PARALLEL_PER_DESTINATION)
        self.shutoff_vms = kw.get("shutoff_vms") or "fail"

    def as_dict(self):
        return dict(vars(self))


def validate_policy(options):
    """Return a Policy, or raise HvmaintError naming every problem of the options at once."""
    problems = []
    escalation = options.get("escalation") or {}

    def number(key, value, minimum, maximum=None):
        if value is None:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append("%s must be a number, not %r" % (key, value))
        elif value < minimum or (maximum is not None and value > maximum):
            problems.append("%s must be between %s and %s, not %s" % (key, minimum, maximum or "unbounded", value))

    number("bandwidth_mib_s", options.get("bandwidth_mib_s"), 0)
    number("max_downtime_ms", options.get("max_downtime_ms"), 1, MAX_DOWNTIME_STEP_MS)
    number("parallel_connections", options.get("parallel_connections"), 1, 255)
    number("completion_timeout_s_per_gib", options.get("completion_timeout_s_per_gib"), 0)
    number("completion_timeout_min_s", options.get("completion_timeout_min_s"), 1)
    number("progress_timeout_s", options.get("progress_timeout_s"), 0)
    number("max_parallel", options.get("max_parallel"), 1, 64)
    number("max_parallel_per_destination", options.get("max_parallel_per_destination"), 1, 64)
    number("escalation.iterations_per_step", escalation.get("iterations_per_step"), 1, 100)
    for key, allowed in (("compression", COMPRESSION_METHODS), ("copy_storage", COPY_STORAGE_MODES),
                         ("completion_timeout_action", TIMEOUT_ACTIONS), ("shutoff_vms", SHUTOFF_CHOICES),
                         ("progress_timeout_action", TIMEOUT_ACTIONS)):
        value = options.get(key)
        if value is not None and value not in allowed:
            problems.append("%s must be one of %s, not %r" % (key, ", ".join(allowed), value))
    unknown = sorted(set(escalation) - {"downtime_steps", "auto_converge", "post_copy", "iterations_per_step"})
    if unknown:
        problems.append("escalation has unknown keys: %s" % ", ".join(unknown))
    steps = escalation.get("downtime_steps") or []
    downtime = options.get("max_downtime_ms") or DEFAULT_MAX_DOWNTIME_MS
    previous = downtime
    for step in steps:
        if not isinstance(step, int) or isinstance(step, bool) or step > MAX_DOWNTIME_STEP_MS:
            problems.append("escalation.downtime_steps must be whole milliseconds up to %d, not %r"
                            % (MAX_DOWNTIME_STEP_MS, step))
            break
        if step <= previous:
            problems.append("escalation.downtime_steps must rise above max_downtime_ms (%d ms) step by step: %s"
                            % (downtime, steps))
            break
        previous = step
    post_copy = bool(escalation.get("post_copy"))
    for key in ("completion_timeout_action", "progress_timeout_action"):
        if options.get(key) == "postcopy" and not post_copy:
            problems.append("%s=postcopy needs escalation.post_copy=true: post-copy must be allowed when the"
                            " migration starts" % key)
    compression = options.get("compression") or "none"
    parallel = options.get("parallel_connections") or 1
    if compression in MULTIFD_COMPRESSION and parallel < 2:
        problems.append("compression=%s compresses per connection: it needs parallel_connections of 2 or more"
                        % compression)
    if compression == "xbzrle" and parallel > 1:
        problems.append("compression=xbzrle cannot be combined with parallel_connections (QEMU's multifd does not"
                        " support it); use zstd or zlib")
    if post_copy and parallel > 1:
        problems.append("escalation.post_copy cannot be combined with parallel_connections (QEMU refuses"
                        " post-copy over multifd)")
    if problems:
        raise HvmaintError("invalid options: " + "; ".join(problems))
    return Policy(**options)


def completion_timeout_s(policy, memory_bytes, copied_disk_bytes=0):
    """Seconds a migration may take: scales with the memory (and the disks it copies, as KubeVirt counts them for
    block migration), never below the minimum. 0 per GiB disables the timeout (returns None)."""
    if not policy.completion_timeout_s_per_gib:
        return None
    gib = (memory_bytes + copied_disk_bytes) / float(GIB)
    return max(float(policy.completion_timeout_min_s), policy.completion_timeout_s_per_gib * gib)


def migration_flags(policy, copy_storage):
    flags = (_flag("VIR_MIGRATE_LIVE", 1) | _flag("VIR_MIGRATE_PEER2PEER", 2) | _flag("VIR_MIGRATE_PERSIST_DEST", 8)
             | _flag("VIR_MIGRATE_UNDEFINE_SOURCE", 16)
             # Without it libvirt would resume the VM on the source after a failed I/O during storage copy.
             | _flag("VIR_MIGRATE_ABORT_ON_ERROR", 4096))
    if copy_storage:
        flags |= _flag("VIR_MIGRATE_NON_SHARED_DISK", 64)
    if policy.tls_stream:
        flags |= _flag("VIR_MIGRATE_TLS", 65536)
    if policy.auto_converge:
        flags |= _flag("VIR_MIGRATE_AUTO_CONVERGE", 8192)
    if policy.post_copy:
        flags |= _flag("VIR_MIGRATE_POSTCOPY", 32768)
    if policy.parallel_connections > 1:
        flags |= _flag("VIR_MIGRATE_PARALLEL", 131072)
    if policy.compression != "none":
        flags |= _flag("VIR_MIGRATE_COMPRESSED", 2048)
    return flags


def offline_flags():
    """Flags that move the definition of a shut-off VM: nothing runs, so there is no stream to tune or encrypt."""
    return (_flag("VIR_MIGRATE_OFFLINE", 1024) | _flag("VIR_MIGRATE_PEER2PEER", 2)
            | _flag("VIR_MIGRATE_PERSIST_DEST", 8) | _flag("VIR_MIGRATE_UNDEFINE_SOURCE", 16))


def migration_params(policy, migrate_disks=None):
    """The typed parameters of virDomainMigrateToURI3 (string keys: the hosts' bindings may predate some)."""
    params = {}
    if policy.bandwidth_mib_s:
        params["bandwidth"] = policy.bandwidth_mib_s
    if policy.parallel_connections > 1:
        params["parallel.connections"] = policy.parallel_connections
    if policy.compression != "none":
        params["compression"] = policy.compression
    if migrate_disks:
        params["migrate_disks"] = list(migrate_disks)
    return params


FLAG_NAMES = (("VIR_MIGRATE_LIVE", 1), ("VIR_MIGRATE_PEER2PEER", 2), ("VIR_MIGRATE_PERSIST_DEST", 8),
              ("VIR_MIGRATE_UNDEFINE_SOURCE", 16), ("VIR_MIGRATE_NON_SHARED_DISK", 64),
              ("VIR_MIGRATE_OFFLINE", 1024), ("VIR_MIGRATE_COMPRESSED", 2048), ("VIR_MIGRATE_ABORT_ON_ERROR", 4096),
              ("VIR_MIGRATE_AUTO_CONVERGE", 8192), ("VIR_MIGRATE_POSTCOPY", 32768), ("VIR_MIGRATE_TLS", 65536),
              ("VIR_MIGRATE_PARALLEL", 131072))


def flag_names(flags):
    return [name[len("VIR_MIGRATE_"):].lower() for name, value in FLAG_NAMES if flags & value]


# ==============================================================================================================
# Storage: which disks live on host-local storage (pure, with the look-ups passed in)


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


# ==============================================================================================================
# Progress, escalation, results (pure)


def progress_from_stats(stats, previous=None, interval_s=None):
    """Progress of a running job from virDomainGetJobStats: percent, bytes remaining and total, rate, iteration.
    The rate is measured from data_processed between two polls (it includes disks); QEMU's memory_bps only
    covers the last memory pass."""
    total = stats.get("data_total") or (stats.get("memory_total", 0) + stats.get("disk_total", 0))
    remaining = stats.get("data_remaining")
    if remaining is None:
        remaining = stats.get("memory_remaining", 0) + stats.get("disk_remaining", 0)
    processed = stats.get("data_processed")
    if processed is None:
        processed = stats.get("memory_processed", 0) + stats.get("disk_processed", 0)
    rate = None
    if previous is not None and interval_s:
        rate = max(0.0, (processed - previous) / float(interval_s))
    if rate is None or rate == 0:
        rate = float(stats.get("memory_bps") or 0) + float(stats.get("disk_bps") or 0) or rate
    page = stats.get("memory_page_size") or 4096
    percent = 100.0 * (1 - float(remaining) / total) if total else 0.0
    return {
        "percent": round(max(0.0, min(100.0, percent)), 1),
        "remaining_bytes": int(remaining),
        "total_bytes": int(total),
        "processed_bytes": int(processed),
        "rate_bps": int(rate or 0),
        "iteration": int(stats.get("memory_iteration") or 0),
        "dirty_rate_bps": int((stats.get("memory_dirty_rate") or 0) * page),
        "throttle_percent": stats.get("auto_converge_throttle"),
        "postcopy_requests": stats.get("memory_postcopy_requests"),
    }


def format_progress_line(source, destination, vm):
    """One progress line as ansible-playbook shows it (the VM's own destination wins over the run's)."""
    head = "[%s\u2192%s] %s:" % (source, vm.get("destination") or destination, vm["name"])
    status = vm.get("status")
    if status == "queued":
        return "%s queued" % head
    if status != "running":
        text = "%s %s" % (head, status)
        if vm.get("elapsed_s") is not None:
            text += " in %.1f s" % vm["elapsed_s"]
        if vm.get("downtime_ms") is not None:
            text += ", downtime %d ms" % vm["downtime_ms"]
        if vm.get("error"):
            text += ": %s" % vm["error"]
        return text
    if not vm.get("total_bytes"):
        return "%s starting (%.0f s)" % (head, vm.get("elapsed_s") or 0)
    text = "%s %.0f%% %.1f/%.1f MiB remaining %.0f MiB/s iteration %d" % (
        head, vm.get("percent", 0), vm.get("remaining_bytes", 0) / float(MIB), vm.get("total_bytes", 0) / float(MIB),
        vm.get("rate_bps", 0) / float(MIB), vm.get("iteration", 0))
    if vm.get("dirty_rate_bps"):
        text += " dirtying %.0f MiB/s" % (vm["dirty_rate_bps"] / float(MIB))
    if vm.get("downtime_limit_ms"):
        text += " max downtime %d ms" % vm["downtime_limit_ms"]
    if vm.get("phase") == "postcopy":
        text += " (post-copy)"
    return text


class Escalator:
    """Decides, from successive job statistics, what the policy does next to a running migration.

    observe() returns actions for the engine: ("downtime", ms), ("postcopy", why), ("abort", why). The order is the
    issue's: raise the allowed downtime step by step, then (QEMU's) auto-converge throttling, then post-copy.
    Auto-converge cannot be switched on in a running job (libvirt has no call for it), so when allowed it is armed
    at the start and QEMU itself starts throttling only once passes stop converging; observe() records when the
    throttle shows up. Post-copy is the last step: once in post-copy the VM cannot go back, so no timeout applies.
    """

    def __init__(self, policy, timeout_s):
        self.policy = policy
        self.timeout_s = timeout_s
        self.downtime_ms = policy.max_downtime_ms
        self.pending_downtime = list(policy.downtime_steps)
        self.reference_iteration = 1
        self.postcopy = False
        self.throttle = 0
        self.steps = []
        self.max_processed = -1
        self.progress_at = 0.0
        self.fired = None

    def _step(self, elapsed_s, iteration, action, detail):
        self.steps.append({"at_s": round(elapsed_s, 1), "iteration": iteration, "action": action, "detail": detail})

    def observe(self, stats, elapsed_s):
        if self.fired or not stats or not stats.get("type"):
            return []
        iteration = int(stats.get("memory_iteration") or 0)
        processed = stats.get("data_processed")
        if processed is None:
            processed = stats.get("memory_processed", 0) + stats.get("disk_processed", 0)
        if processed > self.max_processed:
            self.max_processed, self.progress_at = processed, elapsed_s
        throttle = int(stats.get("auto_converge_throttle") or 0)
        if throttle > self.throttle:
            self.throttle = throttle
            self._step(elapsed_s, iteration, "auto_converge", "QEMU throttles the vCPUs by %d%%" % throttle)
        if self.postcopy:
            return []
        policy = self.policy
        if self.timeout_s is not None and elapsed_s >= self.timeout_s:
            return self._timeout(elapsed_s, iteration, "completion", policy.completion_timeout_action,
                                 "not completed within %.0f s (completion timeout)" % self.timeout_s)
        if policy.progress_timeout_s and elapsed_s - self.progress_at >= policy.progress_timeout_s:
            return self._timeout(elapsed_s, iteration, "progress", policy.progress_timeout_action,
                                 "no data moved for %.0f s (progress timeout)" % (elapsed_s - self.progress_at))
        if iteration < self.reference_iteration + policy.iterations_per_step:
            return []
        if self.pending_downtime:
            new = self.pending_downtime.pop(0)
            self._step(elapsed_s, iteration, "downtime", "max downtime %d -> %d ms after %d passes without"
                       " converging" % (self.downtime_ms, new, iteration - self.reference_iteration))
            self.downtime_ms, self.reference_iteration = new, iteration
            return [("downtime", new)]
        if policy.post_copy:
            self.postcopy = True
            self._step(elapsed_s, iteration, "postcopy", "switched to post-copy: still not converging at max"
                       " downtime %d ms" % self.downtime_ms)
            return [("postcopy", "not converging")]
        return []

    def _timeout(self, elapsed_s, iteration, kind, action, why):
        if action == "postcopy":
            self.postcopy = True
            self._step(elapsed_s, iteration, "postcopy", "switched to post-copy: " + why)
            return [("postcopy", why)]
        self.fired = "%s_timeout" % kind
        self._step(elapsed_s, iteration, "abort", "aborted: " + why)
        return [("abort", why)]


def completed_figures(stats):
    """The result fields taken from libvirt's completed-job statistics (as virsh domjobinfo --completed)."""
    if not stats:
        return {"downtime_ms": None, "data_transferred_bytes": None, "memory_iterations": None,
                "dirty_rate_pages_s": None, "dirty_rate_mib_s": None, "libvirt_time_ms": None}
    page = stats.get("memory_page_size") or 4096
    dirty = stats.get("memory_dirty_rate")
    processed = stats.get("data_processed")
    if processed is None:
        processed = stats.get("memory_processed", 0) + stats.get("disk_processed", 0)
    return {
        "downtime_ms": stats.get("downtime"),
        "data_transferred_bytes": processed,
        "memory_iterations": stats.get("memory_iteration"),
        "dirty_rate_pages_s": dirty,
        "dirty_rate_mib_s": round(dirty * page / float(MIB), 2) if dirty is not None else None,
        "libvirt_time_ms": stats.get("time_elapsed"),
    }


def summarize(results):
    """(changed, failed, message) for a list of per-VM results."""
    counts = {}
    for entry in results:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    changed = counts.get(MIGRATED, 0) > 0
    failed = bool(counts.get(FAILED) or counts.get(ABORTED))
    text = ", ".join("%d %s" % (n, outcome) for outcome, n in sorted(counts.items()))
    return changed, failed, text


def base_result(name, uuid, source, destination):
    return {"name": name, "uuid": uuid, "source": source, "destination": destination, "outcome": None,
            "elapsed_s": None, "downtime_ms": None, "data_transferred_bytes": None, "memory_iterations": None,
            "dirty_rate_pages_s": None, "dirty_rate_mib_s": None, "libvirt_time_ms": None, "policy_steps": [],
            "copy_storage": False, "error": None}


# ==============================================================================================================
# The engine (libvirt)


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


class Job:
    """A running migration."""

    def __init__(self, plan, policy, flags, params, migrator=None):
        self.plan = plan
        self.migrator = migrator
        self.flags = flags
        self.params = params
        self.timeout_s = completion_timeout_s(policy, plan.memory_bytes, plan.disk_bytes if plan.copy_storage else 0)
        self.escalator = Escalator(policy, self.timeout_s)
        self.done = threading.Event()
        self.thread = None
        self.watcher = None
        self.watch_dom = None     # the domain on the watcher's own connection to the source
        self.started = None
        self.started_wall = None
        self.api_returned = None
        self.abort_reason = None
        self.abort_text = None
        self.result = None
        self.last_stats = None
        self.last_poll = None
        self.progress = {}
        self.timings = {}


class Migrator:
    """Moves VMs from the source libvirt to one destination. Use as a context manager (closes its connections).

    Several Migrators of one source (one per destination) can share the source connection (`source_conn`) and run
    their moves together under one Batch."""

    def __init__(self, source_uri, destination_uri, policy, destination=None, destination_connect_uri=None,
                 verify=True, record_history=True, home=None, progress=None, log=None, source_conn=None):
        self.source_uri = source_uri
        self.destination_uri = destination_uri
        self.destination_connect_uri = destination_connect_uri or destination_uri
        self.destination = destination
        self.policy = policy
        self.verify = verify
        self.record_history = record_history
        self.home = home
        self.progress = progress          # callable(snapshot dict), called about once a second
        self.log = log or (lambda _msg: None)
        self.sconn = source_conn
        self._owns_source = source_conn is None
        self.dconn = None
        self.source = source_conn.getHostname() if source_conn is not None else None
        self._abort_requested = None

    # -- connections --------------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._owns_source:
            close_quietly(self.sconn)
        close_quietly(self.dconn)
        self.sconn = self.dconn = None
        return False

    def connect_source(self):
        if self.sconn is None:
            self.sconn = open_connection(self.source_uri)
            self.source = self.sconn.getHostname()
        return self.sconn

    def connect(self):
        """Open both connections and refuse a destination that is the source itself."""
        parse_libvirt_uri(self.source_uri, "uri")
        _transport, dest_host = parse_libvirt_uri(self.destination_uri, "destination_uri")
        if not dest_host:
            raise HvmaintError("destination_uri %r names no host: the source's libvirtd must reach the destination"
                               " over the network" % self.destination_uri)
        if self.destination_connect_uri != self.destination_uri:
            parse_libvirt_uri(self.destination_connect_uri, "destination_connect_uri")
        self.connect_source()
        try:
            self.dconn = open_connection(self.destination_connect_uri)
        except HvmaintError as exc:
            raise HvmaintError("destination %s is unreachable, nothing was moved: %s"
                               % (self.destination or dest_host, exc)) from exc
        dest_hostname = self.dconn.getHostname()
        if self.destination is None:
            self.destination = dest_hostname
        try:
            same_uuid = _host_uuid(self.sconn) == _host_uuid(self.dconn)
        except libvirt.libvirtError:
            same_uuid = False
        if same_uuid or dest_hostname == self.source:
            raise HvmaintError("destination %s (%s) is the source host %s itself: nothing to migrate"
                               % (self.destination, self.destination_connect_uri, self.source))

    def _reconnect_destination(self):
        """After a failure the destination connection may be dead (its libvirtd restarted): try once more."""
        close_quietly(self.dconn)
        self.dconn = None
        try:
            self.dconn = open_connection(self.destination_connect_uri)
        except HvmaintError:
            self.dconn = None
        return self.dconn

    # -- pre-flight ---------------------------------------------------------------------------------------------
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
        if plan.offline:
            self._plan_offline_storage(plan, root)
        else:
            self._plan_storage(plan, root)
        plan.metadata = read_domain_metadata(dom) if self.record_history else {}
        plan.action = "move"
        return plan

    def _classify_disks(self, disks):
        """classify_disks with this source's storage pools, and its mounts when the module runs on the source."""
        local = parse_libvirt_uri(self.source_uri, "uri")[1] is None
        mountinfo = None
        if local:
            try:
                with open("/proc/self/mountinfo", encoding="utf-8") as handle:
                    mountinfo = handle.read()
            except OSError:
                mountinfo = None
        return classify_disks(
            disks, pool_type_of_path=self._pool_type_of_path, pool_type_of_name=self._pool_type_of_name,
            fs_type_of_path=(lambda path: fs_type_from_mountinfo(path, mountinfo)) if mountinfo else None)

    def _plan_storage(self, plan, root):
        disks = domain_disks(root)
        if not disks or self.policy.copy_storage == "never":
            return
        classified = self._classify_disks(disks)
        plan.copy_storage, plan.migrate_disks = decide_copy_storage(self.policy.copy_storage, classified, plan.name)
        if plan.copy_storage:
            for disk in classified:
                if disk["copy"] or (plan.migrate_disks is None and disk["how"] != NOT_COPIED):
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

    # -- running ------------------------------------------------------------------------------------------------
    def request_abort(self, why="abort requested"):
        """Ask the run to abort its migrations (safe to call from a signal handler)."""
        self._abort_requested = why

    def run(self, plans):
        """Migrate the planned VMs; return one result per plan, in the plan's order."""
        return Batch(self.policy, progress=self.progress, migrators=[self]).run([(self, plan) for plan in plans])

    def _start(self, plan, wake):
        if plan.offline:
            flags, params = offline_flags(), {}
        else:
            flags = migration_flags(self.policy, plan.copy_storage)
            params = migration_params(self.policy, plan.migrate_disks)
        job = Job(plan, self.policy, flags, params, migrator=self)
        job.result = base_result(plan.name, plan.uuid, self.source, self.destination)
        job.result["copy_storage"] = plan.copy_storage
        job.result["mode"] = "offline" if plan.offline else "live"
        job.result["policy_steps"] = [{"at_s": 0.0, "iteration": 0, "action": "note", "detail": note}
                                      for note in plan.notes]
        job.started = time.monotonic()
        job.started_wall = time.time()
        job.thread = threading.Thread(target=self._migrate, args=(job, wake), name="migrate-%s" % plan.name)
        job.thread.daemon = True
        job.thread.start()
        if not plan.offline:
            job.watcher = threading.Thread(target=self._watch, args=(job,), name="watch-%s" % plan.name)
            job.watcher.daemon = True
            job.watcher.start()
        return job

    def _watch(self, job):
        """Poll the job about once a second until it ends (progress, escalation, timeouts). Each job has its own
        watcher because a statistics query can block for seconds while libvirt tears a source QEMU down: in a
        shared loop that would hold back the other jobs and the start of the next migration.

        The watcher talks to the source over its own connection, as `virsh domjobinfo` would from another
        terminal, so that none of its calls waits behind the long migrateToURI3 call on the shared one."""
        conn = None
        try:
            conn = open_connection(self.source_uri)
            job.watch_dom = conn.lookupByUUIDString(job.plan.uuid)
        except (HvmaintError, libvirt.libvirtError):
            job.watch_dom = None  # the shared connection serves
        try:
            while not job.done.wait(POLL_INTERVAL_S):
                try:
                    self._monitor(job)
                except Exception as exc:  # noqa: BLE001 - a watcher must not die silently; the migration goes on
                    job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1),
                                                "iteration": None, "action": "error",
                                                "detail": "monitoring failed: %s" % exc})
        finally:
            job.watch_dom = None
            close_quietly(conn)

    def _migrate(self, job, wake):
        plan = job.plan
        try:
            try:
                # QEMU keeps the limit until changed; set it for every migration so an earlier run's escalated
                # value does not carry over.
                if not plan.offline:
                    plan.dom.migrateSetMaxDowntime(self.policy.max_downtime_ms, 0)
                    job.progress["downtime_limit_ms"] = self.policy.max_downtime_ms
                api_start = time.monotonic()
                job.timings["before_api_s"] = api_start - job.started
                plan.dom.migrateToURI3(self.destination_uri, job.params, job.flags)
                job.api_returned = time.monotonic()
                job.timings["api_s"] = job.api_returned - api_start
                self._after_success(job)
            except libvirt.libvirtError as exc:
                job.api_returned = job.api_returned or time.monotonic()
                self._after_failure(job, exc)
        except Exception as exc:  # noqa: BLE001 - a worker thread must always report, never die silently
            job.result.update(outcome=FAILED, error="internal error: %s: %s" % (type(exc).__name__, exc))
        finally:
            job.result["elapsed_s"] = round(time.monotonic() - job.started, 3)
            job.result["started_at"] = round(job.started_wall, 3)
            job.result["finished_at"] = round(time.time(), 3)
            job.result["timings_s"] = {k: round(v, 4) for k, v in job.timings.items()}
            job.result["policy_steps"].extend(job.escalator.steps)
            job.done.set()
            wake.set()

    def _after_success(self, job):
        plan = job.plan
        t0 = time.monotonic()
        dest_dom = self.dconn.lookupByUUIDString(plan.uuid)
        stats = _completed_stats(dest_dom)
        job.result.update(completed_figures(stats))
        if plan.copy_storage:
            self._disk_figures(job, dest_dom)
        job.result["outcome"] = MIGRATED
        if self.verify:
            problems = self._verify_moved(plan, dest_dom, job)
            if problems:
                job.result.update(outcome=FAILED, error="; ".join(problems))
        job.timings["verify_s"] = time.monotonic() - t0
        if self.record_history and job.result["outcome"] == MIGRATED:
            t1 = time.monotonic()
            self._record(dest_dom, plan, job, MIGRATED, home_if_unset=self.source)
            job.timings["history_s"] = time.monotonic() - t1

    def _disk_figures(self, job, dest_dom):
        # The destination's completed statistics cover memory only: the disks were mirrored by the source (NBD).
        # Take what the source reported while polling, or else what the copy allocated on the destination.
        disk = (job.last_stats or {}).get("disk_processed") or 0
        if not disk:
            for target in job.plan.migrate_disks or []:
                try:
                    disk += dest_dom.blockInfo(target)[1]
                except libvirt.libvirtError:
                    pass
        job.result["disk_transferred_bytes"] = disk
        if job.result.get("data_transferred_bytes") is not None:
            job.result["data_transferred_bytes"] += disk

    def _verify_moved(self, plan, dest_dom, job):
        """Running and persistent on the destination; gone from the source (a left-over definition is removed)."""
        problems = []
        if plan.offline and dest_dom.isActive():
            problems.append("%s runs on %s after an offline migration" % (plan.name, self.destination))
        elif not plan.offline and not dest_dom.isActive():
            problems.append("%s is not running on %s after the migration" % (plan.name, self.destination))
        if not dest_dom.isPersistent():
            problems.append("%s is not persistent on %s after the migration" % (plan.name, self.destination))
        left = _lookup(self.sconn, uuid=plan.uuid)
        if left is not None:
            if left.isActive():
                problems.append("%s still runs on %s after the migration" % (plan.name, self.source))
            elif not problems:
                left.undefine()
                job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                            "action": "repair", "detail": "removed the definition libvirt left on"
                                            " %s" % self.source})
        return problems

    def _after_failure(self, job, exc):
        plan = job.plan
        code = exc.get_error_code()
        reason = job.abort_reason
        if reason is None and code == getattr(libvirt, "VIR_ERR_OPERATION_ABORTED", 78):
            reason = "user"   # aborted from outside: state=aborted, virsh domjobabort, or a signal to the module
        where = self._locate(plan)
        job.result["where"] = where
        src, dst = where["source"], where["destination"]
        if plan.offline:
            moved = dst.get("persistent") and not src.get("defined")
        else:
            moved = dst.get("running") and dst.get("persistent") and not src.get("running")
        if moved:
            # libvirt reported an error after the VM had moved (e.g. in the confirm phase): it did move.
            job.result["outcome"] = MIGRATED
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "note", "detail": "libvirt reported an error after the VM"
                                        " moved: %s" % str(exc).strip()})
            dest_dom = _lookup(self.dconn, uuid=plan.uuid)
            stats = _completed_stats(dest_dom) if dest_dom is not None else {}
            job.result.update(completed_figures(stats))
            self._repair(plan, job, where)
            if self.record_history and dest_dom is not None:
                self._record(dest_dom, plan, job, MIGRATED, home_if_unset=self.source)
            return
        if reason == "user":
            job.result["outcome"] = ABORTED
            job.result["error"] = "aborted on request (%s); %s" % (self._abort_requested or "job cancelled",
                                                                   _where_text(plan.name, self.source,
                                                                               self.destination, where))
        else:
            job.result["outcome"] = FAILED
            why = job.abort_text if job.abort_reason else str(explain(exc, "migration failed"))
            job.result["error"] = "%s; %s" % (why, _where_text(plan.name, self.source, self.destination, where))
            if job.abort_reason:
                job.result["timed_out"] = job.abort_reason
        self._repair(plan, job, where)
        if self.record_history and where["source"].get("defined"):
            dom = _lookup(self.sconn, uuid=plan.uuid)
            if dom is not None:
                self._record(dom, plan, job, job.result["outcome"], home_if_unset=None)

    def _locate(self, plan):
        """Where the VM is now: defined / running / persistent on source and destination (None: unknown)."""
        where = {"source": _presence(self.sconn, plan.uuid)}
        dest = _presence(self.dconn, plan.uuid)
        if dest.get("error") and self._reconnect_destination() is not None:
            dest = _presence(self.dconn, plan.uuid)
        where["destination"] = dest
        return where

    def _repair(self, plan, job, where):
        """Restore the rule: defined on exactly one host, running on at most one."""
        src, dst = where["source"], where["destination"]

        def note(detail):
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "repair", "detail": detail})
        try:
            if dst.get("running") and dst.get("persistent") and src.get("defined") and not src.get("running"):
                _lookup(self.sconn, uuid=plan.uuid).undefine()
                note("removed the stale definition on %s (the VM runs on %s)" % (self.source, self.destination))
                src["defined"] = False
            elif src.get("running") and not src.get("persistent") and not dst.get("running"):
                self.sconn.defineXML(plan.inactive_xml)
                note("defined %s again on %s, where it runs" % (plan.name, self.source))
                src["defined"] = src["persistent"] = True
            elif dst.get("running") and not dst.get("persistent") and not src.get("defined"):
                self.dconn.defineXML(plan.inactive_xml)
                note("defined %s on %s, where it runs" % (plan.name, self.destination))
                dst["defined"] = dst["persistent"] = True
            if (plan.offline and src.get("defined") and not src.get("running") and dst.get("defined")
                    and not dst.get("running") and not plan.destination_defined):
                # The offline move half-happened: keep the source's definition, which nothing has touched.
                _lookup(self.dconn, uuid=plan.uuid).undefine()
                note("removed the definition the failed offline migration left on %s" % self.destination)
                dst["defined"] = False
            if (src.get("running") and dst.get("defined") and not dst.get("running")
                    and not plan.destination_defined):
                _lookup(self.dconn, uuid=plan.uuid).undefine()
                note("removed the definition the failed migration left on %s" % self.destination)
                dst["defined"] = False
            if not src.get("defined") and not dst.get("defined") and dst.get("error") is None:
                self.sconn.defineXML(plan.inactive_xml)
                note("%s was defined nowhere: defined it again on %s from its saved XML" % (
                    plan.name, self.source))
                src["defined"] = True
        except (libvirt.libvirtError, AttributeError) as exc:
            note("repair failed: %s" % exc)

    def _record(self, dom, plan, job, outcome, home_if_unset):
        move = {"at": utc_now(), "from": self.source, "to": self.destination, "outcome": outcome,
                "seconds": round(time.monotonic() - job.started, 2), "by": "hvmaint.libvirt.live_migrate"}
        if job.result.get("downtime_ms") is not None:
            move["downtime_ms"] = job.result["downtime_ms"]
        if job.result.get("data_transferred_bytes") is not None:
            move["data_bytes"] = job.result["data_transferred_bytes"]
        data = with_move(plan.metadata, move, home_if_unset=home_if_unset)
        if self.home and outcome == MIGRATED:
            data["home"] = self.home
        try:
            write_domain_metadata(dom, data)
            job.result["history"] = {"home": data.get("home"), "moves": len(data.get("moves") or [])}
        except libvirt.libvirtError as exc:
            job.result["policy_steps"].append({"at_s": None, "iteration": None, "action": "note",
                                               "detail": "could not record the move in the VM's metadata: %s" % exc})

    # -- monitoring ---------------------------------------------------------------------------------------------
    def _monitor(self, job):
        if job.plan.offline:
            return  # no memory to copy, nothing to steer: libvirt only moves the definition
        now = time.monotonic()
        last = job.last_stats or {}
        if last.get("data_processed") and last.get("data_remaining") == 0 and not job.escalator.postcopy:
            # All data sent: only the switch-over and libvirt's clean-up remain, nothing to steer. A query now can
            # block for seconds while libvirt stops QEMU on the source.
            return
        try:
            stats = (job.watch_dom or job.plan.dom).jobStats(0)
        except libvirt.libvirtError:
            return  # the job just ended, or the domain is being torn down on the source
        elapsed = now - job.started
        previous = job.last_stats
        interval = (now - job.last_poll) if job.last_poll else None
        prev_processed = None
        if previous:
            prev_processed = previous.get("data_processed")
        job.progress.update(progress_from_stats(stats, prev_processed, interval))
        if job.escalator.postcopy:
            job.progress["phase"] = "postcopy"
        elif stats.get("disk_processed") and not stats.get("memory_processed"):
            job.progress["phase"] = "disk"
        else:
            job.progress["phase"] = "memory" if stats.get("memory_processed") else "starting"
        job.last_stats, job.last_poll = stats, now
        if job.abort_reason or job.done.is_set():
            return
        dom = job.watch_dom or job.plan.dom
        for action, value in job.escalator.observe(stats, elapsed):
            if action == "abort":
                self._abort(job, job.escalator.fired, value)
                continue
            if action == "downtime":
                problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.migrateSetMaxDowntime, value, 0)
            else:
                problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.migrateStartPostCopy, 0)
            if problem:
                job.escalator.steps.append({"at_s": round(elapsed, 1), "iteration": None, "action": "error",
                                            "detail": "%s failed: %s" % (action, problem)})
            elif action == "downtime":
                job.progress["downtime_limit_ms"] = value

    def _abort(self, job, reason, why):
        job.abort_reason, job.abort_text = reason, why
        dom = job.watch_dom or job.plan.dom
        problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.abortJob)
        if problem:
            # In post-copy, or the job just ended: nothing to cancel.
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "error", "detail": "abort (%s) failed: %s" % (why, problem)})


# ==============================================================================================================
# Running several moves at once


class Batch:
    """Runs planned moves of one source host, to one destination or several, in the order given: at most
    policy.max_parallel at a time from the source and at most policy.max_parallel_per_destination into any one
    destination. A move whose destination is full waits while later moves to other destinations start."""

    def __init__(self, policy, progress=None, migrators=()):
        self.policy = policy
        self.progress = progress          # callable(snapshot dict), called about once a second
        self.migrators = list(migrators)
        self._jobs = []
        self._queued = []
        self._last_progress_write = 0.0

    def request_abort(self, why="abort requested"):
        """Ask every migration of the batch to abort (safe to call from a signal handler)."""
        for migrator in self.migrators:
            migrator.request_abort(why)

    def _abort_requested(self):
        return next((m._abort_requested for m in self.migrators if m._abort_requested), None)

    def run(self, entries):
        """entries: [(migrator, plan)]. Return one result per entry, in the entries' order."""
        for migrator, _plan in entries:
            if migrator not in self.migrators:
                self.migrators.append(migrator)
        results = {}
        for migrator, plan in entries:
            if plan.action == ALREADY_THERE:
                entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
                entry.update(outcome=ALREADY_THERE, elapsed_s=0.0)
                results[plan.name] = entry
        self._queued = [(migrator, plan) for migrator, plan in entries if plan.action == "move"]
        running = []
        inbound = {}
        wake = threading.Event()
        stop_starting = False
        while self._queued or running:
            abort = self._abort_requested()
            if abort:
                stop_starting = True
            # Finished jobs first, so that every slot they free is filled in this round, not a poll later.
            for job in [job for job in running if job.done.is_set()]:
                running.remove(job)
                inbound[id(job.migrator)] -= 1
                results[job.plan.name] = job.result
                if job.result["outcome"] in (FAILED, ABORTED):
                    # A failure stops the list: VMs already moving finish, the others are not started.
                    stop_starting = True
            while not stop_starting and len(running) < self.policy.max_parallel:
                ready = next((item for item in self._queued
                              if inbound.get(id(item[0]), 0) < self.policy.max_parallel_per_destination), None)
                if ready is None:
                    break
                self._queued.remove(ready)
                migrator, plan = ready
                inbound[id(migrator)] = inbound.get(id(migrator), 0) + 1
                job = migrator._start(plan, wake)
                self._jobs.append(job)
                running.append(job)
            # Each job's own watcher polls it (Migrator._watch); this loop only starts, reaps and aborts.
            for job in running:
                if abort and job.abort_reason is None and not job.done.is_set():
                    job.migrator._abort(job, "user", abort)
            if stop_starting and self._queued:
                for migrator, plan in self._queued:
                    entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
                    entry.update(outcome=SKIPPED, error="not started: %s" % (
                        self._abort_requested() or "an earlier migration of the list failed"))
                    results[plan.name] = entry
                self._queued = []
            self._write_progress(force=not (self._queued or running))
            if running:
                wake.wait(POLL_INTERVAL_S)
                wake.clear()
        return [results[plan.name] for _migrator, plan in entries]

    def _write_progress(self, force=False):
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_progress_write = now
        vms = []
        for job in self._jobs:
            if job.done.is_set():
                entry = job.result
                vms.append({"name": entry["name"], "destination": entry["destination"], "status": entry["outcome"],
                            "elapsed_s": entry["elapsed_s"], "downtime_ms": entry.get("downtime_ms"),
                            "error": entry.get("error")})
            else:
                vm = {"name": job.plan.name, "destination": job.migrator.destination, "status": "running",
                      "elapsed_s": round(now - job.started, 1)}
                vm.update(job.progress)
                vms.append(vm)
        vms += [{"name": plan.name, "destination": migrator.destination, "status": "queued"}
                for migrator, plan in self._queued]
        destinations = _unique(m.destination for m in self.migrators)
        self.progress({"source": self.migrators[0].source if self.migrators else None,
                       "destination": destinations[0] if len(destinations) == 1 else None,
                       "destinations": destinations, "updated": time.time(), "finished": force, "vms": vms})


def _unique(values):
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


# ==============================================================================================================
# Aborting from outside (state=aborted)


def abort_migrations(conn, names, check_mode=False):
    """Cancel the running migration job of each named VM on this host; the VMs stay on this host."""
    results = []
    for name in names:
        entry = {"name": name, "outcome": None, "error": None}
        dom = _lookup(conn, name=name)
        if dom is None:
            entry.update(outcome="not_found", error="%s is not a VM on this host" % name)
        else:
            try:
                info = dom.jobInfo()
            except libvirt.libvirtError as exc:
                info = [0]
                entry["error"] = str(exc)
            if not info or info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                entry["outcome"] = "no_job"
            elif check_mode:
                entry["outcome"] = "would_abort"
            else:
                try:
                    dom.abortJob()
                    entry["outcome"] = ABORTED
                except libvirt.libvirtError as exc:
                    entry.update(outcome=FAILED, error="cannot abort the job of %s: %s" % (name, exc))
        results.append(entry)
    return results


def bounded_call(timeout_s, call, *args):
    """Run call(*args), a libvirt call, in a helper thread and wait at most timeout_s: None when it returned,
    else what went wrong (its error, or that it did not return in time; the helper is left to finish alone)."""
    box = {}

    def run():
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller as text
            box["error"] = str(exc).strip() or type(exc).__name__

    helper = threading.Thread(target=run, name="libvirt-call")
    helper.daemon = True
    helper.start()
    helper.join(timeout_s)
    if helper.is_alive():
        return "no answer from libvirt within %g s" % timeout_s
    return box.get("error")


def write_progress_file(path, snapshot):
    """Write the progress snapshot atomically (the action plugin may read it at any moment)."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = "%s.tmp" % path
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(snapshot, handle)
    os.replace(tmp, path)


# ==============================================================================================================
# small libvirt helpers


def _lookup(conn, name=None, uuid=None):
    """The domain by name or UUID, or None when the host has none; other errors propagate."""
    if conn is None:
        return None
    try:
        return conn.lookupByName(name) if name is not None else conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _presence(conn, uuid):
    try:
        dom = _lookup(conn, uuid=uuid)
        if dom is None:
            return {"defined": False, "running": False, "persistent": False}
        return {"defined": bool(dom.isPersistent()), "running": bool(dom.isActive()),
                "persistent": bool(dom.isPersistent())}
    except (libvirt.libvirtError, AttributeError) as exc:
        return {"defined": None, "running": None, "persistent": None, "error": str(exc).strip() or "no connection"}


def _where_text(name, source, destination, where):
    def side(host, info):
        if info.get("error"):
            return "%s: unknown (%s)" % (host, info["error"])
        return "%s: %s" % (host, "running" if info["running"] else ("defined, shut off" if info["defined"]
                                                                    else "absent"))
    return "%s is now %s; %s" % (name, side(source, where["source"]), side(destination, where["destination"]))


def _completed_stats(dom):
    # libvirt keeps the statistics of a finished incoming migration on the destination domain (the source domain
    # is gone once UNDEFINE_SOURCE completes); KEEP_COMPLETED leaves them for `virsh domjobinfo --completed`.
    try:
        return dom.jobStats(_flag("VIR_DOMAIN_JOB_STATS_COMPLETED", 1) | _flag("VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED", 2))
    except libvirt.libvirtError:
        return {}


def _memory_bytes(root):
    element = root.find("memory")
    if element is None or not (element.text or "").strip():
        return 0
    units = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": MIB, "mib": MIB, "mb": 10 ** 6,
             "g": GIB, "gib": GIB, "gb": 10 ** 9, "t": GIB * 1024, "tib": GIB * 1024, "tb": 10 ** 12}
    return int(element.text.strip()) * units.get(element.get("unit", "KiB").lower(), 1024)


def _pool_type(pool):
    return ET.fromstring(pool.XMLDesc(0)).get("type")


def _host_uuid(conn):
    uuid = ET.fromstring(conn.getCapabilities()).findtext("./host/uuid")
    return (uuid or "").strip() or None


# ==============================================================================================================
# What the module runs


POLICY_OPTIONS = ("bandwidth_mib_s", "max_downtime_ms", "escalation", "parallel_connections", "compression",
                  "copy_storage", "tls_stream", "completion_timeout_s_per_gib", "completion_timeout_min_s",
                  "completion_timeout_action", "progress_timeout_s", "progress_timeout_action", "max_parallel",
                  "max_parallel_per_destination", "shutoff_vms")


def vm_names(params):
    if params.get("moves"):
        names = [move.get("name") for move in params["moves"]]
    else:
        names = [params["name"]] if params.get("name") else list(params.get("names") or [])
    if not names:
        raise HvmaintError("give name (one VM), names (a list of VMs) or moves (VMs with their destinations)")
    blank = [n for n in names if not isinstance(n, str) or not n.strip()]
    if blank:
        raise HvmaintError("VM names must not be empty")
    return names


def planned_moves(params):
    """[(name, destination, destination_uri, destination_connect_uri)] from name/names + destination, or moves.

    Raises HvmaintError naming every move without a usable destination, before any connection is opened."""
    transport = params.get("transport") or "tls"
    if params.get("moves"):
        shared = [key for key in ("name", "names", "destination", "destination_uri", "destination_connect_uri")
                  if params.get(key)]
        if shared:
            raise HvmaintError("moves names each VM with its destination: do not also give %s" % ", ".join(shared))
        entries = [(move.get("name"), move.get("destination"), move.get("destination_uri"),
                    move.get("destination_connect_uri")) for move in params["moves"]]
    else:
        entries = [(name, params.get("destination"), params.get("destination_uri"),
                    params.get("destination_connect_uri")) for name in vm_names(params)]
    moves, problems = [], []
    for name, destination, uri, connect_uri in entries:
        try:
            uri = uri or derive_destination_uri(destination, transport)
            parse_libvirt_uri(uri, "destination_uri")
            if connect_uri:
                parse_libvirt_uri(connect_uri, "destination_connect_uri")
        except HvmaintError as exc:
            problems.append("%s: %s" % (name, exc) if params.get("moves") else str(exc))
            continue
        moves.append((name, destination, uri, connect_uri))
    if problems:
        raise HvmaintError("; ".join(_unique(problems)))
    return moves


def diff_for(results):
    before, after = {}, {}
    for entry in results:
        before[entry["name"]] = {"host": entry["source"]}
        moved = entry["outcome"] in (MIGRATED, WOULD_MIGRATE)
        after[entry["name"]] = {"host": entry["destination"] if moved or entry["outcome"] == ALREADY_THERE
                                else entry["source"]}
        if entry["outcome"] == ALREADY_THERE:
            before[entry["name"]] = {"host": entry["destination"]}
    return {"before": before, "after": after}


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


def _check_result(migrator, plan, policy):
    entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
    entry["outcome"] = WOULD_MIGRATE if plan.action == "move" else ALREADY_THERE
    entry["copy_storage"] = plan.copy_storage
    entry["mode"] = "offline" if plan.offline else "live"
    entry["policy_steps"] = [{"at_s": 0.0, "iteration": 0, "action": "note", "detail": note}
                             for note in plan.notes]
    entry["completion_timeout_s"] = completion_timeout_s(policy, plan.memory_bytes,
                                                         plan.disk_bytes if plan.copy_storage else 0)
    return entry


def execute(params, check_mode=False, on_start=None):
    """Run the module's work; return its result dict. `on_start(batch)` is called before the first migration
    (the module installs its signal handlers there)."""
    names = vm_names(params)
    progress_file = params.get("progress_file")
    if params.get("state") == "aborted":
        parse_libvirt_uri(params["uri"], "uri")
        conn = open_connection(params["uri"])
        try:
            aborts = abort_migrations(conn, names, check_mode)
        finally:
            close_quietly(conn)
        failed = [a for a in aborts if a["outcome"] in (FAILED, "not_found")]
        return {"changed": any(a["outcome"] in (ABORTED, "would_abort") for a in aborts), "aborts": aborts,
                "failed": bool(failed),
                "msg": "; ".join(a["error"] for a in failed) if failed else "%d job(s) aborted" % sum(
                    a["outcome"] == ABORTED for a in aborts)}
    policy = validate_policy({key: params.get(key) for key in POLICY_OPTIONS})
    parse_libvirt_uri(params["uri"], "uri")
    moves = planned_moves(params)
    refuse_duplicates(names)

    def progress(snapshot):
        write_progress_file(progress_file, snapshot)

    batch = Batch(policy, progress=progress if progress_file else None)
    finished = False
    sconn = None
    try:
        sconn = open_connection(params["uri"])
        with contextlib.ExitStack() as migrators:  # closes each destination connection; sconn is closed below
            # One Migrator per destination, in the order the destinations first appear; all share sconn.
            by_uri, entries = {}, []
            for name, destination, uri, connect_uri in moves:
                migrator = by_uri.get(uri)
                if migrator is None:
                    migrator = by_uri[uri] = migrators.enter_context(Migrator(
                        params["uri"], uri, policy, destination=destination, destination_connect_uri=connect_uri,
                        verify=params.get("verify", True), record_history=params.get("record_history", True),
                        home=params.get("home"), source_conn=sconn))
                    batch.migrators.append(migrator)
                entries.append((migrator, name))
            for migrator in batch.migrators:
                migrator.connect()
            plans = plan_moves(entries)
            if check_mode:
                results = [_check_result(migrator, plan, policy) for migrator, plan in plans]
            else:
                if on_start is not None:
                    on_start(batch)
                results = batch.run(plans)
            finished = True
    finally:
        close_quietly(sconn)
        if progress_file and not finished:
            # Tell a waiting action plugin that the run is over, even when pre-flight refused it.
            try:
                write_progress_file(progress_file, {"finished": True, "updated": time.time(), "vms": []})
            except OSError:
                pass
    changed, failed, summary = summarize(results)
    if check_mode:
        changed = any(entry["outcome"] == WOULD_MIGRATE for entry in results)
    source = batch.migrators[0].source
    destinations = _unique(m.destination for m in batch.migrators)
    result = {
        "changed": changed,
        "failed": failed,
        "msg": "%s -> %s: %s" % (source, ", ".join(destinations), summary),
        "migrations": results,
        "source": source,
        "destination": destinations[0] if len(destinations) == 1 else None,
        "destinations": destinations,
        "destination_uri": batch.migrators[0].destination_uri if len(batch.migrators) == 1 else None,
        "policy": policy.as_dict(),
        "diff": diff_for(results),
    }
    return result
