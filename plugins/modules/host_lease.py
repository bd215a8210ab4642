#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_lease
short_description: Take, renew or release a hypervisor for one job (fleet-wide coordination)
version_added: 0.1.0
description:
  - Keeps a lease on the hypervisor itself (a small JSON file beside libvirt's state, like the maintenance mark
    of M(hvmaint.libvirt.maintenance_mode)) naming the job that is emptying or filling the host, who runs it,
    since when, and until when the lease holds without a heartbeat. Every controller and every AWX container
    that looks at the host sees it.
  - One job holds a host at a time. Taking a host that another job holds fails with a message naming that job
    (its id, user, operation and since when), and changes nothing. Taking a host again with the same O(job)
    renews the lease (the heartbeat); a lease whose holder stopped renewing it lapses after O(ttl) seconds, so a
    killed controller does not block the host for ever.
  - The roles M(hvmaint.libvirt.drain_host) and M(hvmaint.libvirt.return_host) take the drained or home host
    and every host VMs move to or from before their first change, renew the leases before every wave, and
    release them at the end, also when they fail.
  - The module must run on the hypervisor. It uses libvirt only for O(read_facts).
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.connection
  - hvmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    details: Reports a conflict as a real run would, and writes nothing.
  diff_mode:
    support: full
    details: Shows the lease before and after.
  idempotent:
    support: partial
    details: Releasing is idempotent. Taking a lease the job already holds renews it (a new heartbeat), a change.
options:
  state:
    description:
      - V(present) takes the host for O(job) or renews its lease; V(absent) releases it.
      - Releasing never touches a lease that another job holds.
    type: str
    choices: [present, absent]
    default: present
  job:
    description:
      - The id of the job that holds the lease, unique per run (the AWX job id, or a random id for a run from a
        command line). Two runs with the same id are the same holder.
    type: str
    required: true
  by:
    description:
      - Who runs the job (the AWX user, or the login name).
    type: str
  controller:
    description:
      - Where the job runs (the controller or AWX container), for the message another job sees.
    type: str
  operation:
    description:
      - What the job does, for the message another job sees (V(drain), V(return), ...).
    type: str
    default: maintenance
  subject:
    description:
      - The host the operation is about (the host being drained or returned), for the message another job sees.
    type: str
  role:
    description:
      - V(source) when the job empties this host, V(destination) when it fills it.
    type: str
    choices: [source, destination]
    default: source
  refuse_marked:
    description:
      - Refuse to take or renew the lease when the host is under maintenance (it may not receive VMs). A job
        renews its leases before each move, so a destination marked meanwhile stops it there.
    type: bool
    default: false
  ttl:
    description:
      - Seconds the lease holds after each heartbeat. At least 10.
    type: int
    default: 3600
  break_job:
    description:
      - Take the host even though this job id holds it, to recover after that job's controller was killed.
        Only the named job's lease is broken, so a lease taken meanwhile by another job is still respected.
    type: str
  path:
    description:
      - Where the lease is kept on the host.
    type: path
    default: /var/lib/libvirt/hvmaint/lease.json
  mark_path:
    description:
      - Where the maintenance mark is kept on the host (for O(refuse_marked)).
    type: path
    default: /var/lib/libvirt/hvmaint/maintenance.json
  read_facts:
    description:
      - With O(state=absent), first read the host's facts, as M(hvmaint.libvirt.hypervisor_info) does, and return
        them as RV(hypervisor), with the lease as it is after the release. The job's last look at the host is taken
        while it still holds it, in the same module run as the release. The roles verify the drained host and
        write their report from it, one module run fewer per host.
      - The lease is released even when the facts cannot be read; RV(facts_error) then says why.
    type: bool
    default: false
seealso:
  - module: hvmaint.libvirt.maintenance_mode
