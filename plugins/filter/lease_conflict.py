# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter hvmaint.libvirt.lease_conflict (documented in lease_conflict.yml); the rule is _lease.conflict, the
same that host_lease applies on the host."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import conflict


def lease_conflict(lease, jobs=None):
    if isinstance(jobs, str):
        jobs = [jobs]
    if jobs is not None and not isinstance(jobs, (list, tuple)):
        raise AnsibleFilterError("lease_conflict: jobs must be a list of job ids, not %r" % (jobs,))
    if lease is not None and not isinstance(lease, dict):
        raise AnsibleFilterError("lease_conflict: the lease must be a dict (hypervisor_info's lease) or none")
    return conflict(lease, [str(j) for j in (jobs or []) if j]) or ""


class FilterModule:
    def filters(self):
        return {"lease_conflict": lease_conflict}
