#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_load
short_description: Measure what the VMs of a libvirt hypervisor really use, over a sampling window
version_added: 0.2.0
description:
  - Samples libvirt's domain statistics twice, O(window_s) seconds apart, and returns each running VM's CPU use
    over the window (the difference of its CPU time, as cores busy and as a fraction of its vCPUs) and its
    memory in use, with the host's size and the host's own CPU time over the same window.
  - Memory in use is what the guest reports through its balloon driver (available minus unused) when it does,
    else what the VM's QEMU process holds (RSS), else its allocation; RV(load.vms) (C(memory_source)) says which.
  - A separate module rather than an option of M(hvmaint.libvirt.hypervisor_info) because a measurement takes
    a window (it waits) while facts are a snapshot that every drain reads; the shape is described in the
    collection's C(docs/load.md).
  - Only running VMs are measured; a VM that starts, stops or migrates during the window has no CPU figure.
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.connection
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
options:
  window_s:
    description:
      - Seconds between the two samples, 1 to 300. Longer windows smooth out bursts.
    type: float
    default: 5
seealso:
  - module: hvmaint.libvirt.hypervisor_info
  - module: hvmaint.libvirt.rebalance_plan
"""

EXAMPLES = r"""
- name: Measure each hypervisor's load over 10 seconds
  hvmaint.libvirt.host_load:
    window_s: 10
  register: load

- name: Show the busiest VMs
  ansible.builtin.debug:
    msg: "{{ load.load.vms | sort(attribute='cpu_cores', reverse=true) | map(attribute='name') | list }}"
"""

RETURN = r"""
load:
  description: The host's measured load (the collection's C(docs/load.md) describes every key).
  returned: success
  type: dict
  contains:
    name:
      description: The host's hostname, as in M(hvmaint.libvirt.hypervisor_info).
      type: str
      sample: hv1
    window_s:
      description: Seconds between the two samples, as measured.
      type: float
      sample: 5.002
    cpu_count:
      description: Logical CPUs of the host, as libvirt reports them.
      type: int
      sample: 64
    memory_total_mib:
      description: Memory of the host.
      type: int
      sample: 257000
    host_cpu_busy_fraction:
      description: Share of the host's CPU time spent in user and kernel mode over the window (all processes).
      type: float
      sample: 0.31
    vms_cpu_cores:
      description: Sum of RV(load.vms) (C(cpu_cores)).
      type: float
      sample: 3.2
    vms_memory_used_mib:
      description: Sum of RV(load.vms) (C(memory_used_mib)).
      type: float
      sample: 40960.0
    vms:
      description: Each running VM, by name.
      type: list
      elements: dict
      sample:
        - {name: work1, uuid: 8c1f5a7e-4b0e-4f2e-9f57-2d3c1b0a9e8d, vcpus: 1, cpu_seconds: 4.51, cpu_cores: 0.902,
           cpu_fraction: 0.902, memory_used_mib: 301.2, memory_source: rss, memory_current_mib: 256.0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._host_load import DEFAULT_WINDOW_S, check_window, measure
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    Connection,
    HvmaintError,
    connection_argument_spec,
    fail_from,
    libvirt,
    require_libvirt,
)


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(window_s=dict(type="float", default=DEFAULT_WINDOW_S)),
        supports_check_mode=True,
    )
    require_libvirt(module)
    try:
        window = check_window(module.params["window_s"])
        with Connection(module.params["uri"], read_only=True) as conn:
            load = measure(conn, libvirt, window)
    except HvmaintError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, load=load)


if __name__ == "__main__":
    main()