"""

EXAMPLES = r"""
- name: Take the host before draining it
  hvmaint.libvirt.host_lease:
    job: "{{ awx_job_id | default('manual-1') }}"
    by: "{{ awx_user_name | default(lookup('env', 'USER')) }}"
    operation: drain
    subject: kvm01
    role: source

- name: Release it at the end
  hvmaint.libvirt.host_lease:
    job: "{{ awx_job_id | default('manual-1') }}"
    state: absent
"""

RETURN = r"""
lease:
  description: The lease now on the host, or V(null) when no job holds it.
  returned: always
  type: dict
  sample:
    job: "4711"
    by: alice
    operation: drain
    subject: hv1
    role: destination
    since: "2026-12-01T22:00:00Z"
    heartbeat: "2026-12-01T22:05:00Z"
    expires: "2026-12-01T23:05:00Z"
    ttl: 3600
    controller: awx-task-1
previous:
  description: The lease before the module ran, or V(null).
  returned: always
  type: dict
holder:
  description: On a refusal, the lease of the job that holds the host.
  returned: failed
  type: dict
hypervisor:
  description: The host's facts (the shape of M(hvmaint.libvirt.hypervisor_info)'s RV(hypervisor)), read just before the release.
  returned: with O(read_facts), when they could be read
  type: dict
facts_error:
  description: Why the facts could not be read (the lease was released all the same).
  returned: with O(read_facts), when they could not be read
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import gather
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    CONNECTION_ARGUMENT_SPEC,
    Connection,
    HvmaintError,
    libvirt,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import (
    DEFAULT_LEASE_PATH,
    DEFAULT_LEASE_TTL,
    LEASE_ROLES,
    LeaseConflict,
    acquire,
    release,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import DEFAULT_MARK_PATH


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGUMENT_SPEC,
            state=dict(type="str", choices=["present", "absent"], default="present"),
            job=dict(type="str", required=True),
            by=dict(type="str"),
            controller=dict(type="str"),
            operation=dict(type="str", default="maintenance"),
            subject=dict(type="str"),
            role=dict(type="str", choices=list(LEASE_ROLES), default="source"),
            refuse_marked=dict(type="bool", default=False),
            ttl=dict(type="int", default=DEFAULT_LEASE_TTL),
            break_job=dict(type="str"),
            path=dict(type="path", default=DEFAULT_LEASE_PATH),
            mark_path=dict(type="path", default=DEFAULT_MARK_PATH),
            read_facts=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    facts = facts_error = None
    try:
        if params["state"] == "absent":
            # Read before the release: what the job leaves is seen while no other job can have started on it.
            if params["read_facts"]:
                facts, facts_error = _read_facts(params["uri"])
            result = release(params["job"], params["path"], check_mode=module.check_mode)
        else:
            result = acquire(params["job"], params["by"], params["operation"], params["subject"], params["role"],
                             ttl=params["ttl"], path=params["path"], refuse_marked=params["refuse_marked"],
                             mark_path=params["mark_path"], break_job=params["break_job"],
                             check_mode=module.check_mode, controller=params["controller"])
    except LeaseConflict as exc:
        module.fail_json(msg="%s: nothing was changed" % exc, holder=exc.holder)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot change the lease at %s: %s" % (params["path"], exc))
    if facts is not None:
        facts["lease"] = result["lease"]
        result["hypervisor"] = facts
    if facts_error is not None:
        result["facts_error"] = facts_error
    if result.pop("broken", None):
        module.warn("broke the lease of job %s as break_job asked" % params["break_job"])
    if module._diff:
        result["diff"] = {"before": {"lease": result["previous"]}, "after": {"lease": result["lease"]}}
    module.exit_json(**result)


def _read_facts(uri):
    """(facts, None), or (None, why they could not be read): the release goes ahead either way."""
    if libvirt is None:
        return None, "libvirt-python is not installed on the host"
    try:
        with Connection(uri) as conn:
            return gather(conn), None
    except (HvmaintError, libvirt.libvirtError) as exc:
        return None, str(exc)


if __name__ == "__main__":
    main()
