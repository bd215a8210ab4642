# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The progress of running migrations: the snapshot the module writes to its progress file, and the line the
live_migrate action plugin prints from it.

This is the contract between the module (on the source host) and the action plugin (on the controller): the
plugin imports this file alone, so it must need nothing but the standard library.
"""

from __future__ import annotations

import json
import os

MIB = 1024 * 1024
GIB = 1024 * MIB

PROGRESS_WRITE_INTERVAL_S = 1.0


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


def write_progress_file(path, snapshot):
    """Write the progress snapshot atomically (the action plugin may read it at any moment)."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = "%s.tmp" % path
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(snapshot, handle)
    os.replace(tmp, path)
