# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""What a run reports for each VM: its outcome, the figures libvirt measured, and the summary and diff of a run
(pure).
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import MIB

# Outcomes of one VM in the results.
MIGRATED, ALREADY_THERE, FAILED, ABORTED, WOULD_MIGRATE, SKIPPED = (
    "migrated", "already_there", "failed", "aborted", "would_migrate", "skipped")


# Steps of a move that still ended migrated which say something went wrong on the way: its time measures the
# fault, so the next plans do not learn from it (_migration_model.not_representative).
FAULT_ACTIONS = frozenset(("error", "repair", "postcopy_resume", "abort"))


def faulted(result, more_steps=()):
    """Whether a move ran into a fault (a step above, or a needs-attention verdict)."""
    steps = list(result.get("policy_steps") or []) + list(more_steps)
    return bool(result.get("needs_attention")) or any(step.get("action") in FAULT_ACTIONS for step in steps)


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
