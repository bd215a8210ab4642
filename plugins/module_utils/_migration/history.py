# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Recording a move in the VM's own metadata (its home and its list of moves), as vm_locate reads it."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ansible_collections.hvmaint.libvirt.plugins.module_utils._ledger import switchover_s
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import MIGRATED, faulted
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import with_move, write_domain_metadata


def utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class HistoryRecording:
    """Mixed into Migrator: needs its source, destination, home and policy."""

    def _record(self, dom, plan, job, outcome, home_if_unset):
        move = {"at": utc_now(), "from": self.source, "to": self.destination, "outcome": outcome,
                "seconds": round(time.monotonic() - job.started, 2), "by": "hvmaint.libvirt.live_migrate"}
        if job.result.get("downtime_ms") is not None:
            move["downtime_ms"] = job.result["downtime_ms"]
        if job.result.get("data_transferred_bytes") is not None:
            move["data_bytes"] = job.result["data_transferred_bytes"]
        # The result's started_at is set once the call has ended, after this record: the job's own start counts.
        switched = switchover_s({"started_at": job.started_wall,
                                 "switched_over_at": job.result.get("switched_over_at")})
        if switched is not None:
            move["switchover_s"] = switched
        # What makes the move's time unfit to predict the next one from (_migration_model.not_representative).
        if self.policy.bandwidth_mib_s and not plan.offline:
            move["bandwidth_limit_mib_s"] = self.policy.bandwidth_mib_s
        if outcome == MIGRATED and faulted(job.result, job.escalator.steps):
            move["faulted"] = True
        if job.escalator.escalated and outcome == MIGRATED:
            # The policy that finally worked: the VM's next migration starts there (start_from_history).
            move.update(escalated=True, downtime_limit_ms=job.escalator.downtime_ms, postcopy=job.escalator.postcopy)
        data = with_move(plan.metadata, move, home_if_unset=home_if_unset)
        if self.home and outcome == MIGRATED:
            data["home"] = self.home
        try:
            write_domain_metadata(dom, data)
            job.result["history"] = {"home": data.get("home"), "moves": len(data.get("moves") or [])}
        except libvirt.libvirtError as exc:
            job.result["policy_steps"].append({"at_s": None, "iteration": None, "action": "note",
                                               "detail": "could not record the move in the VM's metadata: %s" % exc})
