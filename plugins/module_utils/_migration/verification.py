# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""After migrateToURI3 returns or fails: where the VM really is, verification, repair of the rule "defined on
exactly one host, running on at most one", and the result's figures.
"""

from __future__ import annotations

import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import explain, libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import (
    _completed_stats,
    _lookup,
    _presence,
    _where_text,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import (
    ABORTED,
    FAILED,
    MIGRATED,
    completed_figures,
)


# How long a failed migration waits for the destination's libvirtd to drop the incoming copy: longer than libvirt's
# default migration keepalive (5 s x 5) after which a destination behind a cut link gives the migration up.
INCOMING_CLEANUP_WAIT_S = 45.0
INCOMING_CLEANUP_POLL_S = 1.0
# How long a failed post-copy is given to be resumed. After a cut link libvirt can resume it only once both hosts
# have given the broken stream up (keepalive, about 30 s) and the link is back; until then each try fails at once
# or when its connection attempt times out. Past this the VM is left paused on the destination, needing attention.
POSTCOPY_RESUME_WINDOW_S = 120.0
POSTCOPY_RESUME_RETRY_S = 5.0
# What _resume_postcopy returns when libvirt finished the post-copy on its own between two tries.
FINISHED_BY_ITSELF = "finished by itself"


def _alive(conn):
    try:
        return conn.isAlive() == 1
    except (libvirt.libvirtError, AttributeError):
        return False


def _finished_at_destination(where):
    """The migration is over by itself: the destination runs the VM, persistent, and the source (which answered)
    runs it no more. Only this client's call failed, e.g. its connection timed out over a cut link while the
    source's libvirtd, which drives a peer-to-peer migration, finished the post-copy once the link was back."""
    src, dst = where["source"], where["destination"]
    return bool(src.get("error") is None and not src.get("running") and dst.get("error") is None
                and dst.get("running") and dst.get("persistent"))


def _incoming_left(where):
    """The source runs the VM and the destination still has a transient copy: the incoming side of the failed
    migration, not yet cleaned up."""
    src, dst = where["source"], where["destination"]
    return bool(src.get("running") and dst.get("error") is None and dst.get("running") and not dst.get("persistent"))


