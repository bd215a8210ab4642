# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Evacuation planner: which VM goes where, in which order, to empty a host (and to bring its VMs home).

Pure computation from hypervisor facts (docs/facts.md) and the readiness checks; deterministic: hosts and VMs
are always taken in name order, so the same facts in any order give the same plan.

Placement is worst-fit decreasing: tier by tier (most important first), the biggest VM first, each to the
compatible host with the most free memory. For the first tier, hosts that hold no VM of that tier come before
the rest, to spread the most important VMs over failure domains.

Scale (10,000 VMs over 1,000 hosts in about a second): each requirement a VM can have (a network, a bridge, a
machine type, a pool...) is checked once per host, and a VM's compatible hosts are the intersection of its
requirements' host sets. The hosts of each such set sit in a heap ordered by free memory, with lazily refreshed
entries: while planning a host only gets fuller (and, for the first tier, gains a VM of that tier), so a stale
entry always over-states the host and is corrected when it reaches the top.
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_placement import (
    _EPS,
    _POLICY_ACTION,
    _group_text,
    _Options,
    _Placement,
    _Waves,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration_model import MigrationModel
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    build_host_views,
    cpu_checks,
    destination_checks,
    fmt_mib,
    host_vms,
    known_list,
    not_candidate_reason,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness_report import table

# --------------------------------------------------------------------------------------------------------------
# the planner


class _Planner(_Placement, _Waves):
    """Plans a drain or a return; placement and waves come from _evacuation_placement.py."""

    def __init__(self, hosts_facts, options):
        self.o = options
        self.views = build_host_views(hosts_facts, options.host_overrides, options.capacity)
        unknown = sorted(set(options.exclude_hosts) - set(self.views))
        if unknown:
            raise HvmaintError("exclude_hosts names hosts that are not in hosts: %s (known hosts: %s)"
                               % (", ".join(unknown), known_list(self.views)))
        self.warnings = []
        self._warned = set()
        self.states = {}
        self.excluded = []
        self._compat = {}
        self._atoms = {}
        self._heaps = {}
        self._all_destinations = frozenset()
        self.model = None
        if options.history is not None:
            self.model = MigrationModel.from_history(
                options.history, {vm.get("name"): vm.get("metadata") for view in self.views.values()
                                  for vm in host_vms(view.facts) if vm.get("name")}, self.o.bandwidth)

    # ---- drain

    def drain(self, source):
        if source not in self.views:
            raise HvmaintError("source %s is not in hosts (known hosts: %s)" % (source, known_list(self.views)))
        self._setup_destinations(sorted(self.views), source)
        unknown_tiers = []
        items = [self._make_vm(vm, source, unknown_tiers) for vm in
                 sorted(host_vms(self.views[source].facts), key=lambda v: (v.get("name") or "", v.get("uuid") or ""))]
        self._unknown_tier_warning(unknown_tiers)
        self._unknown_home_warning(item.vm for item in items)

        live = {t: [] for t in self.o.tier_order}
        offline = {t: [] for t in self.o.tier_order}
        unplaceable, actions = [], []

        def cannot(item, reasons):
            policy = self.o.policy[item.tier]
            unplaceable.append({"vm": item.name, "uuid": item.uuid, "source": source, "tier": item.tier,
                                "state": item.state, "policy": policy, "reasons": reasons})
            if policy != "fail":
                actions.append({"vm": item.name, "uuid": item.uuid, "host": source, "tier": item.tier,
                                "action": policy, "reason": "%s: %s" % (
                                    _POLICY_ACTION[policy] % {"src": source}, "; ".join(reasons))})
                if policy == "suspend" and item.vm.get("persistent") is False:
                    self.warn("%s is transient: managed save needs a persistent VM, save it with virsh save to a"
                              " file instead" % item.name)

        def leave_off(item, why):
            actions.append({"vm": item.name, "uuid": item.uuid, "host": source, "tier": item.tier,
                            "action": "leave", "reason": "shut off; stays defined on %s: %s" % (source, why)})

        for item in items:
            if item.mode == "offline":
                if self.o.shutoff_vms == "leave":
                    leave_off(item, "shutoff_vms is leave")
                elif item.base["blockers"]:
                    leave_off(item, "; ".join(b["reason"] for b in item.base["blockers"]))
                else:
                    offline[item.tier].append(item)
            elif item.mode is None or item.base["blockers"]:
                cannot(item, [b["reason"] for b in item.base["blockers"]])
            else:
                live[item.tier].append(item)

        batches = []
        for tier in self.o.tier_order:
            moves = []
            # Biggest first packs best; names break ties so the plan never depends on input order.
            for item in sorted(live[tier], key=lambda i: (-i.memory, i.name, i.uuid or "")):
                chosen, reason, extra = self._place(item)
                if chosen is None:
                    cannot(item, reason)
                else:
                    moves.append(self._move(item, chosen, reason, extra))
            batches.append((tier, "live", moves))
        # Definitions last: they need no room to move, and must not take it from running VMs.
        for tier in self.o.tier_order:
            moves = []
            for item in sorted(offline[tier], key=lambda i: (-i.memory, i.name, i.uuid or "")):
                chosen, reason, extra = self._place(item)
                if chosen is None:
                    leave_off(item, "; ".join(reason))
                    self.warn("%s stays defined on %s: %s" % (item.name, source, "; ".join(reason)))
                else:
                    moves.append(self._move(item, chosen, reason, extra))
            batches.append((tier, "offline", moves))

        self._pattern_warnings()
        ok = not any(u["policy"] == "fail" for u in unplaceable)
        if ok:
            waves, moves = self._waves(batches)
        else:
            # Nothing should move when a VM that must not be left behind has nowhere to go.
            waves, moves, actions = [], [], []
        result = {
            "ok": ok, "direction": "drain", "source": source, "waves": waves, "moves": moves,
            "unplaceable": unplaceable, "actions": actions, "cannot_return": [], "warnings": self.warnings,
            "excluded_destinations": self.excluded,
            "predicted_seconds": round(sum(w["predicted_seconds"] for w in waves), 1),
        }
        if self.model is not None:
            result["prediction_model"] = self.model.describe()
        result["summary_lines"] = render_plan(result, self.o)
        return result

    # ---- return

    def bring_home(self, home):
        if home not in self.views:
            raise HvmaintError("return_to %s is not in hosts (known hosts: %s)" % (home, known_list(self.views)))
        if home in self.o.exclude_hosts:
            raise HvmaintError("return_to %s is also in exclude_hosts: it cannot be both" % home)
        view = self.views[home]
        blocked_home = not_candidate_reason(view, None, ignore_mark=self.o.ignore_home_mark)
        if blocked_home is None and view.mem_capacity is None:
            blocked_home = "%s reports no memory_total_mib: give host_overrides.%s.memory_mib" % (home, home)
        if blocked_home is None:
            self._setup_destinations([home], None, ignore_mark_of=home if self.o.ignore_home_mark else None)
        home_uuids = {vm.get("uuid") for vm in host_vms(view.facts) if vm.get("uuid")}

        unknown_tiers = []
        items = []
        for name in sorted(self.views):
            if name == home:
                continue
            for vm in sorted(host_vms(self.views[name].facts),
                             key=lambda v: (v.get("name") or "", v.get("uuid") or "")):
                if (vm.get("metadata") or {}).get("home") == home:
                    items.append(self._make_vm(vm, name, unknown_tiers))
        self._unknown_tier_warning(unknown_tiers)
        self._unknown_home_warning(vm for name in sorted(self.views) for vm in host_vms(self.views[name].facts))

        cannot_return, actions = [], []

        def cannot(item, reasons):
            cannot_return.append({"vm": item.name, "uuid": item.uuid, "source": item.source, "tier": item.tier,
                                  "state": item.state, "reasons": reasons})

        live, offline = [], []
        for item in items:
            if blocked_home:
                cannot(item, [blocked_home])
            elif item.mode == "offline" and item.uuid in home_uuids:
                self.warn("%s is shut off on %s and already defined on %s: nothing to move (undefine the stale"
                          " copy on %s)" % (item.name, item.source, home, item.source))
            elif item.mode == "offline" and self.o.shutoff_vms == "leave":
                actions.append({"vm": item.name, "uuid": item.uuid, "host": item.source, "tier": item.tier,
                                "action": "leave", "reason": "shut off; stays defined on %s: shutoff_vms is leave"
                                % item.source})
            elif item.mode is None or item.base["blockers"]:
                cannot(item, [b["reason"] for b in item.base["blockers"]])
            else:
                (live if item.mode == "live" else offline).append(item)
        if blocked_home:
            self.warn("nothing returns: %s" % blocked_home)

        st = self.states.get(home)
        order = self.o.tier_rank
        batches = []
        for mode, group in (("live", live), ("offline", offline)):
            by_tier = {t: [] for t in self.o.tier_order}
            for item in sorted(group, key=lambda i: (order[i.tier], -i.memory, i.name, i.uuid or "")):
                move = self._return_one(item, st, cannot)
                if move is not None:
                    by_tier[item.tier].append(move)
            batches.extend((t, mode, by_tier[t]) for t in self.o.tier_order)

        self._pattern_warnings()
        waves, moves = self._waves(batches)
        result = {
            "ok": not blocked_home, "direction": "return", "return_to": home, "waves": waves, "moves": moves,
            "unplaceable": [], "actions": actions, "cannot_return": cannot_return, "warnings": self.warnings,
            "excluded_destinations": self.excluded,
            "predicted_seconds": round(sum(w["predicted_seconds"] for w in waves), 1),
        }
        if self.model is not None:
            result["prediction_model"] = self.model.describe()
        result["summary_lines"] = render_plan(result, self.o)
        return result

    def _return_one(self, item, st, cannot):
        src = self.views[item.source]
        blockers = destination_checks(item.vm, item.mode, src, st.view)[0]
        if self.o.cpu_index is not None:
            blockers += cpu_checks(item.vm, st.name, self.o.cpu_index)[0]
        if blockers:
            cannot(item, [b["reason"] for b in blockers])
            return None
        short = []
        if item.memory > st.free + _EPS:
            short.append("%s needs %s of memory and %s has %s left after the returns planned before it (%s)"
                         % (item.name, fmt_mib(item.memory), st.name, fmt_mib(max(st.free, 0)),
                            st.view.memory_explanation(self.o.capacity)))
        if item.vcpus and st.vcpu_free is not None and item.vcpus > st.vcpu_free:
            short.append("%s needs %d vCPUs and %s has %g left after the returns planned before it"
                         % (item.name, item.vcpus, st.name, max(st.vcpu_free, 0)))
        if item.has_local and not self._pools_fit(item, st):
            short.append("the copied disks of %s do not fit the pools of %s" % (item.name, st.name))
        fits = not short
        if not fits and item.mode == "live":
            cannot(item, short)
            return None
        extra = []
        conflict = item.groups and any(st.groups.get(g) for g in item.groups)
        if conflict:
            if self.o.strict_anti_affinity and item.mode == "live":
                cannot(item, ["%s already holds a member of group %s (strict_anti_affinity)"
                              % (st.name, _group_text(item.groups))])
                return None
            extra.append({"code": "anti_affinity", "reason": "%s (group %s) returns to %s, which already holds a"
                                                             " member of the group"
                          % (item.name, _group_text(item.groups), st.name)})
        if fits:
            free_after = st.free - item.memory
            self._take(st, item)
            reason = "home host (metadata.home) (%s free after)" % fmt_mib(free_after)
        else:
            reason = "home host (metadata.home); no room to start it there now"
            extra.append({"code": "no_room_to_start", "reason": "%s moves offline to %s, which has no room to"
                                                                " start it" % (item.name, st.name)})
        if item.mode == "offline":
            reason = "definition only: " + reason
        return self._move(item, st, reason, extra)


# --------------------------------------------------------------------------------------------------------------
# public entry points


def plan_evacuation(hosts_facts, source, **options):
    """Plan emptying `source`. Options: tiers, default_tier, tier_order, anti_affinity, strict_anti_affinity,
    unplaceable_policy, shutoff_vms, host_overrides, memory_overcommit, memory_reserve_mib, vcpu_overcommit,
    bandwidth_mib_s, max_parallel_per_source, max_wave_size, cpu_matrix, exclude_hosts (all optional)."""
    return _Planner(hosts_facts, _Options(**options)).drain(source)


def plan_return(hosts_facts, home_host, **options):
    """Plan bringing every VM whose metadata.home is `home_host` back to it, never overfilling it.
    Same options as plan_evacuation (unplaceable_policy does not apply), and ignore_home_mark: plan as if the home
    host's own maintenance mark were cleared (other hosts' marks still count)."""
    options.pop("unplaceable_policy", None)
    return _Planner(hosts_facts, _Options(**options)).bring_home(home_host)


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %d s" % divmod(seconds, 60)
    hours, rest = divmod(seconds, 3600)
    return "%d h %d min" % (hours, rest // 60)


def _model_text(model, bandwidth):
    if model is None:
        return "%g MiB/s per move" % bandwidth
    learned = sum(p["migrations"] for p in model["pairs"])
    if not learned:
        return "default model: %g s + memory at %g MiB/s per move, no history yet" % (
            model["default"]["fixed_s"], model["default"]["rate_mib_s"])
    own = model.get("vms_with_history") or 0
    return "learned from %d earlier migrations%s" % (
        learned, ", %d VMs from their own moves" % own if own else "")


def render_plan(result, options=None):
    """Plain-text table of a plan for task output."""
    lines = []
    if result["direction"] == "drain":
        head = "drain %s" % result["source"]
    else:
        head = "return to %s" % result["return_to"]
    if not result["ok"]:
        lines.append("%s: NOT OK, nothing should move" % head)
    else:
        lines.append("%s: %d moves in %d waves, predicted %s%s" % (
            head, len(result["moves"]), len(result["waves"]), _duration(result["predicted_seconds"]),
            "" if options is None else " (%s, %d at once per source)" % (
                _model_text(result.get("prediction_model"), options.bandwidth), options.max_parallel)))
    rows = []
    for wave in result["waves"]:
        for move in wave["moves"]:
            rows.append([wave["wave"], wave["tier"], move["vm"], fmt_mib(move["memory_mib"]).replace(" ", ""),
                         move["source"], move["destination"], "%gs" % move["estimated_seconds"]
                         if move["mode"] == "live" else "offline", move["reason"]])
    if rows:
        lines.extend(table(["wave", "tier", "VM", "mem", "from", "to", "est", "why"], rows,
                           caps={2: 32, 4: 24, 5: 24}))
    for u in result["unplaceable"]:
        lines.append("unplaceable: %s (tier %s, policy %s): %s"
                     % (u["vm"], u["tier"], u["policy"], "; ".join(u["reasons"])))
    for a in result["actions"]:
        lines.append("%s: %s on %s: %s" % (a["action"], a["vm"], a["host"], a["reason"]))
    for c in result["cannot_return"]:
        lines.append("cannot return: %s (on %s): %s" % (c["vm"], c["source"], "; ".join(c["reasons"])))
    for w in result["warnings"]:
        lines.append("warning: %s" % w)
    return lines
