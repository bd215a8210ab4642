# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The readiness report of migration_readiness: the rule book of _readiness.py applied to every VM of a source
host against every destination, and rendered as a text table (table() also serves the evacuation plan's).
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    build_host_views,
    capacity_checks,
    copy_warnings,
    cpu_checks,
    destination_checks,
    estimate_seconds,
    fmt_mib,
    host_vms,
    index_cpu_matrix,
    known_list,
    normalize_capacity_options,
    not_candidate_reason,
    vm_checks,
)


# --------------------------------------------------------------------------------------------------------------
# the readiness report


def assess(hosts, source, vms=None, destinations=None, cpu_matrix=None, host_overrides=None,
           memory_overcommit=None, memory_reserve_mib=None, vcpu_overcommit=None, bandwidth_mib_s=None):
    """Readiness of each VM on source against each destination.

    Returns {pairs, vm_summaries, excluded_destinations, summary_lines, ready}. Each pair is judged on its own
    (as if that VM were the only one moving); the evacuation planner accounts for VMs moving together.
    """
    opts = normalize_capacity_options(memory_overcommit, memory_reserve_mib, vcpu_overcommit, bandwidth_mib_s)
    views = build_host_views(hosts, host_overrides, opts)
    if source not in views:
        raise HvmaintError("source %s is not in hosts (known hosts: %s)" % (source, known_list(views)))
    src = views[source]
    source_vms = sorted(host_vms(src.facts), key=lambda v: (v.get("name") or "", v.get("uuid") or ""))
    if vms is not None:
        known = {v.get("name") for v in source_vms}
        unknown = sorted(set(vms) - known)
        if unknown:
            raise HvmaintError("vms names VMs that are not on %s: %s (VMs on %s: %s)"
                               % (source, ", ".join(unknown), source, known_list(known)))
        wanted = set(vms)
        source_vms = [v for v in source_vms if v.get("name") in wanted]

    if destinations is None:
        names = sorted(n for n in views if n != source)
    else:
        unknown = sorted(set(destinations) - set(views))
        if unknown:
            raise HvmaintError("destinations names hosts that are not in hosts: %s (known hosts: %s)"
                               % (", ".join(unknown), known_list(views)))
        names = sorted(set(destinations))
    excluded, candidates = [], []
    for name in names:
        reason = not_candidate_reason(views[name], source)
        if reason:
            excluded.append({"host": name, "reason": reason})
        else:
            candidates.append(views[name])

    cpu_index = index_cpu_matrix(cpu_matrix)
    bandwidth = opts["bandwidth_mib_s"]
    pairs, summaries = [], []
    for vm in source_vms:
        base = vm_checks(vm, source)
        mode = base["mode"]
        blocked_by = {}
        ok_hosts = []
        for dst in candidates:
            blockers = list(base["blockers"])
            warnings = list(base["warnings"])
            notes = list(base["notes"])
            b, w = destination_checks(vm, mode, src, dst)
            blockers += b
            warnings += w
            b, w = capacity_checks(vm, mode, dst, opts)
            blockers += b
            warnings += w
            b, w, n = cpu_checks(vm, dst.name, cpu_index)
            blockers += b
            warnings += w
            notes += n
            warnings += copy_warnings(vm, mode, bandwidth)
            migratable = mode is not None and not blockers
            if migratable:
                ok_hosts.append(dst.name)
            for issue in blockers:
                blocked_by.setdefault(issue["code"], []).append(dst.name)
            pairs.append({
                "vm": vm.get("name"), "uuid": vm.get("uuid"), "source": source, "destination": dst.name,
                "state": vm.get("state"), "mode": mode, "migratable": migratable, "blockers": blockers,
                "warnings": warnings, "notes": notes, "estimated_seconds": estimate_seconds(vm, mode, bandwidth),
            })
        if not ok_hosts:
            verdict = "blocked"
        else:
            verdict = "offline" if mode == "offline" else "ok"
        summaries.append({
            "vm": vm.get("name"), "uuid": vm.get("uuid"), "source": source, "state": vm.get("state"),
            "memory_mib": vm.get("memory_mib"), "vcpus": vm.get("vcpus"), "candidates": ok_hosts,
            "verdict": verdict, "blocked_by": blocked_by,
            # Host-independent reasons (state, passthrough) are worth saying once per VM.
            "vm_blockers": base["blockers"],
        })
    return {
        "pairs": pairs,
        "vm_summaries": summaries,
        "excluded_destinations": excluded,
        "summary_lines": render_summary(summaries, excluded, len(candidates)),
        "ready": all(s["verdict"] != "blocked" for s in summaries),
    }


# --------------------------------------------------------------------------------------------------------------
# text table


def table(headers, rows, caps=None):
    """Fixed-width columns sized to their content (capped), as list of lines."""
    caps = caps or {}
    widths = []
    for col, head in enumerate(headers):
        width = max([len(head)] + [len(str(r[col])) for r in rows])
        if col in caps:
            width = min(width, caps[col])
        widths.append(width)

    def line(cells):
        out = []
        for col, cell in enumerate(cells):
            text = str(cell)
            if len(text) > widths[col] and col < len(cells) - 1:
                text = text[:widths[col] - 1] + "~"
            out.append(text if col == len(cells) - 1 else text.ljust(widths[col]))
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _short_list(names, limit=3):
    if len(names) <= limit:
        return ",".join(names)
    return "%s +%d" % (",".join(names[:limit]), len(names) - limit)


def render_summary(vm_summaries, excluded=(), candidate_count=None):
    """Plain-text table for task output: VM, state, mem, candidates, blockers."""
    rows = []
    for s in vm_summaries:
        # The VM's own blockers hold on every host: name them once, without hosts.
        own = sorted({i["code"] for i in s.get("vm_blockers") or []})
        blockers = list(own)
        for code in sorted(set(s["blocked_by"]) - set(own)):
            hosts = s["blocked_by"][code]
            if candidate_count and len(hosts) == candidate_count and candidate_count > 1:
                blockers.append("%s(all)" % code)
            else:
                blockers.append("%s(%s)" % (code, _short_list(hosts, 2)))
        if not candidate_count:
            blockers.append("no-destination")
        rows.append([s["vm"], s["state"], fmt_mib(s["memory_mib"]).replace(" ", ""),
                     _short_list(s["candidates"]) or "-", " ".join(blockers) or "-"])
    lines = table(["VM", "state", "mem", "candidates", "blockers"], rows, caps={0: 32, 3: 40})
    for item in excluded:
        lines.append("not a destination: %s" % item["reason"])
    return lines
