#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hypervisor_info
short_description: Report what a libvirt hypervisor is and what runs on it
version_added: 0.1.0
description:
  - Reads, from one libvirt host, the facts that pre-flight checks and the evacuation planner need
    (the shape is described in the collection's C(docs/facts.md)).
  - The host itself (hostname, host UUID, libvirt and QEMU versions), its CPU (arch, vendor, model, features,
    whether the virtualization extensions C(vmx) (Intel VT-x) or C(svm) (AMD-V) are present, the host-model CPU
    libvirt would give a guest), memory total and free, NUMA cells, networks, bridges, storage pools and
    whether it is marked under maintenance or held by a job (its lease, see M(hvmaint.libvirt.host_lease)).
  - Every VM with name, UUID, state, persistence, autostart, memory, vCPUs, CPU mode, model and features, disks
    (path, format, pool, on shared or host-local storage), NICs, host devices, and the collection's own metadata
    (home host, tier, group, recent moves).
  - Bridges, the maintenance mark, the lease and the file system of disks outside storage pools are read from the local
    machine, so they are only reported when the module runs on the hypervisor (the default O(uri)); over a
    remote URI, bridges come from libvirt's interface driver and RV(hypervisor.maintenance) is V(null).
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.connection
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
options:
  vms:
    description:
      - Report only these VMs (by name). Unknown names are an error.
      - By default every VM defined or running on the host is reported.
    type: list
    elements: str
  include_xml:
    description:
      - Also return each VM's full domain XML as C(xml) in each entry of RV(hypervisor.vms).
    type: bool
    default: false
seealso:
  - module: hvmaint.libvirt.cpu_compat
  - module: hvmaint.libvirt.evacuation_plan
"""

EXAMPLES = r"""
- name: Read the facts of every hypervisor
  hvmaint.libvirt.hypervisor_info:
  register: hv

- name: Show where the VMs are
  ansible.builtin.debug:
    msg: "{{ hv.hypervisor.name }} runs {{ hv.hypervisor.vms | selectattr('state', 'eq', 'running') | map(attribute='name') | list }}"

- name: Read a remote host from the controller over TLS
  hvmaint.libvirt.hypervisor_info:
    uri: qemu+tls://hv1.example.com/system
  delegate_to: localhost
"""

RETURN = r"""
hypervisor:
  description: The host's facts. Sizes are MiB (C(_mib)) or bytes (C(_bytes)); unknown facts are V(null).
  returned: success
  type: dict
  contains:
    name:
      description: The host's hostname.
      type: str
      sample: hv1
    host_uuid:
      description: libvirt's host UUID.
      type: str
      sample: 6f1e0c5a-3b1d-5c59-9f1e-0c5a3b1d5c59
    libvirt_version:
      description: Version of the libvirt daemon.
      type: str
      sample: 9.0.0
    hypervisor_version:
      description: Version of QEMU.
      type: str
      sample: 7.2.0
    cpu:
      description: The host CPU; its C(virtualization_extension) is V(vmx), V(svm) or V(null).
      type: dict
      sample: {vendor: AMD, model: EPYC-Rome, virtualization_extension: svm, count: 64}
    memory_total_mib:
      description: Memory of the host.
      type: int
      sample: 257000
    memory_free_mib:
      description: Memory not in use on the host.
      type: int
      sample: 120000
    numa_cells:
      description: NUMA cells with their memory and CPUs.
      type: list
      elements: dict
    networks:
      description: libvirt networks.
      type: list
      elements: dict
      sample: [{name: lan, active: true, autostart: true, bridge: br0, forward_mode: bridge}]
    bridges:
      description: Linux bridges on the host (V(null) when they cannot be read).
      type: list
      elements: str
      sample: [br0]
    storage_pools:
      description: Storage pools, with whether each is shared between hosts.
      type: list
      elements: dict
    maintenance:
      description: The maintenance mark (since, reason, by) or V(null).
      type: dict
    lease:
      description:
        - The lease of the job that holds the host (job, by, operation, subject, role, since, heartbeat, expires), or
          V(null) when none does (or when the module does not run on the host itself).
      type: dict
    vms:
      description: Every VM, see the collection's C(docs/facts.md) for each key.
      type: list
      elements: dict
      sample:
        - name: web1
          uuid: 8c1f5a7e-4b0e-4f2e-9f57-2d3c1b0a9e8d
          state: running
          persistent: true
          memory_mib: 2048
          vcpus: 2
          cpu: {mode: host-model, model: null, features: []}
          disks: [{target: vda, path: /var/lib/libvirt/images/web1.qcow2, format: qcow2, shared: false}]
          nics: [{type: network, network: lan, mac: "52:54:00:12:34:56"}]
          hostdevs: []
          metadata: {home: hv1, moves: []}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import gather
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    Connection,
    HvmaintError,
    connection_argument_spec,
    fail_from,
    require_libvirt,
    unknown_vms,
)


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            vms=dict(type="list", elements="str"),
            include_xml=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    require_libvirt(module)
    wanted = module.params["vms"]
    try:
        # Read-write, although nothing is changed: libvirt forbids domain capabilities to read-only clients.
        with Connection(module.params["uri"]) as conn:
            facts = gather(conn, include_xml=module.params["include_xml"], names=set(wanted) if wanted else None)
    except HvmaintError as exc:
        fail_from(module, exc)
    if wanted:
        missing = sorted(set(wanted) - {vm["name"] for vm in facts["vms"]})
        if missing:
            module.fail_json(msg=str(unknown_vms(missing, facts["name"], [vm["name"] for vm in facts["vms"]])))
    module.exit_json(changed=False, hypervisor=facts)


if __name__ == "__main__":
    main()
