# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The host lease: which job is emptying or filling a hypervisor, kept on the hypervisor itself.

Like the maintenance mark it is a small JSON file beside libvirt's state, so every controller and every AWX
container that looks at the host sees it. One job holds a host at a time; a second job that would touch the
host is refused with the first one's name. A lease carries an expiry that its holder pushes forward (the
heartbeat) while it works, so the lease of a controller that was killed lapses by itself.
"""

from __future__ import annotations

import calendar
import fcntl
import json
import os
import socket
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import (
    DEFAULT_MARK_PATH,
    read_mark,
    write_mark,
)

DEFAULT_LEASE_PATH = "/var/lib/libvirt/hvmaint/lease.json"
DEFAULT_LEASE_TTL = 3600
LEASE_ROLES = ("source", "destination")


class LeaseConflict(Exception):
    """Another job holds the host, or the host is under maintenance and may not be filled."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _epoch(iso):
    try:
        return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None


def read_lease(path=DEFAULT_LEASE_PATH):
    """The lease as a dict, or None when no job holds the host.

    A lease that cannot be read is returned as held by an unknown job: someone meant to hold the host."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return unreadable_lease(path, exc)
    return parse_lease(text, path)


def unreadable_lease(where, why):
    return {"job": None, "unreadable": "%s: %s" % (where, why)}


def parse_lease(text, where):
    """The lease that a lease file's text holds; the file is untrusted: anything but a JSON object is a lease held
    by an unknown job."""
    try:
        lease = json.loads(text)
    except ValueError as exc:
        return unreadable_lease(where, exc)
    if not isinstance(lease, dict):
        return unreadable_lease(where, "not a lease")
    return lease


def is_expired(lease, now):
    """True when the holder stopped renewing the lease before its expiry (an unreadable lease never expires)."""
    expires = _epoch(lease.get("expires"))
    return expires is not None and expires <= now


def describe(lease, host=None):
    """One line naming the holder of a lease, for refusals and reports."""
    if lease.get("unreadable"):
        return "an unreadable lease (%s)" % lease["unreadable"]
    parts = ["job %s" % lease.get("job")]
    if lease.get("by"):
        parts.append("by %s" % lease["by"])
    if lease.get("operation"):
        what = "%s of %s" % (lease["operation"], lease.get("subject") or host or "?")
        if lease.get("role"):
            what += ", this host as its %s" % lease["role"]
        parts.append(what)
    if lease.get("controller"):
        parts.append("from %s" % lease["controller"])
    parts.append("since %s" % lease.get("since"))
    parts.append("last heartbeat %s, expires %s" % (lease.get("heartbeat"), lease.get("expires")))
    return ", ".join(parts)


def conflict(lease, jobs, now=None):
    """Why a job may not take a host whose lease is `lease`: "held by ..." naming the holder, or None when no other
    job holds it (no lease, a lease of one of `jobs` - the job's own id and a dead job it breaks - or one that
    expired). The one rule for the take (acquire, on the host) and for the look from the facts (the filter
    hvmaint.libvirt.lease_conflict, on the controller)."""
    if lease is None:
        return None
    holder = lease.get("job")
    if holder and holder in [j for j in jobs if j]:
        return None
    if is_expired(lease, time.time() if now is None else now):
        return None
    return "held by %s" % describe(lease)


class _Locked:
    """An exclusive lock beside the lease, so that two jobs reading and writing it at once take turns."""

    def __init__(self, path):
        self.path = path + ".lock"
        self.handle = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        self.handle = open(self.path, "a", encoding="utf-8")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def acquire(job, by, operation, subject, role, ttl=DEFAULT_LEASE_TTL, path=DEFAULT_LEASE_PATH,
            refuse_marked=False, mark_path=DEFAULT_MARK_PATH, break_job=None, check_mode=False, now=None,
            controller=None):
    """Take the host for `job`, or renew the lease `job` already holds (its heartbeat).

    Returns {changed, lease, previous, broken}; raises LeaseConflict when another job holds a lease that has not
    expired (unless it is `break_job`), or when `refuse_marked` and the host is under maintenance."""
    if not job:
        raise ValueError("a lease needs a job id")
    if role not in LEASE_ROLES:
        raise ValueError("role must be one of %s, not %r" % (", ".join(LEASE_ROLES), role))
    if not isinstance(ttl, int) or ttl < 10:
        raise ValueError("ttl must be a whole number of seconds, at least 10, not %r" % (ttl,))
    now = int(time.time() if now is None else now)
    with _Locked(path):
        previous = read_lease(path)
        held = conflict(previous, [job, break_job], now)
        if held:
            raise LeaseConflict("%s is %s" % (socket.gethostname(), held), previous)
        broken = previous if previous is not None and break_job and previous.get("job") == break_job != job else None
        if refuse_marked:
            mark = read_mark(mark_path)
            if mark is not None:
                raise LeaseConflict("%s is under maintenance (since %s, by %s: %s) and may not receive VMs"
                                    % (socket.gethostname(), mark.get("since"), mark.get("by"), mark.get("reason")))
        mine = previous if previous and previous.get("job") == job else None
        lease = {
            "job": job,
            "by": by,
            "operation": operation,
            "subject": subject,
            "role": role,
            "since": mine["since"] if mine and mine.get("since") else _iso(now),
            "heartbeat": _iso(now),
            "expires": _iso(now + ttl),
            "ttl": ttl,
            "controller": controller or (mine or {}).get("controller"),
        }
        if not check_mode:
            # The same atomic write as the mark: a reader never sees half a lease.
            write_mark(lease, path)
    return {"changed": True, "lease": lease, "previous": previous, "broken": broken}


def release(job, path=DEFAULT_LEASE_PATH, check_mode=False):
    """Give the host back, when `job` holds it; a lease held by another job is left alone.

    Returns {changed, lease (what remains), previous}."""
    with _Locked(path):
        previous = read_lease(path)
        if previous is None or previous.get("job") != job:
            return {"changed": False, "lease": previous, "previous": previous}
        if not check_mode:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return {"changed": True, "lease": None, "previous": previous}
