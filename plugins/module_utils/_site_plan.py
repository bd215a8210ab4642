# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Site evacuation and failback plans (pure): the evacuation planner's own rules applied across sites.

An evacuation empties every host of one site onto the hosts of another. Each VM's facts are first rewritten as
they would be at the target site (_site_mapping.map_vm_facts: mapped networks and bridges, copied disks as volumes
of the mapped pools), then the planner drains the source site as if it were one host holding all its VMs: tiers,
worst-fit placement, capacity, CPU compatibility (the cpu_matrix of each VM against each target host), networks,
pools and their space are the drain's, so a site move is judged by the same rules as a drain. Each move then
names the VM's real source host again.

A failback brings every VM whose home is a host of the original site back to it, with the evacuation's
mapping reversed (reverse_mapping): the return planner, once per home host, over the VMs that run at the other site;
then the returns to all home hosts are grouped into one set of waves (tier by tier), so the home hosts fill side
by side instead of one after the other.
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_placement import _Options, _Waves
from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import _Planner, render_plan
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import host_vms, known_list
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_mapping import (
    map_vm_facts,
    normalize_mapping,
    reverse_mapping,
)

# The name the source site goes by while the planner drains it as one host (never a real host's name: it has
# spaces), as it reads in the plan's warnings.
SITE_SOURCE = "the source site"


class _WaveGrouping(_Waves):
    """The planner's own wave grouping (tiers, max_wave_size, per-source parallelism) over moves already placed."""

    def __init__(self, options):
        self.o = options
        # The waves are timed on each move's whole predicted time: the per-home planners' models stay with them.
        self.model = None


def _check_sites(by_name, site_from, site_to):
    problems = []
    for label, names in (("site_from", site_from), ("site_to", site_to)):
        if not names:
            problems.append("%s names no host" % label)
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            problems.append("%s names hosts whose facts were not read: %s (known hosts: %s)"
                            % (label, ", ".join(unknown), known_list(by_name)))
    both = sorted(set(site_from) & set(site_to))
    if both:
        problems.append("hosts in both sites: %s" % ", ".join(both))
    if problems:
        raise HvmaintError("; ".join(problems) + ": nothing was planned")


def _pool_paths(facts):
    return {p.get("name"): p.get("path") for p in facts.get("storage_pools") or [] if p.get("path")}


def _mapped_vms(facts, mapping, problems, only=None):
    vms = []
    for vm in host_vms(facts):
        if only is not None and not only(vm):
            continue
        mapped, found = map_vm_facts(vm, mapping, _pool_paths(facts))
        problems.extend(found)
        vms.append(mapped)
    return vms


def _overrides_for(options, names):
    """The options with host_overrides (the inventory's declared sizes) kept for the hosts the planner sees."""
    overrides = options.get("host_overrides") or {}
    return dict(options, host_overrides={name: value for name, value in overrides.items() if name in names})


def _refuse_unmapped(problems, what):
    if problems:
        raise HvmaintError("the %s stops before anything moves: %s" % (what, "; ".join(sorted(set(problems)))))


def plan_site_evacuation(hosts_facts, site_from, site_to, site_mapping, **options):
    """Plan moving every VM of the hosts site_from to the hosts site_to. Options: those of plan_evacuation."""
    mapping = normalize_mapping(site_mapping)
    by_name = {facts.get("name"): facts for facts in hosts_facts}
    _check_sites(by_name, site_from, site_to)
    problems, sources, vms = [], {}, []
    for name in sorted(site_from):
        for vm in _mapped_vms(by_name[name], mapping, problems):
            sources[vm.get("name")] = name
            vms.append(vm)
    _refuse_unmapped(problems, "site evacuation")
    first = by_name[sorted(site_from)[0]]
    # Memory and CPU count of the pseudo-host do not matter: it is only the source.
    site = dict(first, name=SITE_SOURCE, vms=vms, maintenance=None)
    # The source site's hosts are known (a VM's home is one of them) but hold nothing and take nothing.
    emptied = [dict(by_name[name], vms=[]) for name in sorted(site_from)]
    options = _overrides_for(dict(options, exclude_hosts=sorted(site_from)), set(site_to) | set(site_from))
    planner_options = _Options(**options)
    result = _Planner([by_name[name] for name in sorted(site_to)] + emptied + [site],
                      planner_options).drain(SITE_SOURCE)
    result["excluded_destinations"] = [e for e in result["excluded_destinations"] if e["host"] not in site_from]
    for entry in result["moves"] + result["unplaceable"]:
        entry["source"] = sources.get(entry["vm"], entry.get("source"))
    for entry in result["actions"]:
        entry["host"] = sources.get(entry["vm"], entry.get("host"))
        entry["reason"] = entry["reason"].replace(SITE_SOURCE, entry["host"])
    result["source"] = ", ".join(sorted(site_from))
    result["direction"] = "drain"
    result["site_from"], result["site_to"] = sorted(site_from), sorted(site_to)
    result["site_mapping"] = mapping
    result["summary_lines"] = render_plan(result, planner_options)
    return result


