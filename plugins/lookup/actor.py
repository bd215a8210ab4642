# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: actor
short_description: Who runs this play, for the maintenance mark, the audit ledger and leases
version_added: 0.1.0
description:
  - Returns the AWX or Automation Controller user and job id when the job provides them as extra variables
    (C(awx_user_name), C(awx_job_id), or the older C(tower_user_name), C(tower_job_id)).
  - Otherwise returns the controller's user (C(SUDO_USER), C(USER) or C(LOGNAME), in that order) and no job.
  - The collection's roles pass it to M(hvmaint.libvirt.maintenance_mode) and M(hvmaint.libvirt.audit_ledger), so
    the mark and the ledger name the person behind the job, not the remote user the modules run as.
author: hvmaint.libvirt maintainers (@hvmaint)
options: {}
seealso:
  - module: hvmaint.libvirt.maintenance_mode
  - module: hvmaint.libvirt.audit_ledger
"""

EXAMPLES = r"""
- name: Mark a host in the name of whoever runs the job
  hvmaint.libvirt.maintenance_mode:
    reason: firmware update
    by: "{{ hvmaint_actor.user }}"
    job: "{{ hvmaint_actor.job }}"
  vars:
    hvmaint_actor: "{{ query('hvmaint.libvirt.actor') | first }}"
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    user:
      description: The AWX user, or the controller's user outside AWX.
      type: str
      sample: alice
    job:
      description: The AWX job id, or V(null) outside AWX.
      type: str
      sample: "4711"
    via:
      description: V(awx) when the job's variables named the user or job, else V(controller).
      type: str
      sample: awx
"""

from ansible.plugins.lookup import LookupBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._actor import actor


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        return [actor(variables)]