class Verification:
    """The after-the-call half of a Migrator (mixed into it): needs its connections, source, destination,
    verify and record_history, and HistoryRecording._record."""

    def _after_success(self, job):
        plan = job.plan
        t0 = time.monotonic()
        dest_dom = self.dconn.lookupByUUIDString(plan.uuid)
        stats = _completed_stats(dest_dom)
        job.result.update(completed_figures(stats))
        if plan.copy_storage:
            self._disk_figures(job, dest_dom)
        job.result["outcome"] = MIGRATED
        if self.verify:
            problems = self._verify_moved(plan, dest_dom, job)
            if problems:
                job.result.update(outcome=FAILED, error="; ".join(problems))
        job.timings["verify_s"] = time.monotonic() - t0
        self._source_copies(job)
        if self.record_history and job.result["outcome"] == MIGRATED:
            t1 = time.monotonic()
            self._record(dest_dom, plan, job, MIGRATED, home_if_unset=self.source)
            job.timings["history_s"] = time.monotonic() - t1

    def _source_copies(self, job):
        """The source's copies of the disks the move copied: kept and listed, or removed when asked, and then only
        after the VM was verified running on the destination (a failed or unverified move keeps them all)."""
        copies = [dict(copy, host=self.source, removed=False) for copy in job.plan.source_copies]
        job.result["source_copies"] = copies
        if not (copies and self.remove_source_copies):
            return
        if not self.verify or job.result["outcome"] != MIGRATED:
            for copy in copies:
                copy["kept_because"] = "the move was not verified"
            return
        for copy in copies:
            try:
                self.sconn.storageVolLookupByPath(copy["path"]).delete(0)
                copy["removed"] = True
            except libvirt.libvirtError as exc:
                copy["kept_because"] = "cannot remove it: %s" % str(exc).strip()

    def _disk_figures(self, job, dest_dom):
        # The destination's completed statistics cover memory only: the disks were mirrored by the source (NBD).
        # Take what the source reported while polling, or else what the copy allocated on the destination.
        disk = (job.last_stats or {}).get("disk_processed") or 0
        if not disk:
            for target in job.plan.migrate_disks or []:
                try:
                    disk += dest_dom.blockInfo(target)[1]
                except libvirt.libvirtError:
                    pass
        job.result["disk_transferred_bytes"] = disk
        if job.result.get("data_transferred_bytes") is not None:
            job.result["data_transferred_bytes"] += disk

    def _verify_moved(self, plan, dest_dom, job):
        """Running and persistent on the destination; gone from the source (a left-over definition is removed)."""
        problems = []
        if plan.offline and dest_dom.isActive():
            problems.append("%s runs on %s after an offline migration" % (plan.name, self.destination))
        elif not plan.offline and not dest_dom.isActive():
            problems.append("%s is not running on %s after the migration" % (plan.name, self.destination))
        if not dest_dom.isPersistent():
            problems.append("%s is not persistent on %s after the migration" % (plan.name, self.destination))
        left = _lookup(self.sconn, uuid=plan.uuid)
        if left is not None:
            if left.isActive():
                problems.append("%s still runs on %s after the migration" % (plan.name, self.source))
                if dest_dom.isActive():
                    job.result["needs_attention"] = (
                        "%s is active on both %s and %s after libvirt reported the migration done: nothing was"
                        " stopped or removed. Find which copy runs the VM (virsh domstate --reason on both hosts)"
                        " before destroying the other" % (plan.name, self.source, self.destination))
            elif not problems:
                left.undefine()
                job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                            "action": "repair", "detail": "removed the definition libvirt left on"
                                            " %s" % self.source})
        return problems

    def _after_failure(self, job, exc):
        plan = job.plan
        code = exc.get_error_code()
        reason = job.abort_reason
        if reason is None and code == getattr(libvirt, "VIR_ERR_OPERATION_ABORTED", 78):
            reason = "user"   # aborted from outside: state=aborted, virsh domjobabort, or a signal to the module
        where = self._locate(plan)
        if not job.escalator.postcopy:
            where = self._settled(plan, where)
        job.result["where"] = where
        if job.escalator.postcopy and not plan.offline and not (
                where["destination"].get("running") and where["destination"].get("persistent")
                and not where["source"].get("running")):
            self._after_postcopy_failure(job, exc, where)
            return
        src, dst = where["source"], where["destination"]
        if plan.offline:
            moved = dst.get("persistent") and not src.get("defined")
        else:
            moved = dst.get("running") and dst.get("persistent") and not src.get("running")
        if moved:
            # libvirt reported an error after the VM had moved (e.g. in the confirm phase): it did move.
            job.result["outcome"] = MIGRATED
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "note", "detail": "libvirt reported an error after the VM"
                                        " moved: %s" % str(exc).strip()})
            dest_dom = _lookup(self.dconn, uuid=plan.uuid)
            stats = _completed_stats(dest_dom) if dest_dom is not None else {}
            job.result.update(completed_figures(stats))
            self._repair(plan, job, where)
            if self.record_history and dest_dom is not None:
                self._record(dest_dom, plan, job, MIGRATED, home_if_unset=self.source)
            return
        if reason == "user":
            job.result["outcome"] = ABORTED
            job.result["error"] = "aborted on request (%s); %s" % (self._abort_requested or "job cancelled",
                                                                   _where_text(plan.name, self.source,
                                                                               self.destination, where))
        else:
            job.result["outcome"] = FAILED
            why = job.abort_text if job.abort_reason else str(explain(exc, "migration failed"))
            job.result["error"] = "%s; %s" % (why, _where_text(plan.name, self.source, self.destination, where))
            if job.abort_reason:
                job.result["timed_out"] = job.abort_reason
        self._repair(plan, job, where)
        if self.record_history and where["source"].get("defined"):
            dom = _lookup(self.sconn, uuid=plan.uuid)
            if dom is not None:
                self._record(dom, plan, job, job.result["outcome"], home_if_unset=None)

    def _after_postcopy_failure(self, job, exc, where):
        """Post-copy had switched over: the destination holds the VM's newest memory, the source a stale copy.

        Resuming the source would run the VM from stale memory (and twice, once the destination resumes), so it is
        never done: libvirt's post-copy resume is tried, again and again for POSTCOPY_RESUME_WINDOW_S (after a cut
        link it works only once both hosts gave the broken stream up and the link is back), else the VM is left
        paused on the destination and the result says it needs attention."""
        plan = job.plan
        resume = getattr(libvirt, "VIR_MIGRATE_POSTCOPY_RESUME", None)
        problem = str(explain(exc, "post-copy failed"))
        dom = None
        try:
            dom = _lookup(self.sconn, uuid=plan.uuid)
        except (libvirt.libvirtError, AttributeError) as lookup_error:
            problem += "; the source cannot be asked: %s" % lookup_error
        if resume is not None and dom is not None:
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "postcopy_resume", "detail": "post-copy failed (%s): resuming it"
                                        % problem})
            failure = self._resume_postcopy(job, dom, resume)
            if failure is None or failure is FINISHED_BY_ITSELF:
                job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                            "action": "postcopy_resume", "detail": "post-copy resumed"
                                            if failure is None else "post-copy finished without a resume: the"
                                            " VM runs on %s, no longer on %s" % (self.destination, self.source)})
                if self.dconn is None or not _alive(self.dconn):
                    self._reconnect_destination()  # the old connection died with the link
                self._after_success(job)
                return
            problem += "; post-copy resume failed: %s" % failure
        elif resume is None:
            problem += "; this libvirt has no post-copy resume"
        where = self._locate(plan)
        job.result["where"] = where
        job.result["outcome"] = FAILED
        job.result["needs_attention"] = (
            "%s switched to post-copy and then failed: its newest memory is on %s, where libvirt leaves it paused;"
            " the copy on %s is stale and was not resumed. Once both hosts answer, recover with `virsh migrate"
            " --postcopy --postcopy-resume` from %s, or resume it on %s"
            % (plan.name, self.destination, self.source, self.source, self.destination))
        job.result["error"] = "%s; %s" % (problem, _where_text(plan.name, self.source, self.destination, where))

    def _resume_postcopy(self, job, dom, resume):
        """libvirt's post-copy resume, tried again every POSTCOPY_RESUME_RETRY_S until it succeeds or the window
        passes: None once resumed, FINISHED_BY_ITSELF once the VM is found moved between two tries (nothing is
        left to resume then, and each try would only fail), else what the tries said."""
        started = time.monotonic()
        deadline = started + POSTCOPY_RESUME_WINDOW_S
        tries = 0
        while True:
            tries += 1
            try:
                dom.migrateToURI3(self.destination_uri, job.params, job.flags | resume)
                return None
            except libvirt.libvirtError as exc:
                last = str(exc).strip()
            # The destination is asked only once the source no longer runs the VM: while the link is down each
            # connection attempt to it could wait on TCP, and the source (a local connection) answers at once.
            source_now = _presence(self.sconn, job.plan.uuid)
            if (source_now.get("error") is None and not source_now.get("running")
                    and _finished_at_destination(self._locate(job.plan))):
                return FINISHED_BY_ITSELF
            if time.monotonic() + POSTCOPY_RESUME_RETRY_S >= deadline:
                return "%d tries over %.0f s, the last: %s" % (tries, time.monotonic() - started, last)
            time.sleep(POSTCOPY_RESUME_RETRY_S)

    def _settled(self, plan, where):
        """After a failed (pre-copy) migration the destination may still hold the incoming copy, paused and
        transient, until its libvirtd cleans up (at once, or once its keepalive gives up on a cut link): wait a
        bounded time for that rather than report the VM on two hosts, or act on a state about to change."""
        deadline = time.monotonic() + INCOMING_CLEANUP_WAIT_S
        while _incoming_left(where) and time.monotonic() < deadline:
            time.sleep(INCOMING_CLEANUP_POLL_S)
            where = self._locate(plan)
        return where

    def _locate(self, plan):
        """Where the VM is now: defined / running / persistent on source and destination (None: unknown)."""
        where = {"source": _presence(self.sconn, plan.uuid)}
        dest = _presence(self.dconn, plan.uuid)
        if dest.get("error") and self._reconnect_destination() is not None:
            dest = _presence(self.dconn, plan.uuid)
        where["destination"] = dest
        return where

    def _repair(self, plan, job, where):
        """Restore the rule: defined on exactly one host, running on at most one."""
        src, dst = where["source"], where["destination"]

        def note(detail):
            job.escalator.steps.append({"at_s": round(time.monotonic() - job.started, 1), "iteration": None,
                                        "action": "repair", "detail": detail})
        src_known, dst_known = src.get("error") is None, dst.get("error") is None
        if src.get("running") and dst.get("running"):
            # Both copies are active: which one holds the VM's newest state is not for a repair to guess, and
            # defining, starting or removing either could double or lose it.
            job.result["needs_attention"] = (
                "%s is active on both %s and %s: nothing was defined, started, stopped or removed. Find which copy"
                " runs the VM (virsh domstate --reason and domjobinfo on both hosts) before destroying the other"
                % (plan.name, self.source, self.destination))
            note("needs attention: " + job.result["needs_attention"])
            return
        try:
            if dst.get("running") and dst.get("persistent") and src.get("defined") and not src.get("running"):
                _lookup(self.sconn, uuid=plan.uuid).undefine()
                note("removed the stale definition on %s (the VM runs on %s)" % (self.source, self.destination))
                src["defined"] = False
            elif src.get("running") and not src.get("persistent") and dst_known and not dst.get("running"):
                self.sconn.defineXML(plan.inactive_xml)
                note("defined %s again on %s, where it runs" % (plan.name, self.source))
                src["defined"] = src["persistent"] = True
            elif dst.get("running") and not dst.get("persistent") and src_known and not src.get("defined"):
                self.dconn.defineXML(plan.inactive_xml)
                note("defined %s on %s, where it runs" % (plan.name, self.destination))
                dst["defined"] = dst["persistent"] = True
            if (plan.offline and src.get("defined") and not src.get("running") and dst.get("defined")
                    and not dst.get("running") and not plan.destination_defined):
                # The offline move half-happened: keep the source's definition, which nothing has touched.
                _lookup(self.dconn, uuid=plan.uuid).undefine()
                note("removed the definition the failed offline migration left on %s" % self.destination)
                dst["defined"] = False
            if (src.get("running") and dst.get("defined") and not dst.get("running")
                    and not plan.destination_defined):
                _lookup(self.dconn, uuid=plan.uuid).undefine()
                note("removed the definition the failed migration left on %s" % self.destination)
                dst["defined"] = False
            if src_known and dst_known and not src.get("defined") and not dst.get("defined"):
                # Both hosts answered and neither has it: the only case where defining it again cannot double it.
                self.sconn.defineXML(plan.inactive_xml)
                note("%s was defined nowhere: defined it again on %s from its saved XML" % (
                    plan.name, self.source))
                src["defined"] = True
            elif not (src_known and dst_known) and not (src.get("running") and src.get("persistent")):
                unread = [host for host, known in ((self.source, src_known), (self.destination, dst_known))
                          if not known]
                job.result["needs_attention"] = (
                    "%s: its state on %s could not be read, so nothing was defined, started or removed: check"
                    " with virsh on both hosts where it runs before doing anything" % (plan.name, ", ".join(unread)))
                note("needs attention: " + job.result["needs_attention"])
        except (libvirt.libvirtError, AttributeError) as exc:
            note("repair failed: %s" % exc)
