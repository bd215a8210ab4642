# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Running several moves at once: the Batch scheduler bounds the migrations per source and per destination."""

from __future__ import annotations

import threading
import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLL_INTERVAL_S
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import PROGRESS_WRITE_INTERVAL_S
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import (
    ABORTED,
    ALREADY_THERE,
    FAILED,
    SKIPPED,
    base_result,
)


class Batch:
    """Runs planned moves of one source host, to one destination or several, in the order given: at most
    policy.max_parallel at a time from the source and at most policy.max_parallel_per_destination into any one
    destination. A move whose destination is full waits while later moves to other destinations start.

    A migration whose VM already runs on its destination (switched over) no longer counts: what remains is
    libvirt stopping the source's QEMU, which sends nothing, and the next VM starts meanwhile. It is verified and
    recorded as every other once libvirt's call returns."""

    def __init__(self, policy, progress=None, migrators=()):
        self.policy = policy
        self.progress = progress          # callable(snapshot dict), called about once a second
        self.migrators = list(migrators)
        self._jobs = []
        self._queued = []
        self._last_progress_write = 0.0

    def request_abort(self, why="abort requested"):
        """Ask every migration of the batch to abort (safe to call from a signal handler)."""
        for migrator in self.migrators:
            migrator.request_abort(why)

    def _abort_requested(self):
        return next((m._abort_requested for m in self.migrators if m._abort_requested), None)

    def run(self, entries, waves=None):
        """entries: [(migrator, plan)]. Return one result per entry, in the entries' order. waves: VM name to a
        wave number, when the list spans several waves (a drain's tiers run in one call): a VM starts only once
        every VM of an earlier wave has started, so a later wave fills the slots the earlier one no longer needs
        but never passes it."""
        for migrator, _plan in entries:
            if migrator not in self.migrators:
                self.migrators.append(migrator)
        results = {}
        for migrator, plan in entries:
            if plan.action == ALREADY_THERE:
                entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
                entry.update(outcome=ALREADY_THERE, elapsed_s=0.0)
                results[plan.name] = entry
        self._queued = [(migrator, plan) for migrator, plan in entries if plan.action == "move"]
        running = []
        inbound = {}
        released = set()
        wake = threading.Event()
        stop_starting = False
        while self._queued or running:
            abort = self._abort_requested()
            if abort:
                stop_starting = True
            # Finished jobs first, so that every slot they free is filled in this round, not a poll later.
            for job in running:
                if job.switched_over and id(job) not in released:
                    released.add(id(job))
                    inbound[id(job.migrator)] -= 1
            for job in [job for job in running if job.done.is_set()]:
                running.remove(job)
                if id(job) not in released:
                    inbound[id(job.migrator)] -= 1
                results[job.plan.name] = job.result
                if job.result["outcome"] in (FAILED, ABORTED):
                    # A failure stops the list: VMs already moving finish, the others are not started.
                    stop_starting = True
            while not stop_starting and sum(id(j) not in released for j in running) < self.policy.max_parallel:
                first_wave = min(((waves or {}).get(plan.name, 0) for _migrator, plan in self._queued), default=0)
                ready = next((item for item in self._queued
                              if (waves or {}).get(item[1].name, 0) == first_wave
                              and inbound.get(id(item[0]), 0) < self.policy.max_parallel_per_destination), None)
                if ready is None:
                    break
                self._queued.remove(ready)
                migrator, plan = ready
                inbound[id(migrator)] = inbound.get(id(migrator), 0) + 1
                job = migrator._start(plan, wake)
                self._jobs.append(job)
                running.append(job)
            # Each job's own watcher polls it (Migrator._watch); this loop only starts, reaps and aborts.
            for job in running:
                if abort and job.abort_reason is None and not job.done.is_set():
                    job.migrator._abort(job, "user", abort)
            if stop_starting and self._queued:
                for migrator, plan in self._queued:
                    entry = base_result(plan.name, plan.uuid, migrator.source, migrator.destination)
                    entry.update(outcome=SKIPPED, error="not started: %s" % (
                        self._abort_requested() or "an earlier migration of the list failed"))
                    results[plan.name] = entry
                self._queued = []
            self._write_progress(force=not (self._queued or running))
            if running:
                wake.wait(POLL_INTERVAL_S)
                wake.clear()
        return [results[plan.name] for _migrator, plan in entries]

    def _write_progress(self, force=False):
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_progress_write = now
        vms = []
        for job in self._jobs:
            if job.done.is_set():
                entry = job.result
                vms.append({"name": entry["name"], "destination": entry["destination"], "status": entry["outcome"],
                            "elapsed_s": entry["elapsed_s"], "downtime_ms": entry.get("downtime_ms"),
                            "error": entry.get("error")})
            else:
                vm = {"name": job.plan.name, "destination": job.migrator.destination, "status": "running",
                      "elapsed_s": round(now - job.started, 1)}
                vm.update(job.progress)
                vms.append(vm)
        vms += [{"name": plan.name, "destination": migrator.destination, "status": "queued"}
                for migrator, plan in self._queued]
        destinations = _unique(m.destination for m in self.migrators)
        self.progress({"source": self.migrators[0].source if self.migrators else None,
                       "destination": destinations[0] if len(destinations) == 1 else None,
                       "destinations": destinations, "updated": time.time(), "finished": force, "vms": vms})


def _unique(values):
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen
