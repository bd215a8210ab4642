# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: what the HTML report of a run that moves VMs shows (a drain, a return, and any
later operation that plans with evacuation_plan and moves with live_migrate), shaped for the template of the role
move_report: the timeline's geometry, where each VM went, what was refused and why, each host's memory before and
after. Pure: the template only lays it out, so every figure it shows is computed (and unit-tested) here.
"""

from __future__ import annotations

import datetime

from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    HostView,
    fmt_mib,
    normalize_capacity_options,
)

# Outcomes of live_migrate that leave the VM on its destination.
ARRIVED = ("migrated", "already_there")

# Timeline geometry, in SVG user units (the SVG scales to the page's width).
LABEL_WIDTH = 230
CHART_WIDTH = 700
RIGHT_MARGIN = 180
ROW_HEIGHT = 24
AXIS_HEIGHT = 28
# Tick spacings (seconds) a person reads easily; the first that gives at most 10 ticks is used.
TICK_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MEMORY_BAR_WIDTH = 640
MEMORY_LABEL_WIDTH = 90


class ReportError(ValueError):
    """Input the report cannot be made from (a wrong type, not a missing figure: those are shown as unknown)."""


def _utc(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value):
    return None if value is None else round(float(value), 1)


def _tick_step(span):
    for step in TICK_STEPS:
        if span / step <= 10:
            return step
    return TICK_STEPS[-1]


def _list(value, what):
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReportError("%s must be a list, not %s" % (what, type(value).__name__))
    return value


def _moves_by_vm(plan):
    """Each planned move by VM name, with the wave's tier and mode when the move itself lacks them."""
    moves = {}
    for wave in _list(plan.get("waves"), "plan.waves"):
        for move in wave.get("moves") or []:
            entry = dict(move)
            entry.setdefault("wave", wave.get("wave"))
            entry.setdefault("tier", wave.get("tier"))
            entry.setdefault("mode", wave.get("mode"))
            moves[entry["vm"]] = entry
    for move in _list(plan.get("moves"), "plan.moves"):
        moves.setdefault(move["vm"], dict(move))
    return moves


def placements(plan, migrations):
    """One row per VM the plan moved or the run tried to move: from where, where to, where it is now, how long."""
    planned = _moves_by_vm(plan)
    results = {m["name"]: m for m in migrations if m.get("name")}
    rows = []
    for name in list(planned) + [n for n in results if n not in planned]:
        move, result = planned.get(name, {}), results.get(name)
        source = move.get("source") or (result or {}).get("source")
        destination = move.get("destination") or (result or {}).get("destination")
        outcome = result.get("outcome") if result else "not run"
        data = (result or {}).get("data_transferred_bytes")
        rows.append({
            "vm": name, "tier": move.get("tier"), "wave": move.get("wave"), "mode": move.get("mode"),
            "source": source, "destination": destination, "outcome": outcome,
            "now_on": destination if outcome in ARRIVED else source,
            "arrived": outcome in ARRIVED,
            "predicted_s": _seconds(move.get("estimated_seconds")),
            "actual_s": _seconds((result or {}).get("elapsed_s")),
            "downtime_ms": (result or {}).get("downtime_ms"),
            "data_mib": None if data is None else round(data / 1048576.0, 1),
            "reason": move.get("reason"), "prediction": move.get("prediction"),
            "error": (result or {}).get("error"),
        })
    return rows


