# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Every hypervisor's facts read from one process (the controller) over libvirt, a bounded number at a time.

The per-host way (the role fleet_facts running hypervisor_info on each host) costs Ansible a task on every host,
50-65 ms of the main process's time per host at a thousand hosts before any module runs. Reading each host's
libvirt over its URI from threads of one task costs one task. Each host's result has the shape of a registered
hypervisor_info result ({hypervisor} on success, {failed, msg} or {unreachable, msg} otherwise), so the lookup
fleet_facts (_fleet.py) leaves out and names a host whose facts, mark or lease could not be read exactly as it
does after the per-host read.
"""

from __future__ import annotations

import queue
import threading
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import gather
from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import conflict
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    close_quietly,
    open_connection,
)

MIGRATION_JOBS = ("migration_in", "migration_out")
MIGRATION_WAIT_DELAY_S = 5

FLEET_INFO_ARGUMENT_SPEC = dict(
    uris=dict(type="dict"),
    max_workers=dict(type="int", default=20),
    timeout=dict(type="int", default=300),
    migration_wait_retries=dict(type="int", default=120),
    own_jobs=dict(type="list", elements="str", default=[]),
)


def check_limits(params):
    """The options' bounds, as one message (None when they hold)."""
    wrong = ["%s must be at least 1, not %d" % (name, params[name]) for name in ("max_workers", "timeout")
             if params[name] < 1]
    if params["migration_wait_retries"] < 0:
        wrong.append("migration_wait_retries must be 0 or more, not %d" % params["migration_wait_retries"])
    return "; ".join(wrong) or None


def migrations_under_way(facts):
    return [vm["name"] for vm in facts.get("vms") or () if vm.get("job") in MIGRATION_JOBS]


def held_by_another_job(facts, own_jobs):
    """Whether the run whose jobs are `own_jobs` would be refused on this host (its lease, _lease.conflict's rule);
    never without own_jobs (a caller that names no job waits, as before)."""
    return bool(own_jobs) and conflict(facts.get("lease"), own_jobs) is not None


def read_over_libvirt(uri, wait_retries=0, delay=MIGRATION_WAIT_DELAY_S, sleep=time.sleep, own_jobs=()):
    """One host's result, read over `uri`: its facts with its mark and lease, once no migration is under way on it
    (a migration an interrupted run started goes on in libvirt: plan only once it has finished).

    Given the run's own jobs (its id and a dead job it breaks), a host that another job holds is returned at once,
    migrations or not, as the per-host read does: the run is refused there (the lease check), so waiting for that
    job's migrations would only delay the refusal."""
    try:
        conn = open_connection(uri)
    except HvmaintError as exc:
        return {"unreachable": True, "msg": str(exc)}
    try:
        for attempt in range(wait_retries + 1):
            facts = gather(conn, state_over_libvirt=True)
            moving = migrations_under_way(facts)
            if not moving or held_by_another_job(facts, own_jobs):
                return {"changed": False, "hypervisor": facts}
            if attempt < wait_retries:
                sleep(delay)
        return {"failed": True, "msg": "%s: migrations still under way after %d s (%s)"
                % (uri, wait_retries * delay, ", ".join(moving))}
    except HvmaintError as exc:
        return {"failed": True, "msg": str(exc)}
    finally:
        close_quietly(conn)


def read_fleet(readers, max_workers=20, timeout_s=300):
    """{host: result} of calling each host's reader (no argument, returns a result), at most max_workers at once.

    A host without an answer within timeout_s is unreachable. The threads are daemons: one stuck in a TCP connect
    to a host that drops packets does not keep the process alive after the others are done."""
    hosts = list(readers)
    results, lock, done = {}, threading.Lock(), threading.Event()
    todo = queue.Queue()
    for host in hosts:
        todo.put(host)

    def work():
        while True:
            try:
                host = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = readers[host]()
            except Exception as exc:  # noqa: BLE001 - one host's surprise must not lose the others' facts
                result = {"failed": True, "msg": "reading %s failed: %s: %s" % (host, type(exc).__name__, exc)}
            with lock:
                results[host] = result
                if len(results) == len(hosts):
                    done.set()

    if not hosts:
        return {}
    for _worker in range(min(max_workers, len(hosts))):
        threading.Thread(target=work, name="hvmaint-fleet-read", daemon=True).start()
    done.wait(timeout_s)
    with lock:
        return {host: results.get(host) or {"unreachable": True, "msg": "no answer within %d s" % timeout_s}
                for host in hosts}


def summary(results):
    """The module's return: every host's result, the hosts read and the hosts left out with why."""
    read = sorted(host for host, result in results.items() if isinstance(result.get("hypervisor"), dict))
    was_read = set(read)
    left_out = [{"host": host, "error": result.get("msg")} for host, result in sorted(results.items())
                if host not in was_read]
    return {"changed": False, "hosts": results, "read": read, "left_out": left_out}


def read_uris(params, sleep=time.sleep):
    """fleet_info's work for {host: uri}."""
    uris = params["uris"] or {}
    readers = {host: (lambda uri=uri: read_over_libvirt(uri, params["migration_wait_retries"], sleep=sleep,
                                                        own_jobs=params["own_jobs"]))
               for host, uri in uris.items()}
    return summary(read_fleet(readers, params["max_workers"], deadline_s(params)))


def deadline_s(params):
    """How long the whole read may take: the answer's timeout beyond the longest wait for migrations."""
    return params["timeout"] + params["migration_wait_retries"] * MIGRATION_WAIT_DELAY_S
