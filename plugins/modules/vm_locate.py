#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_locate
short_description: Tell where each VM runs, where its home is and where it has been
version_added: 0.1.0
description:
  - From the facts of every hypervisor (M(hvmaint.libvirt.hypervisor_info)), finds each VM by UUID, with the host it
    runs on, the hosts it is defined on, its home host and recent moves from its own metadata, and, when an
    audit ledger is given, every move the ledger recorded for it.
  - Flags what must never be, a VM running on two hosts, defined on two hosts, or running with no persistent
    definition anywhere.
  - Pure computation on the controller; it makes no libvirt call.
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
options:
  hosts:
    description:
      - The RV(hvmaint.libvirt.hypervisor_info#module:hypervisor) facts of every hypervisor to look at.
      - Default is the facts that the role P(hvmaint.libvirt.fleet_facts#role) read on the play's hosts, read by the
        action plugin on the controller.
    type: list
    elements: dict
  names:
    description:
      - Only these VMs. A name found on no host is listed in RV(not_found) and fails the task when
        O(fail_on_missing=true).
    type: list
    elements: str
  fail_on_missing:
    description: Fail when a VM of O(names) is on no host.
    type: bool
    default: true
  ledger:
    description: An audit ledger (M(hvmaint.libvirt.audit_ledger)) to add each VM's recorded moves from.
    type: path
seealso:
  - module: hvmaint.libvirt.hypervisor_info
  - module: hvmaint.libvirt.audit_ledger
"""

EXAMPLES = r"""
- name: Read every hypervisor
  hvmaint.libvirt.hypervisor_info:
  register: info

- name: Where is everything
  hvmaint.libvirt.vm_locate:
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, ['info', 'hypervisor']) | list }}"
    ledger: /var/log/hvmaint/ledger.jsonl
  delegate_to: localhost
  run_once: true
  register: where
"""

RETURN = r"""
vms:
  description: One entry per VM.
  returned: always
  type: list
  elements: dict
  sample:
    - name: db1
      uuid: 2b9a6f0e-0d43-4c5e-8d0f-6a1b2c3d4e5f
      host: hv2
      running_on: [hv2]
      defined_on: [hv2]
      home: hv1
      at_home: false
      tier: critical
      moves: [{at: "2026-11-25T12:00:00Z", from: hv1, to: hv2, outcome: migrated}]
      problems: []
not_found:
  description: Names from O(names) that are on no host.
  returned: always
  type: list
  elements: str
summary_lines:
  description: A table for people, one line per VM.
  returned: always
  type: list
  elements: str
host_lines:
  description: One line per host of O(hosts), for people, such as C(hv1 - in service - 7 running VMs).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._ledger import read_entries
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._locate import host_lines, locate, summary_lines


def argument_spec():
    return dict(
        hosts=dict(type="list", elements="dict"),
        names=dict(type="list", elements="str"),
        fail_on_missing=dict(type="bool", default=True),
        ledger=dict(type="path"),
    )


def find(params, warn=None):  # pylint: disable=unused-argument
    """The module's result for validated `params` (with C(failed) and C(msg) when a name is on no host); raises
    HvmaintError. The action plugin calls it too."""
    bad = [i for i, host in enumerate(params["hosts"] or ()) if "name" not in host or "vms" not in host]
    if bad:
        raise HvmaintError("hosts[%s] are not hypervisor_info facts (they need name and vms)"
                           % ", ".join(map(str, bad)))
    try:
        ledger = read_entries(params["ledger"]) if params["ledger"] else None
    except (OSError, ValueError) as exc:
        raise HvmaintError("cannot read the audit ledger %s: %s" % (params["ledger"], exc)) from exc
    vms, not_found = locate(params["hosts"] or [], params["names"], ledger)
    result = dict(vms=vms, not_found=not_found, summary_lines=summary_lines(vms),
                  host_lines=host_lines(params["hosts"] or []))
    if not_found and params["fail_on_missing"]:
        result.update(failed=True, msg="no host has a VM named %s" % ", ".join(not_found))
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = find(module.params)
    except HvmaintError as e:
        module.fail_json(msg=str(e))
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
