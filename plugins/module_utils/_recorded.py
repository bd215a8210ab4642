# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: the test mode of simulated fleets (benchmarks and tests, never real hosts).

A host whose inventory sets `hvmaint_recorded_facts` (a JSON file holding one hypervisor_info `hypervisor`
result) is simulated: the action plugin of hypervisor_info returns those facts instead of running the module,
and the one of live_migrate answers a check-mode run (the drain's dry-run) from them. Everything else, roles,
planner, CPU check, readiness, reports, runs as on real hosts. This lets a controller drive a thousand hosts
without a thousand libvirt daemons; what a real host's libvirt costs per host is measured on the lab.
"""

from __future__ import annotations

import json

RECORDED_FACTS_VAR = "hvmaint_recorded_facts"


def recorded_facts_path(task_vars, delegate_to=None):
    """The recorded facts file of the host the task runs on (the delegated host's, when delegated), or None."""
    task_vars = task_vars or {}
    if delegate_to:
        delegated = (task_vars.get("ansible_delegated_vars") or {}).get(delegate_to) or {}
        return delegated.get(RECORDED_FACTS_VAR)
    return task_vars.get(RECORDED_FACTS_VAR)


def load_facts(path, vms=None):
    with open(path, encoding="utf-8") as handle:
        facts = json.load(handle)
    if vms:
        unknown = sorted(set(vms) - {vm["name"] for vm in facts.get("vms", ())})
        if unknown:
            raise ValueError("no VM named %s on %s" % (", ".join(unknown), facts.get("name")))
        facts["vms"] = [vm for vm in facts["vms"] if vm["name"] in set(vms)]
    return facts


def dry_run(facts, args):
    """What live_migrate's check mode reports for these arguments, from the source's recorded facts: every VM
    must be on the source (the destinations' own libvirt is not simulated)."""
    moves = args.get("moves") or [{"name": name, "destination": args.get("destination")}
                                  for name in args.get("names") or ()]
    on_source = {vm["name"]: vm for vm in facts.get("vms", ())}
    unknown = [move["name"] for move in moves if move["name"] not in on_source]
    if unknown:
        return {"failed": True, "changed": False,
                "msg": "no VM named %s on %s" % (", ".join(unknown), facts.get("name"))}
    migrations = [{"name": move["name"], "uuid": on_source[move["name"]].get("uuid"), "source": facts.get("name"),
                   "destination": move["destination"], "outcome": "would_migrate",
                   "mode": "live" if on_source[move["name"]].get("state") != "shutoff" else "offline"}
                  for move in moves]
    return {"changed": bool(migrations), "failed": False, "migrations": migrations, "source": facts.get("name"),
            "destinations": sorted({move["destination"] for move in moves}), "recorded": True,
            "msg": "%d move(s) checked against recorded facts" % len(migrations)}
