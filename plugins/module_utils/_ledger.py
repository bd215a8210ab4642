# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The audit ledger: one JSON object per line, appended under an exclusive lock.

Two jobs that append at once (two AWX jobs draining two hosts) each take the lock for the whole batch, so
lines are never interleaved or torn.
"""

from __future__ import annotations

import fcntl
import json
import os

# The fields every entry carries, in this order, V(null) when unknown.
FIELDS = ("time", "vm", "uuid", "source", "destination", "tier", "outcome", "duration_s", "downtime_ms",
          "data_bytes", "job", "by", "operation")


def normalise(entry):
    """Keep the known fields first and in order, then any extra ones."""
    entry = dict(entry)
    if entry.get("vm") is None and "name" in entry:
        entry["vm"] = entry.pop("name")
    line = {field: entry.get(field) for field in FIELDS}
    line.update({k: v for k, v in entry.items() if k not in line})
    return line


def append_entries(path, entries):
    """Append entries to the ledger at `path`; returns how many were written."""
    if not entries:
        return 0
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = "".join(json.dumps(normalise(e), sort_keys=False, separators=(",", ":")) + "\n" for e in entries)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = payload.encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return len(entries)


def make_ready(path, check_mode=False):
    """Create the ledger (and its directory) when missing, take its lock and append nothing, so a ledger that
    cannot be written stops a run before its first change; returns True when the file was created.

    In check mode nothing is created: the nearest existing directory must let this user create it, or the file
    must be writable.
    """
    path = os.path.abspath(path)
    exists = os.path.exists(path)
    if check_mode:
        if exists:
            if os.path.isdir(path) or not os.access(path, os.W_OK):
                raise OSError("%s cannot be appended to" % path)
            return False
        parent = os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise OSError("cannot create %s: %s is not a writable directory" % (path, parent))
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"")
        os.fsync(fd)
    finally:
        os.close(fd)
    return not exists


def read_entries(path):
    """Every entry of the ledger, oldest first ([] when there is no ledger yet)."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return []
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        return [json.loads(line) for line in handle if line.strip()]


def history_for_predictions(path, warn=None):
    """The ledger's entries to learn migration times from; [] (after `warn(message)`) when it cannot be read, since
    predictions are a help, never a reason not to plan."""
    try:
        return read_entries(path)
    except (OSError, ValueError) as e:
        if warn is not None:
            warn("cannot learn from the audit ledger %s, the default model predicts: %s" % (path, e))
        return []


def entries_from_migrations(migrations, tiers=None, operation=None, job=None, now=None, by=None):
    """Ledger entries from hvmaint.libvirt.live_migrate's `migrations` results."""
    import time

    tiers = tiers or {}
    entries = []
    for migration in migrations:
        if migration.get("outcome") in (None, "would_migrate"):
            continue
        finished = migration.get("finished_at")
        stamp = time.gmtime(finished) if finished else time.gmtime(now) if now else time.gmtime()
        entries.append({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
            "vm": migration.get("name"),
            "uuid": migration.get("uuid"),
            "source": migration.get("source"),
            "destination": migration.get("destination"),
            "tier": tiers.get(migration.get("name")),
            "outcome": migration.get("outcome"),
            "duration_s": migration.get("elapsed_s"),
            "downtime_ms": migration.get("downtime_ms"),
            "data_bytes": migration.get("data_transferred_bytes"),
            "job": job,
            "by": by,
            "operation": operation,
            "started_at": migration.get("started_at"),
            "error": migration.get("error"),
            "mode": migration.get("mode"),
            # What the next drain's predictions learn from (plugins/module_utils/_migration_model.py).
            "dirty_rate_mib_s": migration.get("dirty_rate_mib_s"),
            "downtime_limit_ms": migration.get("downtime_limit_ms"),
            "escalated": migration.get("escalated"),
            "postcopy": migration.get("postcopy"),
            # Disks a move copied leave their source copies behind unless removal was asked: where they are.
            "source_copies": migration.get("source_copies") or None,
            # Moves whose time the next plans do not learn from (_migration_model.not_representative).
            "bandwidth_limit_mib_s": migration.get("bandwidth_limit_mib_s"),
            "faulted": migration.get("faulted"),
            # Seconds from the start until the VM ran on the destination: the engine frees the move's slot then,
            # so the next plans learn how much of a move holds a slot.
            "switchover_s": switchover_s(migration),
        })
    return entries


def switchover_s(migration):
    """Seconds from a migration's start until the VM ran on its destination (live_migrate's result), or None.
    The ledger and the VM's own history (_migration/history.py) both record it."""
    started, switched = migration.get("started_at"), migration.get("switched_over_at")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (started, switched)):
        return None
    seconds = switched - started
    return round(seconds, 3) if seconds >= 0 else None


def entries_from_actions(actions, operation=None, job=None, now=None, by=None):
    """Ledger entries for what a plan did with VMs that could not move (evacuation_plan's `actions`)."""
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now) if now else time.gmtime())
    outcomes = {"shutdown": "shut down", "suspend": "suspended", "leave": "left running"}
    return [{
        "time": stamp, "vm": action.get("vm"), "uuid": action.get("uuid"), "source": action.get("host"),
        "destination": None, "tier": action.get("tier"), "outcome": outcomes.get(action.get("action"), action.get("action")),
        "job": job, "by": by, "operation": operation, "reason": action.get("reason"),
    } for action in actions]