def timeline(rows, migrations):
    """Bars of every migration that started, on one time axis: the actual run, and the predicted time from the
    same start, so a person sees at a glance which moves took longer than foreseen."""
    by_name = {row["vm"]: row for row in rows}
    started = sorted((m for m in migrations if m.get("started_at") is not None),
                     key=lambda m: (m["started_at"], m.get("name") or ""))
    if not started:
        return None
    origin = min(m["started_at"] for m in started)
    end = origin
    for m in started:
        row = by_name.get(m["name"], {})
        end = max(end, m.get("finished_at") or m["started_at"], m["started_at"] + (row.get("predicted_s") or 0))
    span = max(end - origin, 1.0)
    scale = CHART_WIDTH / span
    bars = []
    for index, m in enumerate(started):
        row = by_name.get(m["name"], {})
        finished = m.get("finished_at") or m["started_at"]
        predicted = row.get("predicted_s")
        bars.append({
            "vm": m["name"], "destination": m.get("destination"), "outcome": m.get("outcome"),
            "arrived": m.get("outcome") in ARRIVED, "wave": row.get("wave"), "tier": row.get("tier"),
            "y": AXIS_HEIGHT + index * ROW_HEIGHT,
            "x": round(LABEL_WIDTH + (m["started_at"] - origin) * scale, 1),
            "width": round(max((finished - m["started_at"]) * scale, 2.0), 1),
            "predicted_width": None if predicted is None else round(max(predicted * scale, 1.0), 1),
            "start_s": round(m["started_at"] - origin, 1), "end_s": round(finished - origin, 1),
            "start": _utc(m["started_at"]), "end": _utc(finished),
            "actual_s": _seconds(m.get("elapsed_s")), "predicted_s": predicted,
            "downtime_ms": m.get("downtime_ms"),
        })
    step = _tick_step(span)
    ticks, at = [], 0.0
    while at <= span + 1e-9:
        ticks.append({"x": round(LABEL_WIDTH + at * scale, 1), "label": ("%g s" % at)})
        at += step
    waves = {}
    for drawn in bars:
        if drawn["wave"] is None:
            continue
        band = waves.setdefault(drawn["wave"], {"wave": drawn["wave"], "tier": drawn["tier"], "x0": drawn["x"],
                                                "x1": drawn["x"] + drawn["width"]})
        band["x0"] = min(band["x0"], drawn["x"])
        band["x1"] = max(band["x1"], drawn["x"] + drawn["width"])
    return {
        "origin": _utc(origin), "span_s": round(span, 1), "bars": bars, "ticks": ticks,
        "waves": [dict(waves[n], width=round(waves[n]["x1"] - waves[n]["x0"], 1)) for n in sorted(waves)],
        "width": LABEL_WIDTH + CHART_WIDTH + RIGHT_MARGIN, "height": AXIS_HEIGHT + len(bars) * ROW_HEIGHT + 8,
        "label_width": LABEL_WIDTH, "chart_right": LABEL_WIDTH + CHART_WIDTH,
    }


def refusals(plan, rows):
    """Everything that did not go as a plain move, each with its reason in the planner's or libvirt's words."""
    refused = []
    for item in _list(plan.get("unplaceable"), "plan.unplaceable"):
        refused.append({"vm": item.get("vm"), "what": "nowhere to go (policy %s)" % item.get("policy"),
                        "why": "; ".join(item.get("reasons") or [])})
    for item in _list(plan.get("actions"), "plan.actions"):
        what = {"leave": "left on %s" % item.get("host"), "shutdown": "shut down on %s" % item.get("host"),
                "suspend": "suspended to disk on %s" % item.get("host")}.get(item.get("action"), item.get("action"))
        refused.append({"vm": item.get("vm"), "what": what, "why": item.get("reason") or ""})
    for item in _list(plan.get("cannot_return"), "plan.cannot_return"):
        refused.append({"vm": item.get("vm"), "what": "cannot come home (stays on %s)" % item.get("source"),
                        "why": "; ".join(item.get("reasons") or [])})
    for row in rows:
        if row["outcome"] not in ARRIVED:
            refused.append({"vm": row["vm"], "what": "%s (still on %s)" % (row["outcome"], row["source"]),
                            "why": row["error"] or ("its wave did not run" if row["outcome"] == "not run" else "")})
    excluded = [{"host": item.get("host"), "why": item.get("reason")}
                for item in _list(plan.get("excluded_destinations"), "plan.excluded_destinations")]
    return refused, excluded


def memory(hosts_before, hosts_after, host_overrides, involved):
    """Memory the VMs take on each host the run touched, before and after, against what the host can give (as
    the planner counts it: the declared or reported size, and the memory of the VMs that run there)."""
    opts = normalize_capacity_options()
    overrides = host_overrides or {}
    before = {h["name"]: h for h in _list(hosts_before, "hosts_before") if isinstance(h, dict) and h.get("name")}
    after = {h["name"]: h for h in _list(hosts_after, "hosts_after") if isinstance(h, dict) and h.get("name")}
    names = [name for name in involved if name in before or name in after]
    views = {}
    for name in names:
        views[name] = tuple(HostView(facts[name], overrides.get(name), opts) if name in facts else None
                            for facts in (before, after))
    largest = max([1] + [v.memory_declared_mib or 0 for pair in views.values() for v in pair if v]
                  + [v.mem_used for pair in views.values() for v in pair if v])
    scale = MEMORY_BAR_WIDTH / float(largest)
    rows = []
    for name in names:
        then, now = views[name]
        known = now or then
        declared = known.memory_declared_mib
        row = {"host": name, "declared_mib": declared, "declared": fmt_mib(declared),
               "declared_from": "inventory (hvmaint_memory_mib)" if known.memory_declared_from == "host_overrides"
               else "reported by the host",
               "capacity_x": None if declared is None else round(declared * scale, 1)}
        for key, view in (("before", then), ("after", now)):
            row[key] = None if view is None else {
                "used_mib": view.mem_used, "used": fmt_mib(view.mem_used), "vms": view.load_count,
                "width": round(view.mem_used * scale, 1),
                "percent": None if not declared else round(100.0 * view.mem_used / declared)}
        rows.append(row)
    return {"rows": rows, "bar_width": MEMORY_BAR_WIDTH, "label_width": MEMORY_LABEL_WIDTH,
            "width": LABEL_WIDTH + CHART_WIDTH + RIGHT_MARGIN, "height": len(rows) * 44 + 18}


def totals(plan, migrations):
    """Predicted against actual for the whole run: each wave from its first start to its last end (waves run one
    after the other), as the play's own report line counts it."""
    by_name = {m["name"]: m for m in migrations if m.get("started_at") is not None}
    predicted = actual = 0.0
    ran = False
    for wave in _list(plan.get("waves"), "plan.waves"):
        mine = [by_name[m["vm"]] for m in wave.get("moves") or [] if m["vm"] in by_name]
        if not mine:
            continue
        ran = True
        predicted += wave.get("predicted_seconds") or 0.0
        actual += max(m.get("finished_at") or m["started_at"] for m in mine) - min(m["started_at"] for m in mine)
    if not ran and by_name:
        ran = True
        actual = (max(m.get("finished_at") or m["started_at"] for m in by_name.values())
                  - min(m["started_at"] for m in by_name.values()))
        predicted = None
    return (round(predicted, 1) if predicted is not None else None, round(actual, 1)) if ran else (None, None)


def report_data(plan, migrations=None, hosts_before=None, hosts_after=None, host_overrides=None, operation="drain",
                subject=None, actor=None, generated_at=None):
    """Everything the report shows. `plan` is evacuation_plan's result (or any dict with its keys: waves, moves,
    unplaceable, actions, cannot_return, excluded_destinations, plan_warnings); `migrations` live_migrate's
    results; `hosts_before`/`hosts_after` hypervisor facts (hypervisor_info's `hypervisor`) read before the first
    move and after the last; `generated_at` epoch seconds."""
    if plan is None:
        plan = {}
    if not isinstance(plan, dict):
        raise ReportError("the plan must be a dict (evacuation_plan's result), not %s" % type(plan).__name__)
    migrations = [m for m in _list(migrations, "migrations") if isinstance(m, dict)]
    rows = placements(plan, migrations)
    refused, excluded = refusals(plan, rows)
    involved = []
    for name in [subject] + [r["source"] for r in rows] + [r["destination"] for r in rows]:
        if name and name not in involved:
            involved.append(name)
    predicted, actual = totals(plan, migrations)
    downtimes = [r["downtime_ms"] for r in rows if r["downtime_ms"] is not None]
    actor = actor or {}
    return {
        "operation": operation, "subject": subject, "by": actor.get("user"), "job": actor.get("job"),
        "generated_at": _utc(generated_at), "ok": plan.get("ok", True) and all(r["arrived"] for r in rows),
        "counts": {"planned": len(rows), "arrived": sum(r["arrived"] for r in rows),
                   "not_arrived": sum(not r["arrived"] for r in rows), "refused": len(refused)},
        "predicted_s": predicted, "actual_s": actual, "longest_downtime_ms": max(downtimes) if downtimes else None,
        "placements": rows, "timeline": timeline(rows, migrations), "refused": refused, "excluded": excluded,
        "warnings": [w for w in _list(plan.get("plan_warnings"), "plan.plan_warnings") if w],
        "memory": memory(hosts_before, hosts_after, host_overrides, involved),
    }
