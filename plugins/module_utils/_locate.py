# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Where is each VM, where does it belong, where has it been: from the hosts' facts alone."""

from __future__ import annotations

ACTIVE_STATES = ("running", "paused", "blocked", "pmsuspended", "shutdown")


def locate(hosts_facts, names=None, ledger_entries=None):
    """Return (vms, not_found). A VM is identified by UUID; its name is what users ask for."""
    by_uuid = {}
    for host in sorted(hosts_facts, key=lambda h: h["name"]):
        for vm in host.get("vms") or []:
            entry = by_uuid.setdefault(vm["uuid"], {
                "name": vm["name"], "uuid": vm["uuid"], "running_on": [], "defined_on": [], "state": {},
                "home": None, "tier": None, "moves": [], "problems": []})
            entry["state"][host["name"]] = vm["state"]
            if vm["state"] in ACTIVE_STATES:
                entry["running_on"].append(host["name"])
            if vm.get("persistent"):
                entry["defined_on"].append(host["name"])
            metadata = vm.get("metadata") or {}
            # The running copy's metadata is the current one; a stale definition elsewhere must not win.
            if metadata and (vm["state"] in ACTIVE_STATES or not entry["moves"]):
                entry["home"] = metadata.get("home") or entry["home"]
                entry["tier"] = metadata.get("tier") or entry["tier"]
                entry["moves"] = list(metadata.get("moves") or [])
    wanted = set(names) if names else None
    vms = []
    for entry in sorted(by_uuid.values(), key=lambda e: (e["name"], e["uuid"])):
        if wanted is not None and entry["name"] not in wanted:
            continue
        running, defined = entry["running_on"], entry["defined_on"]
        if len(running) > 1:
            entry["problems"].append("running on %d hosts: %s" % (len(running), ", ".join(running)))
        if len(defined) > 1:
            entry["problems"].append("defined on %d hosts: %s" % (len(defined), ", ".join(defined)))
        if running and not defined:
            entry["problems"].append("running on %s but defined nowhere (transient): it is lost if it stops"
                                     % running[0])
        entry["host"] = running[0] if len(running) == 1 else (defined[0] if not running and len(defined) == 1
                                                              else None)
        entry["at_home"] = entry["home"] is None or entry["home"] == entry["host"]
        if ledger_entries is not None:
            entry["ledger"] = [e for e in ledger_entries if e.get("uuid") == entry["uuid"]
                               or (not e.get("uuid") and e.get("vm") == entry["name"])]
        vms.append(entry)
    not_found = sorted(wanted - {vm["name"] for vm in vms}) if wanted else []
    return vms, not_found


def summary_lines(vms):
    lines = ["%-24s %-10s %-10s %-8s %s" % ("VM", "HOST", "HOME", "MOVES", "PROBLEMS")]
    for vm in vms:
        lines.append("%-24s %-10s %-10s %-8d %s" % (
            vm["name"], vm["host"] or "-", vm["home"] or "-", len(vm["moves"]), "; ".join(vm["problems"]) or "-"))
    return lines


def host_lines(hosts_facts):
    """One line per host: its name, whether it is under maintenance, how many VMs run there."""
    lines = []
    for host in hosts_facts:
        state = "UNDER MAINTENANCE" if host.get("maintenance") else "in service"
        running = sum(vm.get("state") == "running" for vm in host.get("vms") or ())
        lines.append("%s - %s - %d running VMs" % (host["name"], state, running))
    return lines
