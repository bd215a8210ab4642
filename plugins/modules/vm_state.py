#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_state
short_description: Shut down, suspend to disk or start VMs that a drain could not move
version_added: 0.1.0
description:
  - Parks a VM that has nowhere to go during a host's maintenance, by shutting it down (the guest is asked
    first, and powered off after O(shutdown_timeout) when O(force=true)) or by suspending it to disk (libvirt's
    managed save, restored on the next start), and starts it again afterwards.
  - Records how the VM was parked in its own metadata (C(parked)), so that the return finds it from any
    controller; starting the VM clears it. M(hvmaint.libvirt.hypervisor_info) reports it in C(metadata.parked).
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.connection
  - hvmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows each VM's state before and after.
  idempotent:
    support: full
options:
  names:
    description: The VMs, on the host of O(uri).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(shutdown) shuts the VMs down, V(suspended) saves their memory to disk and stops them, V(running) starts
        them (restoring a suspended VM where it left off).
    type: str
    choices: [shutdown, suspended, running]
    required: true
  shutdown_timeout:
    description: Seconds to wait for a guest to shut down by itself.
    type: int
    default: 300
  force:
    description: Power a VM off when its guest has not shut down within O(shutdown_timeout).
    type: bool
    default: true
seealso:
  - module: hvmaint.libvirt.evacuation_plan
"""

EXAMPLES = r"""
- name: Suspend the VMs the plan could not place
  hvmaint.libvirt.vm_state:
    names: "{{ plan.actions | selectattr('action', 'eq', 'suspend') | map(attribute='vm') | list }}"
    state: suspended

- name: Start them again after the maintenance
  hvmaint.libvirt.vm_state:
    names: [legacy1]
    state: running
"""

RETURN = r"""
vms:
  description: One entry per VM.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: legacy1, changed: true, before: running, after: suspended, action: saved to disk}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    Connection,
    HvmaintError,
    connection_argument_spec,
    fail_from,
    require_libvirt,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_state import find_domain, set_state


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            names=dict(type="list", elements="str", required=True),
            state=dict(type="str", choices=["shutdown", "suspended", "running"], required=True),
            shutdown_timeout=dict(type="int", default=300),
            force=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    require_libvirt(module)
    params = module.params
    results = []
    try:
        with Connection(params["uri"]) as conn:
            # Every name is looked up before any VM is touched: a typo changes nothing.
            domains = [find_domain(conn, name) for name in params["names"]]
            for dom in domains:
                results.append(set_state(dom, params["state"], params["shutdown_timeout"], params["force"],
                                         module.check_mode))
    except HvmaintError as exc:
        fail_from(module, exc, vms=results)
    result = dict(changed=any(r["changed"] for r in results), vms=results)
    if module._diff:
        result["diff"] = {"before": {r["name"]: r["before"] for r in results},
                          "after": {r["name"]: r["after"] for r in results}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
