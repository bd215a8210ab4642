# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Rebalance planner: even out a fleet's load (balance), or pack its VMs onto fewer hosts (consolidate).

Pure computation on the controller, from hypervisor facts (docs/facts.md) and, when given, measured load
(host_load, docs/load.md). It is the evacuation planner's sibling and reuses its rules (_evacuation_plan._Planner
and _evacuation_placement): which hosts may take VMs (maintenance marks, exclude_hosts), each VM's static
requirements (CPU from a cpu_matrix, networks, bridges, storage, machine type), capacity with overcommit and
reserve, pool space for copied disks, anti-affinity, tiers, the migration-time model learned from the ledger,
and waves. Hosts that another job holds (a lease) are neither sources nor destinations.

balance. Each host's load in each dimension is normalised by its capacity: CPU is the cores its VMs use (measured)
over its CPUs, memory the MiB its VMs use (measured) over its usable memory. Imbalance is
cpu_weight * CV(cpu) + (1 - cpu_weight) * CV(memory), CV being the coefficient of variation (population standard
deviation over mean) across the hosts taking part; a dimension whose mean is below min_load counts as balanced
(CV 0: a fleet at 1 % CPU has nothing worth moving for). Nothing moves while imbalance <= threshold. Otherwise
moves are chosen one at a time (greedy): from the most loaded hosts, each movable VM is tried on the least
loaded compatible hosts with room. A move touches two of the n hosts taking part, so it is kept only when it
removes at least min_improvement of their share of the imbalance (gain >= min_improvement * imbalance *
min(1, 2/n): with two hosts, min_improvement of the whole, as Proxmox's rule; in a fleet of a thousand, one move
could never remove a tenth of the whole). A move is not kept either when it leaves the destination at least as
loaded as the source was before it (it would only shift the peak, and something would move back). Among the
moves kept, the one with the most imbalance removed per second of predicted migration wins (smaller, idler,
quicker VMs first). It stops at max_moves, when imbalance <= threshold, or when no move qualifies.
Phases: within a phase no host both sends and takes, so the phase's moves hold whatever the order the waves run
them in (a host's arrivals never count on room its own departures free). When no move qualifies only because
of that (the best remaining move is out of a host that took, or into one that sent), a next phase starts and
looks at the placement reached as a fresh run would; its waves run after every wave of the phase before. A VM
may so move again in a later phase, from where it went (each move explained; rare below a dozen moves).
Stable: the plan stops short of max_moves only when a fresh look at the resulting placement finds no qualifying
move, so a second run on that placement plans nothing; when it stops at max_moves, it says that the next run
goes on.

consolidate. First-fit decreasing: hosts are tried for emptying cheapest first (the predicted seconds to move
all their VMs), each VM of the host, biggest first, goes to the first host in fill order (fullest first, then
name) that is compatible, has room and holds no member of its anti-affinity groups; hosts already empty or being
emptied take nothing. A host is emptied whole or not at all: when one of its VMs has nowhere to go, or may not
move, or max_moves would be passed, nothing of it moves and the plan says why (refusals).

Scale (1,000 hosts, 10,000 VMs in well under 5 s, benchmarks/bench_rebalance_plan.py): each VM's compatible hosts
come from the evacuation planner's per-requirement host sets; an imbalance is updated in O(1) per tried move
from running sums; a balance step tries only the SOURCE_HOSTS most loaded hosts and, per VM, the
DESTINATIONS_PER_VM least loaded hosts that can take it.
"""

from __future__ import annotations

import math
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_placement import _EPS, _Options, _Vm
from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import _Planner
from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import describe, is_expired
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    MIB,
    estimate_seconds,
    fmt_mib,
    host_vms,
    known_list,
    local_disks,
    pool_needs,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness_report import table

STRATEGIES = ("balance", "consolidate")
DEFAULT_THRESHOLD = 0.2
DEFAULT_MIN_IMPROVEMENT = 0.1
DEFAULT_MAX_MOVES = 5
DEFAULT_CPU_WEIGHT = 0.5
DEFAULT_MIN_LOAD = 0.02

# How far a balance step looks (see the docstring): enough to find the good moves, few enough to stay fast.
SOURCE_HOSTS = 4
DESTINATIONS_PER_VM = 6
# Hosts looked at per VM before giving up on finding DESTINATIONS_PER_VM that can take it.
DESTINATION_SCAN = 256


def _fraction(name, value, default, low=0.0, high=1.0, low_open=False):
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HvmaintError("%s must be a number, got %r" % (name, value)) from None
    if isinstance(value, bool) or math.isnan(number) or number > high or number < low or (low_open and number == low):
        raise HvmaintError("%s must be %s %g and at most %g, got %r"
                           % (name, "above" if low_open else "at least", low, high, value))
    return number


class RebalanceOptions:
    """What only a rebalance takes; the rest (tiers, anti-affinity, capacity, cpu_matrix, ledger) is _Options."""

    def __init__(self, strategy="balance", threshold=None, min_improvement=None, max_moves=None, cpu_weight=None,
                 min_load=None, move_critical=False, loads=None, lease_break_job=None, now=None):
        if strategy not in STRATEGIES:
            raise HvmaintError("strategy must be one of %s, got %r" % (", ".join(STRATEGIES), strategy))
        self.strategy = strategy
        self.threshold = _fraction("threshold", threshold, DEFAULT_THRESHOLD, 0.0, 10.0)
        self.min_improvement = _fraction("min_improvement", min_improvement, DEFAULT_MIN_IMPROVEMENT, 0.0, 1.0,
                                         low_open=True)
        if max_moves is None:
            max_moves = DEFAULT_MAX_MOVES
        if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 1:
            raise HvmaintError("max_moves must be a whole number of at least 1, got %r" % (max_moves,))
        self.max_moves = max_moves
        self.cpu_weight = _fraction("cpu_weight", cpu_weight, DEFAULT_CPU_WEIGHT)
        self.min_load = _fraction("min_load", min_load, DEFAULT_MIN_LOAD)
        self.move_critical = bool(move_critical)
        if loads is not None and not isinstance(loads, list):
            raise HvmaintError("loads must be a list of host_load results (each a load dictionary)")
        self.loads = loads
        # The leases are in the facts (hypervisor_info's lease); a dead job named to break holds nothing.
        self.lease_break_job = lease_break_job or None
        self.now = time.time() if now is None else now


def coefficient_of_variation(total, squares, count, floor):
    """CV from running sums; 0 when the mean is below `floor` (nothing worth balancing)."""
    if count < 2:
        return 0.0
    mean = total / count
    if mean < floor or mean <= 0:
        return 0.0
    variance = max(squares / count - mean * mean, 0.0)
    return math.sqrt(variance) / mean


class _Item(_Vm):
    """A VM as the evacuation planner sees it, with what it uses, what moving it costs, and whether it may."""

    __slots__ = ("use", "cost", "movable", "compatible")


class _Load:
    """One host's load while planning: its VMs' use, normalised by its capacity, in two dimensions."""

    __slots__ = ("name", "cpu_cap", "mem_cap", "cpu", "mem", "sent", "took", "vms")

    def __init__(self, name, cpu_cap, mem_cap):
        self.name = name
        self.cpu_cap = cpu_cap
        self.mem_cap = mem_cap
        self.cpu = 0.0
        self.mem = 0.0
        self.sent = False
        self.took = False
        self.vms = []

    def x_cpu(self, extra=0.0):
        return (self.cpu + extra) / self.cpu_cap

    def x_mem(self, extra=0.0):
        return (self.mem + extra) / self.mem_cap


class _Rebalancer(_Planner):
    """Plans a balance or a consolidation with the evacuation planner's rules (see the module docstring)."""

    def __init__(self, hosts_facts, options, ropts):
        super().__init__(hosts_facts, options)
        self.r = ropts
        self.measure = "allocated" if ropts.loads is None else "measured"
        self.usage = {}
        self.unmeasured = []
        self._read_loads()

    # ---- set-up

    def _read_loads(self):
        if self.r.loads is None:
            return
        for index, entry in enumerate(self.r.loads):
            if not isinstance(entry, dict) or not entry.get("name"):
                raise HvmaintError("loads[%d] is not a host_load result: it has no name" % index)
            if entry["name"] not in self.views:
                # Measured but not read (left out of the facts): never planned.
                continue
            for vm in entry.get("vms") or []:
                key = vm.get("uuid") or vm.get("name")
                self.usage[(entry["name"], key)] = vm
        measured_hosts = {entry["name"] for entry in self.r.loads if isinstance(entry, dict)}
        self.unmeasured = sorted(set(self.views) - measured_hosts)

    def _make_vm(self, vm, source_name, unknown_tiers):
        plain = super()._make_vm(vm, source_name, unknown_tiers)
        item = _Item(vm, source_name, plain.mode, plain.tier, plain.groups, plain.cpu_bad, plain.critical, plain.base)
        item.use, item.cost, item.movable, item.compatible = (0.0, 0.0), 0.0, False, None
        return item

    def _compatible_names(self, item):
        """The hosts passing the VM's static checks (computed once per VM)."""
        if item.compatible is None:
            item.compatible = self._compatible(item)[1]
        return item.compatible

    def _vm_use(self, host, vm):
        """(cores, MiB) a running VM uses: measured, else (no loads given) its allocation."""
        if self.r.loads is None:
            return float(vm.get("vcpus") or 0), float(vm.get("memory_mib") or 0)
        found = self.usage.get((host, vm.get("uuid"))) or self.usage.get((host, vm.get("name"))) or {}
        cores = found.get("cpu_cores")
        used = found.get("memory_used_mib")
        return (float(cores) if cores is not None else 0.0,
                float(used) if used is not None else float(vm.get("memory_mib") or 0))

    def _setup(self):
        held = {}
        for host, view in sorted(self.views.items()):
            lease = view.facts.get("lease")
            if not isinstance(lease, dict) or is_expired(lease, self.r.now):
                continue
            if self.r.lease_break_job and lease.get("job") == self.r.lease_break_job:
                continue
            held[host] = lease
        names = [n for n in sorted(self.views) if n not in held and n not in self.unmeasured]
        self._setup_destinations(names, None)
        for host in sorted(held):
            self.excluded.append({"host": host, "reason": "%s is held by %s" % (host, describe(held[host], host))})
        for host in self.unmeasured:
            if host not in held:
                self.excluded.append({"host": host, "reason": "%s has no measured load (host_load)" % host})
        self.loads = {}
        for name in sorted(self.states):
            view = self.states[name].view
            cpu_cap = view.cpu_count if self.measure == "measured" else view.vcpu_capacity
            if not cpu_cap:
                self.excluded.append({"host": name, "reason": "%s reports no CPU count" % name})
                continue
            load = _Load(name, float(cpu_cap), float(view.mem_capacity) if view.mem_capacity > 0 else 1.0)
            self.loads[name] = load
        for name in list(self.states):
            if name not in self.loads:
                del self.states[name]
        self._all_destinations = frozenset(self.states)

        unknown_tiers = []
        self.items = []
        self.fixed = []
        first = self.o.tier_order[0]
        for name in sorted(self.loads):
            load = self.loads[name]
            for vm in sorted(host_vms(self.views[name].facts), key=lambda v: (v.get("name") or "", v.get("uuid") or "")):
                item = self._make_vm(vm, name, unknown_tiers)
                if item.mode == "live":
                    cores, used = self._vm_use(name, vm)
                    load.cpu += cores
                    load.mem += used
                else:
                    cores, used = 0.0, 0.0
                item.use = (cores, used)
                why = None
                if item.mode is None or item.base["blockers"]:
                    why = "; ".join(b["reason"] for b in item.base["blockers"]) or "%s cannot move" % item.name
                elif item.tier == first and not self.r.move_critical:
                    why = "%s is %s (tier %s) and move_critical is false" % (item.name, first, item.tier)
                item.cost = self._cost(item)
                load.vms.append(item)
                if why:
                    self.fixed.append({"vm": item.name, "host": name, "reason": why})
                    item.movable = False
                else:
                    item.movable = True
                    self.items.append(item)
        self._unknown_tier_warning(unknown_tiers)

    def _cost(self, item):
        """Predicted seconds to move the VM (any destination: the ledger's all-pairs fit, else the default);
        a busy VM dirties memory while it moves, so its cost counts up to twice."""
        if self.model is not None and item.mode == "live":
            seconds = self.model.predict(item.name, item.source, None, item.memory * MIB,
                                         sum(d.get("size_bytes") or 0 for d in local_disks(item.vm)))[0]
        else:
            seconds = estimate_seconds(item.vm, item.mode, self.o.bandwidth)
        busy = 0.0
        if self.measure == "measured" and item.vcpus and item.use[0]:
            busy = min(item.use[0] / item.vcpus, 1.0)
        return max(seconds, 0.1) * (1.0 + busy)

    # ---- imbalance

    def _sums(self):
        loads = list(self.loads.values())
        xc = [load.x_cpu() for load in loads]
        xm = [load.x_mem() for load in loads]
        return [sum(xc), sum(x * x for x in xc), sum(xm), sum(x * x for x in xm), len(loads)]

    def _imbalance(self, sums):
        cpu = coefficient_of_variation(sums[0], sums[1], sums[4], self.r.min_load)
        mem = coefficient_of_variation(sums[2], sums[3], sums[4], self.r.min_load)
        return self.r.cpu_weight * cpu + (1 - self.r.cpu_weight) * mem, cpu, mem

    def _after(self, sums, src, dst, cores, used):
        """The running sums once a VM using (cores, used) moved from src to dst."""
        a0, b0 = src.x_cpu(), dst.x_cpu()
        a1, b1 = src.x_cpu(-cores), dst.x_cpu(cores)
        c0, d0 = src.x_mem(), dst.x_mem()
        c1, d1 = src.x_mem(-used), dst.x_mem(used)
        return [sums[0] - a0 - b0 + a1 + b1, sums[1] - a0 * a0 - b0 * b0 + a1 * a1 + b1 * b1,
                sums[2] - c0 - d0 + c1 + d1, sums[3] - c0 * c0 - d0 * d0 + c1 * c1 + d1 * d1, sums[4]]

    def _overshoots(self, src, dst, item, mean_cpu, mean_mem):
        """Whether the move leaves dst at least as loaded (by _score) as src was before it: such a move only shifts
        the peak, and a later phase or run would move something back."""
        before = self._score(src, mean_cpu, mean_mem)
        cores, used = item.use
        dst.cpu, dst.mem = dst.cpu + cores, dst.mem + used
        try:
            return self._score(dst, mean_cpu, mean_mem) >= before - 1e-9
        finally:
            dst.cpu, dst.mem = dst.cpu - cores, dst.mem - used

    def _score(self, load, mean_cpu, mean_mem):
        """How loaded a host is against the fleet's mean, each dimension weighted as imbalance weighs it (not at all
        below min_load, where it counts as balanced)."""
        w = self.r.cpu_weight
        return (w * (load.x_cpu() / mean_cpu if mean_cpu >= self.r.min_load and mean_cpu > 0 else 0.0)
                + (1 - w) * (load.x_mem() / mean_mem if mean_mem >= self.r.min_load and mean_mem > 0 else 0.0))

    # ---- shared by both strategies

    def _room(self, item, st):
        """None when st can take item now, else the short reason code."""
        if item.name and st.name in item.cpu_bad:
            return "cpu"
        if item.memory > st.free + _EPS:
            return "memory"
        if item.vcpus and st.vcpu_free is not None and item.vcpus > st.vcpu_free:
            return "vcpus"
        if item.has_local and not self._pools_fit(item, st):
            return "storage_space"
        if item.groups and any(st.groups.get(g) for g in item.groups):
            return "anti_affinity"
        return None

    def _release(self, st, item, pools=False):
        """Undo _take: the VM's room on st is free again (`pools`: its copied disks' space too, for a placement
        only tried; a real move leaves the copy on the source, as the engine does)."""
        st.free += item.memory
        if st.vcpu_free is not None:
            st.vcpu_free += item.vcpus
        if pools and item.has_local:
            for pool_name, need in pool_needs(item.vm, st.view).items():
                if st.pool_free.get(pool_name) is not None:
                    st.pool_free[pool_name] += need
        if item.mode == "live":
            if item.critical:
                st.critical -= 1
            for group in item.groups:
                st.groups[group] = st.groups.get(group, 0) - 1
        st.stamp += 1

    def _relocate(self, item, dst_name):
        src, dst = self.loads[item.source], self.loads[dst_name]
        self._release(self.states[item.source], item)
        self._take(self.states[dst_name], item)
        src.cpu -= item.use[0]
        src.mem -= item.use[1]
        dst.cpu += item.use[0]
        dst.mem += item.use[1]
        src.vms.remove(item)
        dst.vms.append(item)

    def _load_text(self, load):
        return "CPU %.2f, memory %.2f of capacity" % (load.x_cpu(), load.x_mem())

    # ---- balance

    def balance(self):
        self._setup()
        sums = self._sums()
        before, cpu_cv, mem_cv = self._imbalance(sums)
        start = {"imbalance": round(before, 4), "cpu_cv": round(cpu_cv, 4), "memory_cv": round(mem_cv, 4)}
        current = before
        moves = []
        stop = None
        if len(self.loads) < 2:
            stop = "fewer than two hosts take part: nothing to balance"
        elif current <= self.r.threshold:
            stop = "imbalance %.3f is at or below the threshold %g: nothing to do" % (current, self.r.threshold)
        moved = set()
        phase = 1
        # Each VM's moves so far in this plan (a VM may move again in a later phase): [phase, ...].
        legs = {}
        while stop is None:
            if len(moves) >= self.r.max_moves:
                stop = "max_moves (%d) reached with imbalance %.3f above the threshold %g; the next run goes on" % (
                    self.r.max_moves, current, self.r.threshold)
                break
            best = self._best_balance_move(sums, current, moved)
            if best is None and any(load.sent or load.took for load in self.loads.values()):
                # Only this phase's roles stood in the way (a host that took may not send, nor the reverse, until
                # its moves are done): a next phase, after them, looks as a fresh run would.
                phase += 1
                for load in self.loads.values():
                    load.sent = load.took = False
                moved.clear()
                continue
            if best is None:
                stop = ("no move lowers imbalance %.3f by at least %g of the share of the two hosts it touches"
                        " (min_improvement): the fleet stays as it is" % (current, self.r.min_improvement))
                break
            gain_rate, after_sums, item, dst_name, tried, why_source = best
            after, after_cpu, after_mem = self._imbalance(after_sums)
            src_load, dst_load = self.loads[item.source], self.loads[dst_name]
            earlier = legs.setdefault(item, [])
            why_vm = ("%s: %s; %s %s %.2f %s and %s, costs %.1f s to move (its predicted time over any host"
                      " pair, up to twice for a busy VM): the most imbalance removed per second among %d moves"
                      " tried%s" % (
                          item.source, why_source, item.name, "uses" if self.measure == "measured" else "is given",
                          item.use[0], "cores" if self.measure == "measured" else "vCPUs", fmt_mib(item.use[1]),
                          item.cost, tried,
                          "; it came to %s in phase %d of this plan, and a next run would move it on" % (
                              item.source, earlier[-1]) if earlier else ""))
            st = self.states[dst_name]
            why_host = ("%s (%s): among the least loaded hosts that are compatible and have room, the move there"
                        " lowers imbalance most per second (%s free after)" % (
                            dst_name, self._load_text(dst_load), fmt_mib(st.free - item.memory)))
            self._relocate(item, dst_name)
            src_load.sent = True
            dst_load.took = True
            moved.add(item)
            move = self._move(item, st, "%s; imbalance %.3f -> %.3f" % (why_host, current, after))
            move.update(why_vm=why_vm, why_host=why_host, imbalance_before=round(current, 4),
                        imbalance_after=round(after, 4), cpu_cores=round(item.use[0], 3),
                        memory_used_mib=round(item.use[1], 1), phase=phase, leg=len(earlier) + 1)
            moves.append(move)
            earlier.append(phase)
            # Where the VM now is, for a move in a later phase (as a next run would see it).
            item.source = dst_name
            sums, current = after_sums, after
            if current <= self.r.threshold:
                stop = "imbalance %.3f is at or below the threshold %g" % (current, self.r.threshold)
        end, end_cpu, end_mem = self._imbalance(sums)
        result = self._result(moves, stop)
        result.update(imbalance_before=start, imbalance_after={
            "imbalance": round(end, 4), "cpu_cv": round(end_cpu, 4), "memory_cv": round(end_mem, 4)},
            balanced=end <= self.r.threshold)
        result["summary_lines"] = render_rebalance(result)
        return result

    def _best_balance_move(self, sums, current, moved):
        count = sums[4]
        mean_cpu, mean_mem = sums[0] / count, sums[2] / count
        ranked = sorted(self.loads.values(), key=lambda load: (-self._score(load, mean_cpu, mean_mem), load.name))
        sources = [load for load in ranked if not load.took and any(
            i.movable and i.mode == "live" and i not in moved for i in load.vms)][:SOURCE_HOSTS]
        destinations = [load.name for load in reversed(ranked) if not load.sent]
        # A move touches two of the hosts: it must remove min_improvement of their share of the imbalance
        # (all of it with two hosts, as Proxmox's rule; a thousandth-share of a 2,000-host fleet's).
        needed = current * self.r.min_improvement * min(1.0, 2.0 / count)
        best = None
        tried = 0
        for src in sources:
            for item in src.vms:
                if not item.movable or item.mode != "live" or item in moved:
                    continue
                compatible = self._compatible_names(item)
                found = 0
                for scanned, name in enumerate(destinations):
                    if found >= DESTINATIONS_PER_VM or scanned >= DESTINATION_SCAN:
                        break
                    if name == src.name or name not in compatible:
                        continue
                    if self._room(item, self.states[name]) is not None:
                        continue
                    found += 1
                    tried += 1
                    dst = self.loads[name]
                    if self._overshoots(src, dst, item, mean_cpu, mean_mem):
                        continue
                    after_sums = self._after(sums, src, dst, item.use[0], item.use[1])
                    gain = current - self._imbalance(after_sums)[0]
                    if gain < needed:
                        continue
                    # Most imbalance removed per second of migration; then the bigger gain; then names.
                    key = (-gain / item.cost, -gain, item.name, name)
                    if best is None or key < best[0]:
                        best = (key, after_sums, item, name, src)
        if best is None:
            return None
        key, after_sums, item, name, src = best
        rank = ranked.index(src) + 1
        why_source = "%s, loaded #%d of %d hosts" % (self._load_text(src), rank, len(ranked))
        return -key[0], after_sums, item, name, tried, why_source

    # ---- consolidate

    def consolidate(self):
        self._setup()
        start_sums = self._sums()
        start = self._imbalance(start_sums)[0]
        in_use = sorted(name for name, load in self.loads.items() if any(i.mode == "live" for i in load.vms))
        already_empty = sorted(name for name, load in self.loads.items() if not load.vms)
        candidates = sorted((name for name in self.loads if self.loads[name].vms),
                            key=lambda name: (sum(i.cost for i in self.loads[name].vms), name))
        emptied, refusals, moves = [], [], []
        emptied_set = set()
        fixed_on = {}
        for fixed in self.fixed:
            fixed_on.setdefault(fixed["host"], []).append(fixed)
        budget = self.r.max_moves
        receiving = set()
        for name in candidates:
            load = self.loads[name]
            if name in receiving:
                refusals.append({"host": name, "reasons": [
                    "%s takes VMs of hosts emptied before it in this plan" % name]})
                continue
            reasons = ["%s must stay: %s" % (f["vm"], f["reason"]) for f in fixed_on.get(name, ())]
            if len(load.vms) > budget:
                reasons.append("emptying %s takes %d moves and max_moves leaves %d" % (name, len(load.vms), budget))
            if reasons:
                refusals.append({"host": name, "reasons": reasons})
                continue
            targets = [n for n in self.loads if n != name and n not in emptied_set and self.loads[n].vms]
            if not targets:
                refusals.append({"host": name, "reasons": ["no other host holds VMs to pack onto"]})
                continue
            placed = self._pack_host(name, targets, reasons)
            if placed is None:
                refusals.append({"host": name, "reasons": reasons})
                continue
            budget -= len(placed)
            emptied.append(name)
            emptied_set.add(name)
            receiving.update(entry[1] for entry in placed)
            total = sum(entry[0].cost for entry in placed)
            for item, dst, why_host in placed:
                st = self.states[dst]
                self._relocate(item, dst)
                self.loads[name].sent = True
                self.loads[dst].took = True
                why_vm = "%s: emptied, the host cheapest to empty (predicted %.1f s for its VMs) that can be emptied" % (
                    name, total)
                move = self._move(item, st, "empties %s; %s" % (name, why_host))
                move.update(why_vm=why_vm, why_host=why_host, cpu_cores=round(item.use[0], 3),
                            memory_used_mib=round(item.use[1], 1))
                moves.append(move)
        end_sums = self._sums()
        result = self._result(moves, None)
        result.update(
            ok=bool(emptied) or not candidates,
            hosts_in_use_before=in_use,
            hosts_in_use_after=sorted(n for n, load in self.loads.items() if any(i.mode == "live" for i in load.vms)),
            hosts_emptied=emptied, hosts_left_empty=sorted(already_empty + emptied), refusals=refusals,
            imbalance_before={"imbalance": round(start, 4)},
            imbalance_after={"imbalance": round(self._imbalance(end_sums)[0], 4)})
        result["summary_lines"] = render_rebalance(result)
        return result

    def _pack_host(self, name, targets, reasons):
        """[(item, destination, why)] for every VM of `name`, or None (reasons filled) with nothing changed."""
        order = sorted(targets, key=lambda n: (-self._fill(n), n))
        taken = []
        for item in sorted(self.loads[name].vms, key=lambda i: (-i.memory, i.name, i.uuid or "")):
            compatible = self._compatible_names(item)
            chosen = None
            passed = {}
            for position, target in enumerate(order):
                if target not in compatible:
                    passed["incompatible"] = passed.get("incompatible", 0) + 1
                    continue
                short = self._room(item, self.states[target])
                if short:
                    passed[short] = passed.get(short, 0) + 1
                    continue
                chosen = target
                break
            if chosen is None:
                text = ", ".join("%d %s" % (count, code.replace("_", " ")) for code, count in sorted(passed.items()))
                reasons.append("%s (%s, %d vCPUs) fits no other host in use (%s)" % (
                    item.name, fmt_mib(item.memory), item.vcpus, text or "no candidate"))
                break
            st = self.states[chosen]
            why = "%s: the fullest host in use that is compatible and has room (%s free after%s)" % (
                chosen, fmt_mib(st.free - item.memory),
                "; passed over %d fuller" % position if position else "")
            self._take(st, item)
            taken.append((item, chosen, why))
        # Tentative: give the room back; the caller relocates for real when every VM found a host.
        for item, chosen, _why in taken:
            self._release(self.states[chosen], item, pools=True)
        if len(taken) < len(self.loads[name].vms):
            return None
        return taken

    def _fill(self, name):
        st = self.states[name]
        capacity = st.view.mem_capacity
        return (capacity - st.free) / capacity if capacity else 0.0

    # ---- result

    def _result(self, moves, stop):
        # A phase's waves all run before the next phase's: a host that took VMs in one phase sends only in a
        # later one (and the reverse), so every move holds whatever the order of the moves within its phase.
        batches = []
        for phase in sorted({move.setdefault("phase", 1) for move in moves}):
            for mode in ("live", "offline"):
                for tier in self.o.tier_order:
                    batches.append((tier, mode, [m for m in moves if m["phase"] == phase and m["mode"] == mode
                                                 and m["tier"] == tier]))
        for step, move in enumerate(moves, 1):
            move["plan_step"] = step
            move.setdefault("leg", 1)
        self._pattern_warnings()
        waves, flat = self._waves(batches)
        for wave in waves:
            wave["phase"] = wave["moves"][0]["phase"]
        hosts = []
        for name in sorted(self.loads):
            load = self.loads[name]
            hosts.append({"host": name, "cpu_load": round(load.x_cpu(), 4), "memory_load": round(load.x_mem(), 4),
                          "cpu_cores": round(load.cpu, 3), "memory_used_mib": round(load.mem, 1),
                          "vms": len([i for i in load.vms if i.mode == "live"])})
        result = {
            "ok": True, "strategy": self.r.strategy, "measure": self.measure, "threshold": self.r.threshold,
            "min_improvement": self.r.min_improvement, "max_moves": self.r.max_moves,
            "cpu_weight": self.r.cpu_weight, "waves": waves, "moves": flat, "stop_reason": stop,
            "hosts_after": hosts, "fixed": self.fixed, "excluded_hosts": self.excluded, "warnings": self.warnings,
            "predicted_seconds": round(sum(w["predicted_seconds"] for w in waves), 1),
        }
        if self.model is not None:
            result["prediction_model"] = self.model.describe()
        return result


def plan_rebalance(hosts_facts, strategy="balance", threshold=None, min_improvement=None, max_moves=None,
                   cpu_weight=None, min_load=None, move_critical=False, loads=None, lease_break_job=None, now=None,
                   **options):
    """Plan a balance or a consolidation. `options` are the evacuation planner's (tiers, default_tier,
    tier_order, anti_affinity, host_overrides, memory_overcommit, memory_reserve_mib, vcpu_overcommit,
    bandwidth_mib_s, max_parallel_per_source, max_wave_size, cpu_matrix, exclude_hosts, history)."""
    ropts = RebalanceOptions(strategy, threshold, min_improvement, max_moves, cpu_weight, min_load, move_critical,
                             loads, lease_break_job, now)
    options.pop("unplaceable_policy", None)
    options.pop("shutoff_vms", None)
    planner = _Rebalancer(hosts_facts, _Options(**options), ropts)
    return planner.balance() if strategy == "balance" else planner.consolidate()


def render_rebalance(result):
    """Plain-text lines of a rebalance plan for task output."""
    before, after = result["imbalance_before"], result["imbalance_after"]
    lines = []
    if result["strategy"] == "balance":
        lines.append("balance (%s load): imbalance %.3f (CPU CV %.3f, memory CV %.3f, CPU weight %g), threshold %g"
                     % (result["measure"], before["imbalance"], before["cpu_cv"], before["memory_cv"],
                        result["cpu_weight"], result["threshold"]))
        lines.append("%d move%s planned (at most %d), imbalance after: %.3f (CPU CV %.3f, memory CV %.3f)%s" % (
            len(result["moves"]), "" if len(result["moves"]) == 1 else "s", result["max_moves"], after["imbalance"], after["cpu_cv"], after["memory_cv"],
            ", predicted %.0f s" % result["predicted_seconds"] if result["moves"] else ""))
    else:
        lines.append("consolidate: %d hosts in use, %d after; emptied: %s; left empty: %s" % (
            len(result["hosts_in_use_before"]), len(result["hosts_in_use_after"]),
            ", ".join(result["hosts_emptied"]) or "none", ", ".join(result["hosts_left_empty"]) or "none"))
        if not result["ok"]:
            lines.append("consolidate: NOT OK, no host can be emptied, nothing should move")
    if result["stop_reason"]:
        lines.append("stopped: %s" % result["stop_reason"])
    rows = []
    for move in sorted(result["moves"], key=lambda m: m["plan_step"]):
        rows.append([move["plan_step"], move["phase"], move["wave"], move["vm"], fmt_mib(move["memory_mib"]).replace(" ", ""),
                     move["source"], move["destination"], "%gs" % move["estimated_seconds"],
                     "%.3f->%.3f" % (move["imbalance_before"], move["imbalance_after"])
                     if "imbalance_before" in move else "-"])
    if rows:
        lines.extend(table(["step", "phase", "wave", "VM", "mem", "from", "to", "est", "imbalance"], rows, caps={3: 32}))
    for move in sorted(result["moves"], key=lambda m: m["plan_step"]):
        lines.append("%d. %s: why this VM: %s" % (move["plan_step"], move["vm"], move["why_vm"]))
        lines.append("%d. %s: why %s: %s" % (move["plan_step"], move["vm"], move["destination"], move["why_host"]))
    for refusal in result.get("refusals") or ():
        lines.append("cannot empty %s: %s" % (refusal["host"], "; ".join(refusal["reasons"])))
    for host in result["excluded_hosts"]:
        lines.append("not taking part: %s" % host["reason"])
    if result["fixed"] and len(result["fixed"]) <= 20:
        for fixed in result["fixed"]:
            lines.append("stays: %s on %s: %s" % (fixed["vm"], fixed["host"], fixed["reason"]))
    elif result["fixed"]:
        lines.append("stays: %d VMs may not move (%s)" % (
            len(result["fixed"]), known_list([f["vm"] for f in result["fixed"]], 10)))
    for w in result["warnings"]:
        lines.append("warning: %s" % w)
    return lines
