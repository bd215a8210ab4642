#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maintenance_mode
short_description: Mark a hypervisor as under maintenance, or clear the mark
version_added: 0.1.0
description:
  - Keeps a maintenance mark on the hypervisor itself (a small JSON file beside libvirt's state), saying since
    when, why and by whom, so that every job and every controller that looks at the host sees it.
  - M(hvmaint.libvirt.hypervisor_info) reports the mark, and M(hvmaint.libvirt.evacuation_plan) never chooses a
    host under maintenance as a destination.
  - The module must run on the hypervisor (it does not use libvirt).
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the mark before and after.
  idempotent:
    support: full
    details: Marking a marked host keeps its original C(since); clearing a clear host changes nothing.
options:
  state:
    description:
      - V(present) marks the host under maintenance, V(absent) clears the mark.
    type: str
    choices: [present, absent]
    default: present
  reason:
    description:
      - Why the host is under maintenance. Changing the reason of a marked host updates it and keeps C(since).
    type: str
    default: maintenance
  by:
    description:
      - Who marked the host. Defaults to the user the module runs as on the host (often C(root)).
      - The roles pass the AWX user, or the controller's user, from the P(hvmaint.libvirt.actor#lookup) lookup.
    type: str
  job:
    description:
      - The AWX job that marked the host, kept in the mark as C(job) when given.
    type: str
    version_added: 0.1.0
  path:
    description:
      - Where the mark is kept on the host.
      - A file there that is not a maintenance mark (not a JSON object with C(since) and C(reason)) is never
        removed or overwritten; the module fails and leaves it as it is.
    type: path
    default: /var/lib/libvirt/hvmaint/maintenance.json
seealso:
  - module: hvmaint.libvirt.hypervisor_info
  - module: hvmaint.libvirt.evacuation_plan
"""

EXAMPLES = r"""
- name: Mark the host before draining it
  hvmaint.libvirt.maintenance_mode:
    reason: firmware update CHG-1234
    by: "{{ (query('hvmaint.libvirt.actor') | first).user }}"

- name: Clear the mark after maintenance
  hvmaint.libvirt.maintenance_mode:
    state: absent
"""

RETURN = r"""
maintenance:
  description: The mark now on the host, or V(null) when it is not under maintenance.
  returned: always
  type: dict
  sample: {since: "2026-11-25T12:00:00Z", reason: firmware update, by: alice, job: "4711", host: hv1}
previous:
  description: The mark before the module ran, or V(null).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import (
    DEFAULT_MARK_PATH,
    NotAMarkError,
    apply_mark,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            reason=dict(type="str", default="maintenance"),
            by=dict(type="str"),
            job=dict(type="str"),
            path=dict(type="path", default=DEFAULT_MARK_PATH),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = apply_mark(params["state"], params["reason"], params["by"], params["path"],
                            check_mode=module.check_mode, job=params["job"])
    except NotAMarkError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="cannot change the maintenance mark at %s: %s" % (params["path"], exc))
    if module._diff:
        result["diff"] = {"before": {"maintenance": result["previous"]}, "after": {"maintenance": result["maintenance"]}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
