# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Measured load of one hypervisor: what its VMs really use, sampled over a window (host_load, docs/load.md).

Facts (hypervisor_info) say what each VM is given; a rebalance needs what each VM uses. libvirt's domain
statistics count each VM's CPU time since it started, so two samples a window apart give its CPU use as a rate
(cores busy); its memory in use is what the guest reports through the balloon driver (available - unused), else
what its QEMU process holds (RSS), else its allocation. The host's own CPU time (all its processes, not only
the VMs) is sampled the same way.

sample() is the only part that talks to libvirt; load_from_samples() is pure, so it is tested on recorded stats.
"""

from __future__ import annotations

import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, explain

# Where a VM's memory in use comes from, best first (docs/load.md).
MEMORY_SOURCES = ("guest", "rss", "allocation")

MIN_WINDOW_S = 1
MAX_WINDOW_S = 300
DEFAULT_WINDOW_S = 5

_NS = 1e9


def _kib_mib(value):
    return None if value is None else round(int(value) / 1024.0, 1)


def check_window(window_s):
    try:
        window = float(window_s)
    except (TypeError, ValueError):
        raise HvmaintError("window_s must be a number of seconds, got %r" % (window_s,)) from None
    if not MIN_WINDOW_S <= window <= MAX_WINDOW_S:
        raise HvmaintError("window_s must be between %d and %d seconds, got %g" % (MIN_WINDOW_S, MAX_WINDOW_S, window))
    return window


def sample(conn, libvirt):
    """One sample: {at (monotonic s), host_cpu_ns {user, kernel, idle, iowait}, vms {uuid: {name, stats}}}."""
    stats = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
             | libvirt.VIR_DOMAIN_STATS_VCPU)
    try:
        started = time.monotonic()
        domains = conn.getAllDomainStats(stats, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        host_cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
        # The call can take seconds on a busy host (each VM's QEMU is asked in turn): its middle is when the
        # figures were read, so a slow sample does not stretch or shrink the window.
        at = (started + time.monotonic()) / 2
    except libvirt.libvirtError as exc:
        raise explain(exc, "read the domain statistics") from None
    vms = {}
    for dom, values in domains:
        vms[dom.UUIDString()] = {"name": dom.name(), "stats": dict(values)}
    return {"at": at, "host_cpu_ns": {k: int(v) for k, v in host_cpu.items()}, "vms": vms}


def memory_in_use(stats):
    """(MiB in use, where it comes from) from a VM's balloon statistics."""
    available, unused = stats.get("balloon.available"), stats.get("balloon.unused")
    if available is not None and unused is not None and int(available) >= int(unused):
        # The guest's own view (virtio balloon driver with stats): what it does not leave unused.
        return _kib_mib(int(available) - int(unused)), "guest"
    if stats.get("balloon.rss") is not None:
        return _kib_mib(stats["balloon.rss"]), "rss"
    return _kib_mib(stats.get("balloon.current")), "allocation"


def load_from_samples(first, second, host):
    """The host_load result from two samples and the host's size ({name, cpu_count, memory_total_mib}).

    A VM present in one sample only (started, stopped or migrated during the window) is reported without a CPU
    figure: its rate over part of the window would mislead."""
    window = second["at"] - first["at"]
    if window <= 0:
        raise HvmaintError("the two samples of %s are not in order" % host.get("name"))
    cpu_count = host.get("cpu_count") or None
    vms = []
    for uuid in sorted(second["vms"], key=lambda u: (second["vms"][u]["name"], u)):
        now = second["vms"][uuid]
        before = (first["vms"].get(uuid) or {}).get("stats") or {}
        stats = now["stats"]
        vcpus = stats.get("vcpu.current")
        used_mib, source = memory_in_use(stats)
        entry = {"name": now["name"], "uuid": uuid, "vcpus": vcpus, "cpu_cores": None, "cpu_fraction": None,
                 "cpu_seconds": None, "memory_used_mib": used_mib, "memory_source": source,
                 "memory_current_mib": _kib_mib(stats.get("balloon.current"))}
        if "cpu.time" in before and "cpu.time" in stats:
            seconds = max(int(stats["cpu.time"]) - int(before["cpu.time"]), 0) / _NS
            entry["cpu_seconds"] = round(seconds, 3)
            entry["cpu_cores"] = round(seconds / window, 3)
            if vcpus:
                entry["cpu_fraction"] = round(min(seconds / window / int(vcpus), 1.0), 3)
        vms.append(entry)
    busy = None
    h0, h1 = first["host_cpu_ns"], second["host_cpu_ns"]
    if cpu_count and all(k in h0 and k in h1 for k in ("user", "kernel")):
        busy_ns = (h1["user"] - h0["user"]) + (h1["kernel"] - h0["kernel"])
        busy = round(min(max(busy_ns / _NS / window / cpu_count, 0.0), 1.0), 3)
    measured = [vm["cpu_cores"] for vm in vms if vm["cpu_cores"] is not None]
    return {
        "name": host.get("name"),
        "window_s": round(window, 3),
        "cpu_count": cpu_count,
        "memory_total_mib": host.get("memory_total_mib"),
        "host_cpu_busy_fraction": busy,
        "vms_cpu_cores": round(sum(measured), 3),
        "vms_memory_used_mib": round(sum(vm["memory_used_mib"] or 0 for vm in vms), 1),
        "vms": vms,
    }


def measure(conn, libvirt, window_s, sleep=time.sleep):
    """Sample, wait window_s, sample again: the host's measured load."""
    try:
        info = conn.getInfo()
        name = conn.getHostname()
    except libvirt.libvirtError as exc:
        raise explain(exc, "read the host's size") from None
    first = sample(conn, libvirt)
    sleep(window_s)
    second = sample(conn, libvirt)
    return load_from_samples(first, second, {"name": name, "cpu_count": info[2], "memory_total_mib": info[1]})
