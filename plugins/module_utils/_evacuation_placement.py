# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""How the evacuation planner places VMs: its options, its state while planning, and the placement and wave
rules it mixes into _evacuation_plan._Planner (see that file's docstring for the method and its scale).
"""

from __future__ import annotations

import fnmatch
import heapq
import re

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    LOAD_STATES,
    MIB,
    check_requirement,
    copy_warnings,
    cpu_checks,
    destination_checks,
    estimate_seconds,
    fmt_mib,
    host_vms,
    index_cpu_matrix,
    known_list,
    local_disks,
    normalize_capacity_options,
    not_candidate_reason,
    pool_needs,
    requirements,
    vm_checks,
)

DEFAULT_TIER_ORDER = ("critical", "high", "normal", "low")
DEFAULT_TIER = "normal"
POLICIES = ("fail", "shutdown", "suspend", "leave")
SHUTOFF_CHOICES = ("move", "leave")

_POLICY_ACTION = {
    "shutdown": "shut down on %(src)s and start again when it returns",
    "suspend": "save to disk on %(src)s (managed save) and restore when it returns",
    "leave": "leave running on %(src)s (the host will not be empty)",
}

# Float slack for memory comparisons (overcommit ratios make capacities fractional).
_EPS = 1e-6


# --------------------------------------------------------------------------------------------------------------
# options


class _Matcher:
    """{label: [names or fnmatch patterns]} from the playbook, matched against VM names."""

    def __init__(self, mapping, option):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise HvmaintError("%s must be a dictionary {name: [VM names or patterns]}" % option)
        self.exact = {}
        self.globs = []
        self.hits = set()
        self.patterns = []
        for label in sorted(mapping):
            patterns = mapping[label]
            if isinstance(patterns, str):
                patterns = [patterns]
            if not isinstance(patterns, list):
                raise HvmaintError("%s.%s must be a list of VM names or patterns" % (option, label))
            for pattern in patterns:
                pattern = str(pattern)
                self.patterns.append((label, pattern))
                if any(ch in pattern for ch in "*?["):
                    self.globs.append((label, pattern, re.compile(fnmatch.translate(pattern)).match))
                else:
                    self.exact.setdefault(pattern, []).append(label)

    def labels(self, name):
        found = []
        for label in self.exact.get(name, ()):
            found.append(label)
            self.hits.add((label, name))
        for label, pattern, match in self.globs:
            if match(name):
                found.append(label)
                self.hits.add((label, pattern))
        return found

    def unused(self):
        return [(label, pattern) for label, pattern in self.patterns if (label, pattern) not in self.hits]


def _int_option(name, value, default, minimum=1, allow_none=False):
    if value is None:
        if allow_none:
            return None
        value = default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HvmaintError("%s must be a whole number, got %r" % (name, value)) from None
    if number < minimum or number != value:
        raise HvmaintError("%s must be a whole number of at least %d, got %r" % (name, minimum, value))
    return number


class _Options:
    def __init__(self, tiers=None, default_tier=None, tier_order=None, anti_affinity=None,
                 strict_anti_affinity=False, unplaceable_policy=None, shutoff_vms=None, host_overrides=None,
                 memory_overcommit=None, memory_reserve_mib=None, vcpu_overcommit=None, bandwidth_mib_s=None,
                 max_parallel_per_source=None, max_wave_size=None, cpu_matrix=None, exclude_hosts=None,
                 history=None, ignore_home_mark=False):
        self.capacity = normalize_capacity_options(memory_overcommit, memory_reserve_mib, vcpu_overcommit,
                                                   bandwidth_mib_s)
        self.bandwidth = self.capacity["bandwidth_mib_s"]
        order = list(DEFAULT_TIER_ORDER if tier_order is None else tier_order)
        if not order or not all(isinstance(t, str) and t for t in order):
            raise HvmaintError("tier_order must be a non-empty list of tier names")
        if len(set(order)) != len(order):
            raise HvmaintError("tier_order names a tier twice: %s" % ", ".join(order))
        self.tier_order = order
        self.tier_rank = {t: i for i, t in enumerate(order)}
        self.default_tier = DEFAULT_TIER if default_tier is None else default_tier
        if self.default_tier not in self.tier_rank:
            raise HvmaintError("default_tier %s is not a tier (tiers, in order: %s)"
                               % (self.default_tier, ", ".join(order)))
        self.tiers = _Matcher(tiers, "tiers")
        self._check_tier_names("tiers", tiers or {})
        self.groups = _Matcher(anti_affinity, "anti_affinity")
        self.strict_anti_affinity = bool(strict_anti_affinity)
        policy = unplaceable_policy or {}
        if not isinstance(policy, dict):
            raise HvmaintError("unplaceable_policy must be a dictionary {tier: fail|shutdown|suspend|leave}")
        self._check_tier_names("unplaceable_policy", policy)
        for tier, value in policy.items():
            if value not in POLICIES:
                raise HvmaintError("unplaceable_policy.%s is %r: choose one of %s" % (tier, value, ", ".join(POLICIES)))
        # Default: fail for every tier, so nothing is shut down or left behind unless the playbook says so.
        self.policy = {t: policy.get(t, "fail") for t in order}
        self.shutoff_vms = "move" if shutoff_vms is None else shutoff_vms
        if self.shutoff_vms not in SHUTOFF_CHOICES:
            raise HvmaintError("shutoff_vms must be move or leave, got %r" % (shutoff_vms,))
        self.host_overrides = host_overrides
        self.max_parallel = _int_option("max_parallel_per_source", max_parallel_per_source, 2)
        self.max_wave_size = _int_option("max_wave_size", max_wave_size, None, allow_none=True)
        self.cpu_index = index_cpu_matrix(cpu_matrix)
        self.cpu_bad = {}
        for (guest, host), entry in (self.cpu_index or {}).items():
            if entry.get("compatible") is False and entry.get("result") != "error":
                self.cpu_bad.setdefault(guest, set()).add(host)
        if exclude_hosts is not None and not isinstance(exclude_hosts, list):
            raise HvmaintError("exclude_hosts must be a list of host names")
        self.exclude_hosts = list(exclude_hosts or [])
        if history is not None and not isinstance(history, list):
            raise HvmaintError("history must be a list of audit ledger entries")
        # None: estimates are the lower bound (one pass at bandwidth); a list, even empty: the learned model.
        self.history = history
        # A return plans its home host while that host still carries the mark the return will clear (only after
        # the plan and the dry-run succeed, so that a return refused on bad input leaves the host marked).
        self.ignore_home_mark = bool(ignore_home_mark)

    def _check_tier_names(self, option, mapping):
        unknown = sorted(set(mapping) - set(self.tier_rank))
        if unknown:
            raise HvmaintError("%s names unknown tiers: %s (tiers, in order: %s; set tier_order to add tiers)"
                               % (option, ", ".join(unknown), ", ".join(self.tier_order)))


# --------------------------------------------------------------------------------------------------------------
# state while planning


class _HostState:
    """A destination's remaining room; stamp changes whenever it does (heap entries carry the stamp)."""

    __slots__ = ("view", "name", "free", "vcpu_free", "pool_free", "critical", "groups", "stamp")

    def __init__(self, view):
        self.view = view
        self.name = view.name
        self.free = view.mem_free
        self.vcpu_free = None if view.vcpu_capacity is None else view.vcpu_capacity - view.vcpu_used
        self.pool_free = {n: p.get("available_bytes") for n, p in (view.pools_by_name or {}).items()}
        self.critical = 0
        self.groups = {}
        self.stamp = 0


class _Heap:
    """Hosts of one compatibility set, best first: most free memory (first tier: hosts without one first)."""

    __slots__ = ("heap", "critical_first")

    def __init__(self, states, critical_first):
        self.critical_first = critical_first
        self.heap = [self.entry(st) for st in states]
        heapq.heapify(self.heap)

    def entry(self, st):
        if self.critical_first:
            return (1 if st.critical else 0, -st.free, st.name, st.stamp)
        return (-st.free, st.name, st.stamp)


class _Vm:
    """A VM to place, with what placement needs to know about it."""

    __slots__ = ("vm", "name", "uuid", "source", "state", "mode", "tier", "groups", "memory", "vcpus",
                 "has_local", "cpu_bad", "critical", "base")

    def __init__(self, vm, source, mode, tier, groups, cpu_bad, critical, base):
        self.vm = vm
        self.name = vm.get("name")
        self.uuid = vm.get("uuid")
        self.source = source
        self.state = vm.get("state")
        self.mode = mode
        self.tier = tier
        self.groups = groups
        self.memory = vm.get("memory_mib") or 0
        self.vcpus = vm.get("vcpus") or 0
        self.has_local = bool(local_disks(vm))
        self.cpu_bad = cpu_bad
        self.critical = critical
        self.base = base


def _plural(count, noun):
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


def _among(count):
    return "the only compatible host" if count == 1 else "most free memory among %d compatible hosts" % count


def _group_text(groups):
    return ", ".join(sorted(groups))


# --------------------------------------------------------------------------------------------------------------
# placement and waves (mixed into _Planner)


class _Placement:
    """Placement of one VM at a time on the compatible host with the most free memory (mixed into _Planner)."""

    def warn(self, text):
        if text not in self._warned:
            self._warned.add(text)
            self.warnings.append(text)

    def tier_of(self, vm, unknown=None):
        """The playbook's tiers mapping wins over metadata.tier (the playbook is the later, explicit word)."""
        name = vm.get("name") or ""
        labels = self.o.tiers.labels(name)
        if labels:
            return min(labels, key=self.o.tier_rank.get)
        meta = (vm.get("metadata") or {}).get("tier")
        if meta:
            if meta in self.o.tier_rank:
                return meta
            if unknown is not None:
                unknown.append("%s (tier %s)" % (name, meta))
        return self.o.default_tier

    def groups_of(self, vm):
        """Anti-affinity groups; the playbook's mapping wins over metadata.group when it names the VM."""
        labels = self.o.groups.labels(vm.get("name") or "")
        if labels:
            return frozenset(labels)
        meta = (vm.get("metadata") or {}).get("group")
        if not meta:
            return frozenset()
        return frozenset([meta] if isinstance(meta, str) else [str(g) for g in meta])

    def _setup_destinations(self, names, source_name, ignore_mark_of=None):
        for name in names:
            view = self.views[name]
            reason = not_candidate_reason(view, source_name, ignore_mark=name == ignore_mark_of)
            if reason is None and name in self.o.exclude_hosts:
                reason = "%s is in exclude_hosts" % name
            if reason is None and view.mem_capacity is None:
                reason = ("%s reports no memory_total_mib: give host_overrides.%s.memory_mib to use it"
                          % (name, name))
            if reason:
                if name != source_name:
                    self.excluded.append({"host": name, "reason": reason})
                continue
            st = _HostState(view)
            if st.vcpu_free is None:
                self.warn("%s reports no CPU count: vCPUs are not checked there" % name)
            self.states[name] = st
        self._all_destinations = frozenset(self.states)
        # VMs already on the destinations count for spreading the first tier and for anti-affinity.
        first = self.o.tier_order[0]
        for name in sorted(self.states):
            st = self.states[name]
            for vm in host_vms(st.view.facts):
                if vm.get("state") not in LOAD_STATES:
                    continue
                if self.tier_of(vm) == first:
                    st.critical += 1
                for group in self.groups_of(vm):
                    st.groups[group] = st.groups.get(group, 0) + 1

    def _make_vm(self, vm, source_name, unknown_tiers):
        tier = self.tier_of(vm, unknown_tiers)
        base = vm_checks(vm, source_name)
        return _Vm(vm, source_name, base["mode"], tier, self.groups_of(vm),
                   self.o.cpu_bad.get(vm.get("name"), ()), tier == self.o.tier_order[0], base)

    def _atom_hosts(self, src, atom, detail, vm_name):
        """Destinations meeting one requirement atom, computed once per atom for the whole plan."""
        key = (src.name, atom)
        hosts = self._atoms.get(key)
        if hosts is None:
            hosts = frozenset(name for name, st in self.states.items()
                              if not check_requirement(atom, detail, vm_name, src, st.view)[0])
            self._atoms[key] = hosts
        return hosts

    def _compatible(self, item):
        """(sorted names, name set, requirements) of the destinations passing the VM's static checks."""
        src = self.views[item.source]
        reqs = requirements(item.vm, item.mode, src)
        key = (item.source, frozenset(req[0] for req in reqs))
        found = self._compat.get(key)
        if found is None:
            ok = self._all_destinations
            for atom, detail in reqs:
                ok = ok & self._atom_hosts(src, atom, detail, item.name)
            found = (tuple(sorted(ok)), ok)
            self._compat[key] = found
        return found + (reqs,)

    def _heap(self, names, critical_first):
        key = (names, critical_first)
        heap = self._heaps.get(key)
        if heap is None:
            heap = _Heap([self.states[n] for n in names], critical_first)
            self._heaps[key] = heap
        return heap

    def _pools_fit(self, item, st):
        for pool_name, need in pool_needs(item.vm, st.view).items():
            free = st.pool_free.get(pool_name)
            if free is not None and need > free:
                return False
        return True

    def _select(self, item, heap):
        """Best host for item in heap: (chosen, best conflicting host, most free memory seen, passed over)."""
        entries = heap.heap
        states = self.states
        stash = []
        chosen = conflict = None
        most_free = None
        passed = {}
        crit = heap.critical_first
        need = item.memory
        while entries:
            entry = heapq.heappop(entries)
            st = states[entry[-2]]
            if entry[-1] != st.stamp:
                # Stale: the host has less room than this entry says; put it back where it now belongs.
                heapq.heappush(entries, heap.entry(st))
                continue
            stash.append(entry)
            if st.name in item.cpu_bad:
                passed["cpu"] = passed.get("cpu", 0) + 1
                continue
            if most_free is None or st.free > most_free.free:
                most_free = st
            if need > st.free + _EPS:
                passed["memory"] = passed.get("memory", 0) + 1
                # Hosts come by free memory, so no later one has room either (within the first tier's
                # "no critical VM yet" hosts, the ones holding one may still have more).
                if not crit or entry[0] == 1:
                    break
                continue
            if item.vcpus and st.vcpu_free is not None and item.vcpus > st.vcpu_free:
                passed["vcpus"] = passed.get("vcpus", 0) + 1
                continue
            if item.has_local and not self._pools_fit(item, st):
                passed["storage_space"] = passed.get("storage_space", 0) + 1
                continue
            if item.groups and any(st.groups.get(g) for g in item.groups):
                passed["anti_affinity"] = passed.get("anti_affinity", 0) + 1
                if conflict is None:
                    conflict = st
                continue
            chosen = st
            break
        for entry in stash:
            heapq.heappush(entries, entry)
        return chosen, conflict, most_free, passed

    def _take(self, st, item):
        st.free -= item.memory
        if st.vcpu_free is not None:
            st.vcpu_free -= item.vcpus
        if item.has_local:
            for pool_name, need in pool_needs(item.vm, st.view).items():
                if st.pool_free.get(pool_name) is not None:
                    st.pool_free[pool_name] -= need
        # A shut-off VM only reserves room; like the VMs already there, it counts for spreading once it runs.
        if item.mode == "live":
            if item.critical:
                st.critical += 1
            for group in item.groups:
                st.groups[group] = st.groups.get(group, 0) + 1
        st.stamp += 1

    def _move_warnings(self, item, dst_view):
        src = self.views[item.source]
        warnings = list(item.base["warnings"])
        warnings += destination_checks(item.vm, item.mode, src, dst_view)[1]
        warnings += copy_warnings(item.vm, item.mode, self.o.bandwidth)
        if self.o.cpu_index is not None:
            warnings += cpu_checks(item.vm, dst_view.name, self.o.cpu_index)[1]
        return warnings

    def _move(self, item, st, reason, extra_warnings=()):
        warnings = self._move_warnings(item, st.view) + list(extra_warnings)
        for w in warnings:
            self.warn(w["reason"])
        move = {
            "vm": item.name, "uuid": item.uuid, "source": item.source, "destination": st.name, "tier": item.tier,
            "mode": item.mode, "state": item.state, "reason": reason, "memory_mib": item.memory,
            "vcpus": item.vcpus, "estimated_seconds": estimate_seconds(item.vm, item.mode, self.o.bandwidth),
            "warnings": warnings,
        }
        if self.model is not None and item.mode == "live":
            seconds, move["prediction"] = self.model.predict(
                item.name, item.source, st.name, item.memory * MIB,
                sum(d.get("size_bytes") or 0 for d in local_disks(item.vm)))
            move["estimated_seconds"] = round(seconds, 1)
            history = self.model.vm_history(item.name)
            if history and history["escalated"]:
                move["last_escalation"] = {"downtime_limit_ms": history["downtime_limit_ms"],
                                           "postcopy": history["postcopy"]}
        return move

    def _static_reasons(self, item, reqs):
        """Why no host passes the static checks: one sentence per unmet requirement, in this VM's words."""
        src = self.views[item.source]
        reasons = []
        for atom, detail in reqs:
            failing = sorted(self._all_destinations - self._atom_hosts(src, atom, detail, item.name))
            if not failing:
                continue
            text = check_requirement(atom, detail, item.name, src, self.states[failing[0]].view)[0][0]["reason"]
            if len(failing) > 1:
                text += " (same on %d hosts: %s)" % (len(failing), known_list(failing, 5))
            reasons.append(text)
        return reasons

    def _place(self, item):
        """(destination state, reason text, warnings) or (None, [reasons], None)."""
        if not self.states:
            return None, ["no destination host is available (see excluded_destinations)"], None
        names, name_set, reqs = self._compatible(item)
        if not names:
            return None, self._static_reasons(item, reqs), None
        heap = self._heap(names, item.critical and item.mode == "live")
        chosen, conflict, most_free, passed = self._select(item, heap)
        count = len(names) - len(name_set.intersection(item.cpu_bad))
        extra = []
        if chosen is None and conflict is not None and not (self.o.strict_anti_affinity and item.mode == "live"):
            chosen = conflict
            extra.append({"code": "anti_affinity",
                          "reason": "%s (group %s) is placed on %s, which already holds a member of the group: no"
                                    " compatible host with room is free of it"
                                    % (item.name, _group_text(item.groups), conflict.name)})
        if chosen is None and item.mode == "offline" and most_free is not None:
            # The definition can move without room; say that starting it there may not fit.
            reason = ("definition only: %s, though it lacks room to start the VM (%s free, it needs %s)"
                      % (_among(count), fmt_mib(most_free.free), fmt_mib(item.memory)))
            extra.append({"code": "no_room_to_start", "reason": "%s moves offline to %s, which has no room to"
                                                                " start it" % (item.name, most_free.name)})
            return most_free, reason, extra
        if chosen is None:
            return None, self._capacity_reasons(item, count, most_free, passed, name_set), None
        had_critical = chosen.critical
        free_after = chosen.free - item.memory
        self._take(chosen, item)
        if item.mode == "offline":
            reason = "definition only: %s (%s free after, kept to start it there)" % (
                _among(count), fmt_mib(free_after))
        else:
            reason = "%s (%s free after)" % (_among(count), fmt_mib(free_after))
            if item.critical and len(self.o.tier_order) > 1:
                if had_critical:
                    reason += "; it already holds %s, every compatible host without one is full or passed over" % (
                        _plural(had_critical, "%s VM" % item.tier))
                else:
                    reason += "; no other %s VM there" % item.tier
        if extra and extra[0]["code"] == "anti_affinity":
            reason += "; shares the host with group %s: no compatible host with room is free of it" % (
                _group_text(item.groups))
        skipped = []
        for code, label in (("vcpus", "short of vCPUs"), ("storage_space", "short of pool space"),
                            ("anti_affinity", "holding a member of group %s" % _group_text(item.groups)),
                            ("cpu", "CPU-incompatible")):
            if passed.get(code) and not (code == "anti_affinity" and extra):
                skipped.append("%d %s" % (passed[code], label))
        if skipped:
            reason += "; passed over %s" % ", ".join(skipped)
        return chosen, reason, extra

    def _cpu_detail(self, item, name_set, limit=2):
        """What the cpu_matrix says is missing on the first `limit` candidate hosts it rules out for this VM
        (its first reason each), so that a refusal names the features, not only the count."""
        hosts = sorted(name_set.intersection(item.cpu_bad))
        texts = []
        for host in hosts[:limit]:
            entry = self.o.cpu_index.get((item.name, host)) or {}
            reasons = entry.get("reasons") or []
            texts.append(str(reasons[0]) if reasons else "%s: %s" % (host, entry.get("result") or "incompatible"))
        if len(hosts) > limit:
            texts.append("and %d more hosts" % (len(hosts) - limit))
        return (": " + "; ".join(texts)) if texts else ""

    def _capacity_reasons(self, item, count, most_free, passed, name_set=frozenset()):
        reasons = []
        if most_free is None:
            reasons.append("the cpu_matrix marks the CPU of every compatible host (%d) incompatible%s" % (
                passed.get("cpu", 0), self._cpu_detail(item, name_set)))
            return reasons
        if item.memory > most_free.free + _EPS:
            reasons.append("%s needs %s of memory; the most any of %d compatible hosts can give is %s (%s)"
                           % (item.name, fmt_mib(item.memory), count, fmt_mib(max(most_free.free, 0)),
                              most_free.name))
        elif passed.get("memory"):
            reasons.append("%s needs %s of memory, which none of the %d compatible hosts can give besides those"
                           " passed over below" % (item.name, fmt_mib(item.memory), count))
        if passed.get("vcpus"):
            reasons.append("%d compatible hosts with room for its memory cannot take its %d vCPUs (vcpu_overcommit %g)"
                           % (passed["vcpus"], item.vcpus, self.o.capacity["vcpu_overcommit"]))
        if passed.get("storage_space"):
            reasons.append("%d compatible hosts with room lack pool space for the copied disks"
                           % passed["storage_space"])
        if passed.get("anti_affinity"):
            reasons.append("%d compatible hosts with room hold a member of group %s (strict_anti_affinity)"
                           % (passed["anti_affinity"], _group_text(item.groups)))
        if passed.get("cpu"):
            reasons.append("the cpu_matrix marks %d compatible hosts CPU-incompatible%s" % (
                passed["cpu"], self._cpu_detail(item, name_set)))
        return reasons


class _Waves:
    """Grouping the moves into waves (mixed into _Planner)."""

    def _waves(self, batches):
        """batches: [(tier, mode, [moves])] in order -> waves, splitting by max_wave_size."""
        waves = []
        size = self.o.max_wave_size
        for tier, mode, moves in batches:
            if not moves:
                continue
            # Longest first: the long moves start while the short ones fill the other slots (LPT scheduling).
            moves = sorted(moves, key=lambda m: -m["estimated_seconds"])
            chunks = [moves] if size is None else [moves[i:i + size] for i in range(0, len(moves), size)]
            for chunk in chunks:
                number = len(waves) + 1
                for move in chunk:
                    move["wave"] = number
                waves.append({"wave": number, "tier": tier, "mode": mode, "moves": chunk,
                              "predicted_seconds": self._schedule(chunk)})
        flat = []
        for wave in waves:
            for move in wave["moves"]:
                move["order"] = len(flat) + 1
                flat.append(move)
        return waves, flat

    def _schedule(self, moves):
        """Seconds for a wave: each source runs up to max_parallel_per_source moves at once, next one when a slot
        frees (list scheduling in plan order); sources work side by side. A live move frees its slot at the
        switch-over, before the source's clean-up ends (the model's tail, the VM's own where it has one), and the
        wave ends with the last move's end."""
        slots = {}
        end = 0
        for move in moves:
            heap = slots.get(move["source"])
            if heap is None:
                heap = slots[move["source"]] = [0] * self.o.max_parallel
            start, seconds = heapq.heappop(heap), move["estimated_seconds"]
            held = seconds
            if self.model is not None and move["mode"] == "live":
                held = self.model.slot_seconds(move["source"], move["destination"], seconds, move["vm"])
            heapq.heappush(heap, start + held)
            end = max(end, start + seconds)
        return end

    def _unknown_tier_warning(self, unknown):
        # VM metadata is written by whoever can edit the domain: a name the run does not know must not stop a
        # drain, nor rank a VM, so the VM gets the default tier and the run says so.
        if unknown:
            self.warn("VMs have a metadata tier that is not in tier_order: %s; they get the default tier %s"
                      " (tiers, in order: %s; add the tier to tier_order or map the VMs with tiers)"
                      % (known_list(unknown, 20), self.o.default_tier, ", ".join(self.o.tier_order)))

    def _unknown_home_warning(self, vms):
        # metadata.home is untrusted too: a home that is no host of the fleet is reported, and no plan follows it.
        strangers = sorted("%s (home %s)" % (vm.get("name"), home) for vm, home in
                           ((vm, (vm.get("metadata") or {}).get("home")) for vm in vms)
                           if home and home not in self.views)
        if strangers:
            self.warn("VMs name a home that is not a known host: %s; it is ignored, no return brings them there"
                      % known_list(strangers, 20))

    def _pattern_warnings(self):
        for option, matcher in (("tiers", self.o.tiers), ("anti_affinity", self.o.groups)):
            for label, pattern in matcher.unused():
                self.warn("%s.%s: %s matches no VM in the facts considered" % (option, label, pattern))
        if self.o.cpu_index is None:
            self.warn("CPU compatibility not checked: no cpu_matrix given (run hvmaint.libvirt.cpu_compat and pass"
                      " its results)")