def plan_site_failback(hosts_facts, site_from, site_to, site_mapping, **options):
    """Plan bringing every VM that runs on the hosts site_from and whose home is a host of site_to back home;
    site_mapping is the evacuation's (to site_from), reversed here. Options: those of plan_return."""
    mapping = reverse_mapping(site_mapping)
    by_name = {facts.get("name"): facts for facts in hosts_facts}
    _check_sites(by_name, site_from, site_to)
    homes = set(site_to)
    problems = []
    away = [dict(by_name[name], vms=_mapped_vms(by_name[name], mapping, problems,
                                                only=lambda vm: (vm.get("metadata") or {}).get("home") in homes))
            for name in sorted(site_from)]
    _refuse_unmapped(problems, "failback")
    options.pop("unplaceable_policy", None)
    options = _overrides_for(options, set(site_from) | set(site_to))
    wave_options = _Options(**options)
    # One batch per (mode, tier), in the order a return moves them: live before offline, tier by tier.
    batches = {(mode, tier): [] for mode in ("live", "offline") for tier in wave_options.tier_order}
    merged = {"ok": True, "direction": "return", "unplaceable": [], "actions": [], "cannot_return": [],
              "warnings": [], "excluded_destinations": []}
    for home in sorted(site_to):
        # Only the VMs of the other site: a VM of this home that runs elsewhere at its own site is not the
        # failback's (its return is return_host's, without a mapping).
        others = [dict(by_name[name], vms=[]) for name in sorted(site_to) if name != home]
        # The evacuation marked the home hosts; the failback clears their marks before it fills them.
        home_facts = dict(by_name[home], maintenance=None)
        # Each home host is planned on its own (its room, CPU, networks, pools), as return_host plans it: a VM
        # goes only to its own home, so one home's returns take nothing from another's.
        result = _Planner(away + others + [home_facts], _Options(**options)).bring_home(home)
        for wave in result["waves"]:
            batches[(wave["mode"], wave["tier"])].extend(wave["moves"])
        for key in ("cannot_return", "actions", "warnings", "excluded_destinations"):
            merged[key] += [e for e in result.get(key, []) if e not in merged[key]]
        merged["ok"] = merged["ok"] and result["ok"]
        if "prediction_model" in result:
            merged["prediction_model"] = result["prediction_model"]
    # Then every home host's returns of a tier form one set of waves, so the home hosts are filled side by side
    # (each sending host at most max_parallel_per_source at once) and a lower tier never starts before a higher
    # tier of any home host has ended.
    merged["waves"], merged["moves"] = _WaveGrouping(wave_options)._waves(
        [(tier, mode, batches[(mode, tier)]) for mode in ("live", "offline") for tier in wave_options.tier_order])
    merged["predicted_seconds"] = round(sum(w["predicted_seconds"] for w in merged["waves"]), 1)
    merged["return_to"] = ", ".join(sorted(site_to))
    merged["site_from"], merged["site_to"] = sorted(site_from), sorted(site_to)
    merged["site_mapping"] = mapping
    merged["summary_lines"] = render_plan(merged, wave_options)
    return merged
