# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The live-migration engine behind hvmaint.libvirt.live_migrate: starting and steering migrations.

One connection to the source and one to the destination serve a whole list of VMs. Each migration is libvirt's
peer-to-peer migration (the source libvirtd drives it and opens its own connection to the destination), run in a
worker thread because virDomainMigrateToURI3 blocks until the VM has moved; libvirt-python releases the GIL while
it waits. The calling thread is the monitor: about once a second it reads each running job's statistics to show
progress, to take the escalation steps of the policy and to enforce its timeouts.

The split between pure functions (option validation, policy and timeout computation, escalation, result building:
unit-tested with recorded libvirt data) and the Migrator class (libvirt calls: proven on the lab) is deliberate.

The Migrator's pre-flight (preflight.py), verification and repair (verification.py) and history recording
(history.py) are mixed into it from their own files; Batch (batch.py) schedules the starts.
"""

from __future__ import annotations

import threading
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    close_quietly,
    libvirt,
    open_connection,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.batch import Batch
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.history import HistoryRecording
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import (
    HostUuidInBackground,
    _host_uuid,
    same_host_name,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    CONTROL_CALL_TIMEOUT_S,
    FIRST_POLL_S,
    POLL_INTERVAL_S,
    SWITCHOVER_CHECK_S,
    Escalator,
    completion_timeout_s,
    migration_flags,
    migration_params,
    offline_flags,
    parse_libvirt_uri,
    start_from_history,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import Preflight
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import progress_from_stats
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import FAILED, MIGRATED, base_result, faulted
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.verification import Verification


class Job:
    """A running migration."""

    def __init__(self, plan, policy, flags, params, migrator=None):
        self.plan = plan
        self.migrator = migrator
        self.flags = flags
        self.params = params
        self.timeout_s = completion_timeout_s(policy, plan.memory_bytes, plan.disk_bytes if plan.copy_storage else 0)
        self.escalator = Escalator(policy, self.timeout_s,
                                   None if plan.offline else start_from_history(policy, plan.metadata))
        self.done = threading.Event()
        self.thread = None
        self.watcher = None
        self.watch_dom = None     # the domain on the watcher's own connection to the source
        self.started = None
        self.started_wall = None
        self.api_returned = None
        self.abort_reason = None
        self.abort_text = None
        self.result = None
        self.last_stats = None
        self.last_poll = None
        self.progress = {}
        self.timings = {}
        # Set by the watcher once the VM runs on the destination: only libvirt's clean-up of the source remains,
        # so the job no longer takes a slot (Batch).
        self.switched_over = False
        self.dest_dom = None


class Migrator(Preflight, Verification, HistoryRecording):
    """Moves VMs from the source libvirt to one destination. Use as a context manager (closes its connections).

    Several Migrators of one source (one per destination) can share the source connection (`source_conn`) and run
    their moves together under one Batch."""

    def __init__(self, source_uri, destination_uri, policy, destination=None, destination_connect_uri=None,
                 verify=True, record_history=True, home=None, progress=None, log=None, source_conn=None,
                 site_mapping=None, remove_source_copies=False):
        self.source_uri = source_uri
        self.destination_uri = destination_uri
        self.destination_connect_uri = destination_connect_uri or destination_uri
        self.destination = destination
        self.policy = policy
        self.verify = verify
        self.record_history = record_history
        self.home = home
        # A move to another site: the normalized mapping (_site_mapping.py) of its networks, bridges and pools.
        self.site_mapping = site_mapping
        self.remove_source_copies = remove_source_copies
        self.progress = progress          # callable(snapshot dict), called about once a second
        self.log = log or (lambda _msg: None)
        self.sconn = source_conn
        self._owns_source = source_conn is None
        self.dconn = None
        self.source = source_conn.getHostname() if source_conn is not None else None
        self._abort_requested = None

    # -- connections --------------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._owns_source:
            close_quietly(self.sconn)
        close_quietly(self.dconn)
        self.sconn = self.dconn = None
        return False

    def connect_source(self):
        if self.sconn is None:
            self.sconn = open_connection(self.source_uri)
            self.source = self.sconn.getHostname()
        return self.sconn

    def connect(self):
        """Open both connections and refuse a destination that is the source itself."""
        parse_libvirt_uri(self.source_uri, "uri")
        _transport, dest_host = parse_libvirt_uri(self.destination_uri, "destination_uri")
        if not dest_host:
            raise HvmaintError("destination_uri %r names no host: the source's libvirtd must reach the destination"
                               " over the network" % self.destination_uri)
        if self.destination_connect_uri != self.destination_uri:
            parse_libvirt_uri(self.destination_connect_uri, "destination_connect_uri")
        self.connect_source()
        source_uuid = HostUuidInBackground(self.sconn)
        try:
            self.dconn = open_connection(self.destination_connect_uri)
        except HvmaintError as exc:
            raise HvmaintError("destination %s is unreachable, nothing was moved: %s"
                               % (self.destination or dest_host, exc)) from exc
        dest_hostname = self.dconn.getHostname()
        if self.destination is None:
            self.destination = dest_hostname
        elif not same_host_name(self.destination, dest_hostname):
            raise HvmaintError("destination %s: %s reaches %s, not %s: nothing was moved (check the URI)"
                               % (self.destination, self.destination_connect_uri, dest_hostname, self.destination))
        if self.destination_connect_uri != self.destination_uri:
            self._check_migration_uri_reaches(dest_hostname)
        try:
            destination_uuid = _host_uuid(self.dconn)   # while the source's is read
            same_uuid = source_uuid.result() == destination_uuid
        except libvirt.libvirtError:
            same_uuid = False
        if same_uuid or dest_hostname == self.source:
            raise HvmaintError("destination %s (%s) is the source host %s itself: nothing to migrate"
                               % (self.destination, self.destination_connect_uri, self.source))

    def _check_migration_uri_reaches(self, dest_hostname):
        """The host behind destination_uri (where the source's libvirtd sends the VM) must be the host behind the
        connection this engine checks and verifies with: same libvirt host UUID."""
        try:
            migration_conn = open_connection(self.destination_uri)
        except HvmaintError as exc:
            if parse_libvirt_uri(self.source_uri, "uri")[1]:
                # The engine runs away from the source (a remote uri): it may lack the source's credentials for
                # destination_uri, so it cannot tell; the roles always run it on the source host.
                self.log("could not open destination_uri %s to check its identity: %s" % (self.destination_uri, exc))
                return
            raise HvmaintError("destination %s: cannot check that %s reaches it (%s): nothing was moved"
                               % (self.destination, self.destination_uri, exc)) from exc
        try:
            reached, reached_name = _host_uuid(migration_conn), migration_conn.getHostname()
        finally:
            close_quietly(migration_conn)
        expected = _host_uuid(self.dconn)
        if reached != expected:
            raise HvmaintError("destination %s: destination_uri %s reaches %s (host UUID %s) but"
                               " destination_connect_uri %s reaches %s (host UUID %s): nothing was moved"
                               % (self.destination, self.destination_uri, reached_name, reached,
                                  self.destination_connect_uri, dest_hostname, expected))

    def _reconnect_destination(self):
        """After a failure the destination connection may be dead (its libvirtd restarted): try once more."""
        close_quietly(self.dconn)
        self.dconn = None
        try:
            self.dconn = open_connection(self.destination_connect_uri)
        except HvmaintError:
            self.dconn = None
        return self.dconn

    # -- running ------------------------------------------------------------------------------------------------
    def request_abort(self, why="abort requested"):
        """Ask the run to abort its migrations (safe to call from a signal handler)."""
        self._abort_requested = why

    def run(self, plans):
        """Migrate the planned VMs; return one result per plan, in the plan's order."""
        return Batch(self.policy, progress=self.progress, migrators=[self]).run([(self, plan) for plan in plans])

    def _start(self, plan, wake):
        if plan.offline:
            # Nothing runs, so no stream to tune: only the definition (rewritten for another site) is sent.
            flags, params = offline_flags(), ({"persistent_xml": plan.persistent_xml} if plan.persistent_xml else {})
        else:
            flags = migration_flags(self.policy, plan.copy_storage)
            params = migration_params(self.policy, plan.migrate_disks, plan.destination_xml, plan.persistent_xml)
        job = Job(plan, self.policy, flags, params, migrator=self)
        job.result = base_result(plan.name, plan.uuid, self.source, self.destination)
        job.result["copy_storage"] = plan.copy_storage
        job.result["mode"] = "offline" if plan.offline else "live"
        job.result["policy_steps"] = [{"at_s": 0.0, "iteration": 0, "action": "note", "detail": note}
                                      for note in plan.notes]
        job.started = time.monotonic()
        job.started_wall = time.time()
        job.thread = threading.Thread(target=self._migrate, args=(job, wake), name="migrate-%s" % plan.name)
        job.thread.daemon = True
        job.thread.start()
        if not plan.offline:
            job.watcher = threading.Thread(target=self._watch, args=(job, wake), name="watch-%s" % plan.name)
            job.watcher.daemon = True
            job.watcher.start()
            switchover = threading.Thread(target=self._watch_switchover, args=(job, wake),
                                          name="switchover-%s" % plan.name)
            switchover.daemon = True
            switchover.start()
        return job

    def _watch(self, job, wake=None):
        """Poll the job about once a second until it ends (progress, escalation, timeouts). Each job has its own
        watcher because a statistics query can block for seconds while libvirt tears a source QEMU down: in a
        shared loop that would hold back the other jobs and the start of the next migration.

        The watcher talks to the source over its own connection, as `virsh domjobinfo` would from another
        terminal, so that none of its calls waits behind the long migrateToURI3 call on the shared one."""
        conn, job.watch_dom = self._own_source_connection(job)  # without one, the shared connection serves
        try:
            interval = FIRST_POLL_S
            while not job.done.wait(interval):
                interval = POLL_INTERVAL_S
                try:
                    self._monitor(job)
                except Exception as exc:  # noqa: BLE001 - a watcher must not die silently; the migration goes on
                    job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1),
                                                "iteration": None, "action": "error",
                                                "detail": "monitoring failed: %s" % exc})
        finally:
            job.watch_dom = None
            close_quietly(conn)

    def _watch_switchover(self, job, wake):
        """Ask the destination every SWITCHOVER_CHECK_S whether it runs the VM yet (Batch then frees the job's
        slot). A thread of its own: a call to a destination whose link went down waits until keepalive gives up
        on the connection, and that wait must not hold back the watcher's timeouts and aborts on the source."""
        while not job.switched_over and not job.done.wait(SWITCHOVER_CHECK_S):
            try:
                if self._runs_on_destination(job):
                    job.result["switched_over_at"] = round(time.time(), 3)
                    job.switched_over = True
                    if wake is not None:
                        wake.set()
            except Exception:  # noqa: BLE001 - only the early release of the slot is lost; the call's end counts
                return

    def _runs_on_destination(self, job):
        """True once the destination runs the VM: libvirt resumed it there (Finish), and what remains of the
        migration is the source's clean-up (Confirm: stopping the source's QEMU, a second or more). Never in
        post-copy, where the destination still fetches memory from the source. A cheap call to the destination,
        which holds no job lock that the migration needs."""
        if job.escalator.postcopy or self.dconn is None:
            return False
        if job.dest_dom is None:
            try:
                job.dest_dom = self.dconn.lookupByUUIDString(job.plan.uuid)
            except libvirt.libvirtError:
                return False  # not prepared there yet
        try:
            return job.dest_dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except libvirt.libvirtError:
            job.dest_dom = None  # the incoming domain went away (a failed migration): look again
            return False

    def _own_source_connection(self, job):
        """(connection, domain) of the job's VM on a source connection of its own, or (None, None) when none can be
        opened or it cannot see the VM: the caller then uses the shared connection."""
        try:
            conn = open_connection(self.source_uri)
        except HvmaintError:
            return None, None
        try:
            return conn, conn.lookupByUUIDString(job.plan.uuid)
        except libvirt.libvirtError:
            close_quietly(conn)
            return None, None

    def _call_connection(self, job):
        """(connection, domain) for this job's migrateToURI3: a connection of its own, as each `virsh migrate` of
        `xargs -P2` has. On one shared connection, concurrent migration calls returned together, the first ones
        held until the last was done (lab, three idle guests at once: the last call returned after 4.9 s shared,
        3.9 s on separate connections, median of eight runs each), which kept each wave's end waiting. When no
        connection of its own can be had, the shared one serves (connection None)."""
        conn, dom = self._own_source_connection(job)
        return conn, dom if conn is not None else job.plan.dom

    def _migrate(self, job, wake):
        plan = job.plan
        try:
            try:
                # QEMU keeps the limit until changed; set it for every migration so an earlier run's escalated
                # value does not carry over.
                if not plan.offline:
                    plan.dom.migrateSetMaxDowntime(job.escalator.downtime_ms, 0)
                    job.progress["downtime_limit_ms"] = job.escalator.downtime_ms
                call_conn, call_dom = self._call_connection(job)
                try:
                    api_start = time.monotonic()
                    job.timings["before_api_s"] = api_start - job.started
                    call_dom.migrateToURI3(self.destination_uri, job.params, job.flags)
                finally:
                    close_quietly(call_conn)
                job.api_returned = time.monotonic()
                job.timings["api_s"] = job.api_returned - api_start
                self._after_success(job)
            except libvirt.libvirtError as exc:
                job.api_returned = job.api_returned or time.monotonic()
                self._after_failure(job, exc)
        except Exception as exc:  # noqa: BLE001 - a worker thread must always report, never die silently
            job.result.update(outcome=FAILED, error="internal error: %s: %s" % (type(exc).__name__, exc))
        finally:
            job.result["elapsed_s"] = round(time.monotonic() - job.started, 3)
            job.result["started_at"] = round(job.started_wall, 3)
            job.result["finished_at"] = round(time.time(), 3)
            job.result["timings_s"] = {k: round(v, 4) for k, v in job.timings.items()}
            job.result["policy_steps"].extend(job.escalator.steps)
            if not plan.offline:
                # The policy this migration ended with, for the ledger and the next plan's predictions.
                job.result.update(downtime_limit_ms=job.escalator.downtime_ms, escalated=job.escalator.escalated,
                                  postcopy=job.escalator.postcopy,
                                  bandwidth_limit_mib_s=self.policy.bandwidth_mib_s or None)
            job.result["faulted"] = job.result["outcome"] == MIGRATED and faulted(job.result)
            job.done.set()
            wake.set()

    # -- monitoring ---------------------------------------------------------------------------------------------
    def _monitor(self, job):
        if job.plan.offline:
            return  # no memory to copy, nothing to steer: libvirt only moves the definition
        now = time.monotonic()
        last = job.last_stats or {}
        if last.get("data_processed") and last.get("data_remaining") == 0 and not job.escalator.postcopy:
            # All data sent: only the switch-over and libvirt's clean-up remain, nothing to steer. A query now can
            # block for seconds while libvirt stops QEMU on the source.
            return
        try:
            stats = (job.watch_dom or job.plan.dom).jobStats(0)
        except libvirt.libvirtError:
            return  # the job just ended, or the domain is being torn down on the source
        elapsed = now - job.started
        previous = job.last_stats
        interval = (now - job.last_poll) if job.last_poll else None
        prev_processed = None
        if previous:
            prev_processed = previous.get("data_processed")
        job.progress.update(progress_from_stats(stats, prev_processed, interval))
        if job.escalator.postcopy:
            job.progress["phase"] = "postcopy"
        elif stats.get("disk_processed") and not stats.get("memory_processed"):
            job.progress["phase"] = "disk"
        else:
            job.progress["phase"] = "memory" if stats.get("memory_processed") else "starting"
        job.last_stats, job.last_poll = stats, now
        if job.abort_reason or job.done.is_set():
            return
        dom = job.watch_dom or job.plan.dom
        for action, value in job.escalator.observe(stats, elapsed):
            if action == "abort":
                self._abort(job, job.escalator.fired, value)
                continue
            if action == "downtime":
                problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.migrateSetMaxDowntime, value, 0)
            else:
                problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.migrateStartPostCopy, 0)
            if action == "postcopy":
                # Only a switch libvirt accepted counts: until then the completion and progress timeouts apply.
                if problem:
                    job.escalator.postcopy_refused(elapsed, problem)
                else:
                    job.escalator.postcopy_started(elapsed)
            elif problem:
                job.escalator.steps.append({"at_s": round(elapsed, 1), "iteration": None, "action": "error",
                                            "detail": "%s failed: %s" % (action, problem)})
            else:
                job.progress["downtime_limit_ms"] = value

    def _abort(self, job, reason, why):
        job.abort_reason, job.abort_text = reason, why
        dom = job.watch_dom or job.plan.dom
        problem = bounded_call(CONTROL_CALL_TIMEOUT_S, dom.abortJob)
        if problem:
            # In post-copy, or the job just ended: nothing to cancel.
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "error", "detail": "abort (%s) failed: %s" % (why, problem)})


def bounded_call(timeout_s, call, *args):
    """Run call(*args), a libvirt call, in a helper thread and wait at most timeout_s: None when it returned,
    else what went wrong (its error, or that it did not return in time; the helper is left to finish alone)."""
    box = {}

    def run():
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller as text
            box["error"] = str(exc).strip() or type(exc).__name__

    helper = threading.Thread(target=run, name="libvirt-call")
    helper.daemon = True
    helper.start()
    helper.join(timeout_s)
    if helper.is_alive():
        return "no answer from libvirt within %g s" % timeout_s
    return box.get("error")
