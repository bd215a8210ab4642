#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_readiness
short_description: Tell, before a drain, what would stop each VM from moving to each other host
version_added: 0.1.0
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
  - hvmaint.libvirt.capacity
description:
  - For every VM on the O(source) host and every candidate destination, lists the blockers that would make a
    live migration fail or harm the VM, and the warnings worth reading first, each with a code and a sentence
    saying what to do.
  - Checks CPU compatibility (from O(cpu_matrix)), memory and vCPU room, libvirt networks and bridges, storage
    reachability and storage pools, passthrough devices, machine types, KVM support, libvirt and QEMU versions,
    and the VM's state.
  - Works only on hypervisor facts (the C(hypervisor) results of M(hvmaint.libvirt.hypervisor_info)); it talks
    to no host, so run it on the controller (C(delegate_to=localhost), C(run_once=true)).
  - Each pair is judged alone, as if that VM were the only one moving. M(hvmaint.libvirt.evacuation_plan)
    accounts for VMs moving together.
options:
  source:
    description:
      - Name of the host to be drained. It must be one of O(hosts).
    type: str
    required: true
  vms:
    description:
      - Only check these VMs (names on O(source)). An unknown name fails the task, listing the VMs there.
      - Default is every VM on O(source).
    type: list
    elements: str
  destinations:
    description:
      - Only consider these hosts as destinations. An unknown name fails the task.
      - Default is every other host in O(hosts).
      - The source itself and hosts under maintenance are never candidates; they are listed in
        RV(excluded_destinations).
    type: list
    elements: str
notes:
  - The memory a destination can give is O(memory_overcommit) times its declared memory, minus
    O(memory_reserve_mib), minus the memory of the VMs it runs (states running, blocked, paused, pmsuspended,
    crashed and shutdown, which all keep their memory).
  - A host-local disk (C(shared=false)) is not a blocker but must be copied during migration; libvirt then creates
    the copy only inside a storage pool whose path is the disk's directory, so a destination without such a
    pool is blocked. For a shut-off VM a host-local disk is a blocker, as an offline migration copies nothing.
  - Shut-off VMs move offline (only the definition); memory and vCPUs are not checked for them.
  - RV(pairs[].estimated_seconds) is a lower bound, one pass over memory and copied disks at O(bandwidth_mib_s).
seealso:
  - module: hvmaint.libvirt.hypervisor_info
  - module: hvmaint.libvirt.evacuation_plan
"""

EXAMPLES = r"""
- name: Gather facts of every hypervisor
  hvmaint.libvirt.hypervisor_info:
    uri: "qemu+tls://{{ inventory_hostname }}/system"
  register: hv

- name: Check what would stop the VMs of hv1 from moving
  hvmaint.libvirt.migration_readiness:
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, ['hv', 'hypervisor']) | list }}"
    source: hv1
    memory_reserve_mib: 2048
  delegate_to: localhost
  run_once: true
  register: readiness

- name: Show the summary
  ansible.builtin.debug:
    var: readiness.summary_lines
  run_once: true

- name: Stop when some VM has nowhere to go
  ansible.builtin.assert:
    that: readiness.ready
    fail_msg: "{{ readiness.vm_summaries | selectattr('verdict', 'eq', 'blocked') | map(attribute='vm') | list }}"
  run_once: true
"""

RETURN = r"""
ready:
  description: V(true) when every checked VM can move to at least one destination (live, or offline when shut off).
  returned: success
  type: bool
pairs:
  description: One entry per VM and candidate destination.
  returned: success
  type: list
  elements: dict
  contains:
    vm:
      description: VM name.
      type: str
    uuid:
      description: VM UUID.
      type: str
    source:
      description: The host the VM is on.
      type: str
    destination:
      description: The candidate destination.
      type: str
    state:
      description: The VM's state from the facts.
      type: str
    mode:
      description: V(live), V(offline) (shut off, only the definition moves) or V(null) (the state cannot move).
      type: str
    migratable:
      description: V(true) when there is no blocker.
      type: bool
    blockers:
      description: What makes the move fail or harm the VM, as C(code) and C(reason).
      type: list
      elements: dict
      sample: [{"code": "bridge", "reason": "NIC 52:54:00:00:80:01 of web1 is on bridge br-app, which hv3 does not
                have: create the bridge there"}]
    warnings:
      description: >-
        What to read before moving (C(storage_copy), C(paused), C(qemu_older), C(libvirt_older), C(storage_unknown),
        C(cpu_unknown), ...), as C(code) and C(reason).
      type: list
      elements: dict
    notes:
      description: Information, such as C(cpu_not_checked) and C(offline).
      type: list
      elements: dict
    estimated_seconds:
      description: Lower bound of the move's duration (0 for an offline move).
      type: int
vm_summaries:
  description: One entry per VM.
  returned: success
  type: list
  elements: dict
  contains:
    vm:
      description: VM name.
      type: str
    uuid:
      description: VM UUID.
      type: str
    source:
      description: The host the VM is on.
      type: str
    state:
      description: The VM's state.
      type: str
    memory_mib:
      description: The VM's memory.
      type: int
    vcpus:
      description: The VM's vCPUs.
      type: int
    candidates:
      description: Destinations without blockers, by name.
      type: list
      elements: str
    verdict:
      description: V(ok) (can move live), V(offline) (shut off, can move offline) or V(blocked) (no candidate).
      type: str
    blocked_by:
      description: Blocker code to the destinations it blocks.
      type: dict
    vm_blockers:
      description: Blockers of the VM itself (state, passthrough devices), true on every destination.
      type: list
      elements: dict
excluded_destinations:
  description: Hosts that are not candidates (the source, hosts under maintenance) and why.
  returned: success
  type: list
  elements: dict
summary_lines:
  description: A plain-text table (VM, state, mem, candidates, blockers) for C(ansible.builtin.debug).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._argspec import CAPACITY_ARGUMENT_SPEC
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, fail_from
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness_report import assess


def argument_spec():
    return dict(
        **CAPACITY_ARGUMENT_SPEC,
        source=dict(type="str", required=True),
        vms=dict(type="list", elements="str"),
        destinations=dict(type="list", elements="str"),
    )


def readiness(params, warn=None):  # pylint: disable=unused-argument
    """The module's result for validated `params`; raises HvmaintError. The action plugin calls it too."""
    if params["hosts"] is None:
        raise HvmaintError("no hosts: give hosts, or read them with the role hvmaint.libvirt.fleet_facts first")
    return assess(**params)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = readiness(module.params)
    except HvmaintError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
