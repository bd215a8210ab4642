# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""What the live_migrate module runs: execute() validates everything, opens the connections, runs the pre-flight
and the Batch, and builds the module's result; state=aborted cancels running jobs from outside.
"""

from __future__ import annotations

import contextlib
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    close_quietly,
    libvirt,
    open_connection,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.batch import Batch, _unique
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import _lookup
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    POLICY_OPTIONS,
    completion_timeout_s,
    derive_destination_uri,
    parse_libvirt_uri,
    validate_policy,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import plan_moves, refuse_duplicates
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import write_progress_file
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_mapping import normalize_mapping
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import (
    ABORTED,
    ALREADY_THERE,
    FAILED,
    WOULD_MIGRATE,
    base_result,
    diff_for,
    summarize,
)


def vm_names(params):
    if params.get("moves"):
        names = [move.get("name") for move in params["moves"]]
    else:
        names = [params["name"]] if params.get("name") else list(params.get("names") or [])
    if not names:
        raise HvmaintError("give name (one VM), names (a list of VMs) or moves (VMs with their destinations)")
    blank = [n for n in names if not isinstance(n, str) or not n.strip()]
    if blank:
        raise HvmaintError("VM names must not be empty")
    return names


def planned_moves(params):
    """[(name, destination, destination_uri, destination_connect_uri)] from name/names + destination, or moves.

    Raises HvmaintError naming every move without a usable destination, before any connection is opened."""
    transport = params.get("transport") or "tls"
    if params.get("moves"):
        shared = [key for key in ("name", "names", "destination", "destination_uri", "destination_connect_uri")
                  if params.get(key)]
        if shared:
            raise HvmaintError("moves names each VM with its destination: do not also give %s" % ", ".join(shared))
        entries = [(move.get("name"), move.get("destination"), move.get("destination_uri"),
                    move.get("destination_connect_uri")) for move in params["moves"]]
    else:
        entries = [(name, params.get("destination"), params.get("destination_uri"),
                    params.get("destination_connect_uri")) for name in vm_names(params)]
    moves, problems = [], []
    for name, destination, uri, connect_uri in entries:
        try:
            uri = uri or derive_destination_uri(destination, transport)
            parse_libvirt_uri(uri, "destination_uri")
            if connect_uri:
                parse_libvirt_uri(connect_uri, "destination_connect_uri")
        except HvmaintError as exc:
            problems.append("%s: %s" % (name, exc) if params.get("moves") else str(exc))
            continue
        moves.append((name, destination, uri, connect_uri))
    if problems:
        raise HvmaintError("; ".join(_unique(problems)))
    return moves


def _check_result(migrator, plan, policy):
    entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
    entry["outcome"] = WOULD_MIGRATE if plan.action == "move" else ALREADY_THERE
    entry["copy_storage"] = plan.copy_storage
    entry["source_copies"] = [dict(copy, host=migrator.source, removed=False) for copy in plan.source_copies]
    entry["mode"] = "offline" if plan.offline else "live"
    entry["policy_steps"] = [{"at_s": 0.0, "iteration": 0, "action": "note", "detail": note}
                             for note in plan.notes]
    entry["completion_timeout_s"] = completion_timeout_s(policy, plan.memory_bytes,
                                                         plan.disk_bytes if plan.copy_storage else 0)
    return entry


def abort_migrations(conn, names, check_mode=False):
    """Cancel the running migration job of each named VM on this host; the VMs stay on this host."""
    results = []
    for name in names:
        entry = {"name": name, "outcome": None, "error": None}
        dom = _lookup(conn, name=name)
        if dom is None:
            entry.update(outcome="not_found", error="%s is not a VM on this host" % name)
        else:
            try:
                info = dom.jobInfo()
            except libvirt.libvirtError as exc:
                info = [0]
                entry["error"] = str(exc)
            if not info or info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                entry["outcome"] = "no_job"
            elif check_mode:
                entry["outcome"] = "would_abort"
            else:
                try:
                    dom.abortJob()
                    entry["outcome"] = ABORTED
                except libvirt.libvirtError as exc:
                    entry.update(outcome=FAILED, error="cannot abort the job of %s: %s" % (name, exc))
        results.append(entry)
    return results


def nothing_to_move(params):
    """True when the task gives moves as an empty list: a plan with nothing to move. Its options are still checked
    (a role's dry-run of an empty plan must refuse what the engine would), and nothing is connected."""
    return params.get("moves") == [] and (params.get("state") or "migrated") == "migrated"


def options_only(params):
    """The result of a run with nothing to move: every option checked with the engine's own limits, else
    HvmaintError, as a run with moves would have raised before its first connection."""
    policy = validate_policy({key: params.get(key) for key in POLICY_OPTIONS})
    parse_libvirt_uri(params.get("uri") or "qemu:///system", "uri")
    return {"changed": False, "failed": False, "msg": "nothing to move (the options are valid)",
            "needs_attention": [], "migrations": [], "source": None, "destination": None, "destinations": [],
            "destination_uri": None, "policy": policy.as_dict(), "diff": diff_for([]), "startup_s": {}}


def execute(params, check_mode=False, on_start=None):
    """Run the module's work; return its result dict. `on_start(batch)` is called before the first migration
    (the module installs its signal handlers there)."""
    if nothing_to_move(params):
        return options_only(params)
    names = vm_names(params)
    progress_file = params.get("progress_file")
    if params.get("state") == "aborted":
        parse_libvirt_uri(params["uri"], "uri")
        conn = open_connection(params["uri"])
        try:
            aborts = abort_migrations(conn, names, check_mode)
        finally:
            close_quietly(conn)
        failed = [a for a in aborts if a["outcome"] in (FAILED, "not_found")]
        return {"changed": any(a["outcome"] in (ABORTED, "would_abort") for a in aborts), "aborts": aborts,
                "failed": bool(failed),
                "msg": "; ".join(a["error"] for a in failed) if failed else "%d job(s) aborted" % sum(
                    a["outcome"] == ABORTED for a in aborts)}
    policy = validate_policy({key: params.get(key) for key in POLICY_OPTIONS})
    site_mapping = None if params.get("site_mapping") is None else normalize_mapping(params["site_mapping"])
    parse_libvirt_uri(params["uri"], "uri")
    moves = planned_moves(params)
    refuse_duplicates(names)

    def progress(snapshot):
        write_progress_file(progress_file, snapshot)

    batch = Batch(policy, progress=progress if progress_file else None)
    finished = False
    sconn = None
    began = time.monotonic()
    startup = {}
    try:
        sconn = open_connection(params["uri"])
        with contextlib.ExitStack() as migrators:  # closes each destination connection; sconn is closed below
            # One Migrator per destination, in the order the destinations first appear; all share sconn.
            by_uri, entries = {}, []
            for name, destination, uri, connect_uri in moves:
                migrator = by_uri.get(uri)
                if migrator is None:
                    migrator = by_uri[uri] = migrators.enter_context(Migrator(
                        params["uri"], uri, policy, destination=destination, destination_connect_uri=connect_uri,
                        verify=params.get("verify", True), record_history=params.get("record_history", True),
                        home=params.get("home"), source_conn=sconn, site_mapping=site_mapping,
                        remove_source_copies=bool(params.get("remove_source_copies"))))
                    batch.migrators.append(migrator)
                entries.append((migrator, name))
            for migrator in batch.migrators:
                migrator.connect()
            startup["connect_s"] = round(time.monotonic() - began, 3)
            plans = plan_moves(entries)
            startup["preflight_s"] = round(time.monotonic() - began - startup["connect_s"], 3)
            if check_mode:
                results = [_check_result(migrator, plan, policy) for migrator, plan in plans]
            else:
                if on_start is not None:
                    on_start(batch)
                results = batch.run(plans, waves={move["name"]: move["wave"] for move in params.get("moves") or ()
                                                  if move.get("wave") is not None} or None)
            finished = True
    finally:
        close_quietly(sconn)
        if progress_file and not finished:
            # Tell a waiting action plugin that the run is over, even when pre-flight refused it.
            try:
                write_progress_file(progress_file, {"finished": True, "updated": time.time(), "vms": []})
            except OSError:
                pass
    changed, failed, summary = summarize(results)
    if check_mode:
        changed = any(entry["outcome"] == WOULD_MIGRATE for entry in results)
    source = batch.migrators[0].source
    destinations = _unique(m.destination for m in batch.migrators)
    attention = [entry["needs_attention"] for entry in results if entry.get("needs_attention")]
    if attention:
        summary += "; NEEDS ATTENTION: " + "; ".join(attention)
    result = {
        "changed": changed,
        "failed": failed,
        "msg": "%s -> %s: %s" % (source, ", ".join(destinations), summary),
        "needs_attention": attention,
        "migrations": results,
        "source": source,
        "destination": destinations[0] if len(destinations) == 1 else None,
        "destinations": destinations,
        "destination_uri": batch.migrators[0].destination_uri if len(batch.migrators) == 1 else None,
        "policy": policy.as_dict(),
        "diff": diff_for(results),
        # Where the module's time went before the first migration started (connections with their identity
        # checks, then the pre-flight), for anyone asking why the first progress line came late.
        "startup_s": startup,
    }
    return result
