# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: the capacity options that pre-flight and planning share.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  hosts:
    description:
      - Facts of every host to consider (the source and every candidate destination), the
        RV(hvmaint.libvirt.hypervisor_info#module:hypervisor) results of M(hvmaint.libvirt.hypervisor_info).
      - Default is the facts that the role P(hvmaint.libvirt.fleet_facts#role) read on the play's hosts, read by the
        action plugin on the controller (with O(host_overrides) from the inventory, when that is not given
        either), so no copy of the fleet passes through the task's arguments. Hosts whose facts could not be read
        are left out.
    type: list
    elements: dict
  cpu_matrix:
    description:
      - The RV(hvmaint.libvirt.cpu_compat#module:matrix) of M(hvmaint.libvirt.cpu_compat), a list of
        dictionaries with C(guest) (VM name), C(host), C(result), C(compatible), C(missing_features) and
        C(reasons).
      - C(compatible=false) is a blocker; C(result=error) (could not judge) and C(compatible=null) are warnings.
      - When omitted, CPUs are not compared and every pair carries the note C(cpu_not_checked).
    type: list
    elements: dict
  host_overrides:
    description:
      - Per host name, C(memory_mib) and/or C(vcpus) to plan with instead of the facts' C(memory_total_mib) and
        C(cpu.count), for example to keep part of a host free.
    type: dict
  memory_overcommit:
    description:
      - Memory a host may promise to VMs, as a multiple of its declared memory.
    type: float
    default: 1.0
  memory_reserve_mib:
    description:
      - Memory kept for the host itself, in MiB, subtracted from what VMs may use.
    type: int
    default: 1024
  vcpu_overcommit:
    description:
      - vCPUs a host may run, as a multiple of its logical CPUs.
    type: float
    default: 4.0
  bandwidth_mib_s:
    description:
      - Throughput of one migration in MiB/s, for the time estimates. Pass a measured figure when known.
    type: float
    default: 100
"""
