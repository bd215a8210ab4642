#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cpu_compat
short_description: Tell which guest CPUs can run on which hosts, before migrating anything
version_added: 0.1.0
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
description:
  - Compares the CPU of every guest with the CPU of every destination host and returns a verdict per pair,
    V(identical), V(superset), V(incompatible) or V(error), with the missing features and reasons a person can
    act on.
  - Works offline, from XML alone, through libvirt's CPU map (the files behind C(/usr/share/libvirt/cpu_map));
    named models are expanded to their features, including QEMU's versioned C(-vN) models of newer libvirt.
    A fleet-wide matrix costs no libvirt call per pair and works where no destination is reachable.
  - Understands vendors (Intel, AMD, Hygon), C(match) modes (C(minimum), C(exact), C(strict)), feature
    policies (C(require), C(optional), C(disable), C(forbid), C(force)), C(host-model), C(host-passthrough)
    (only an identical host CPU will do) and the virtualization extensions C(vmx) (Intel VT-x) and C(svm)
    (AMD-V) exposed to nested guests.
  - Where a destination is reachable (O(live_hosts)), also asks its libvirt (C(compareHypervisorCPU)) and
    reports both verdicts; a disagreement is shown, not hidden.
  - Can compute a baseline, the most capable CPU definition every host can run (what vSphere calls EVC).
  - A CPU model or feature that the CPU map does not know is an V(error) that names it, never a guess.
options:
  guests:
    description:
      - Guests to check, each a domain XML (C(virsh dumpxml)) or just its C(<cpu>) element.
      - For a running guest give its live XML, which shows the CPU it actually got.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the guest, used in the results. Names must be unique.
        type: str
        required: true
      xml:
        description: Domain XML or a C(<cpu>) element.
        type: str
        required: true
      cpu_map_dir:
        description:
          - CPU map of the libvirt that produced O(guests[].xml), when it differs from O(cpu_map_dir).
        type: path
      domain_type:
        description:
          - V(kvm) or V(qemu) (TCG), for a bare C(<cpu>) element; a domain XML says it itself.
          - A TCG guest's CPU is emulated, so any host runs it.
        type: str
        choices: [kvm, qemu]
      source_host:
        description: Name of the host the guest runs on now, for the messages.
        type: str
      source_host_xml:
        description:
          - Capabilities (C(virsh capabilities)) of the host the guest runs on now.
          - Needed to judge C(host-passthrough) guests, which need a host CPU identical to that one.
        type: str
  hosts:
    description:
      - Destination hosts, each given by its CPU.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the host, used in the results. Names must be unique.
        type: str
        required: true
      xml:
        description:
          - Host capabilities (C(virsh capabilities)) or their C(<cpu>) element, which say what the CPU has.
          - Or domain capabilities (C(virsh domcapabilities)), their C(<mode name='host-model'>) element or
            the equivalent C(<cpu mode='custom'>), which say what QEMU can give a guest there.
        type: str
        required: true
      cpu_map_dir:
        description:
          - CPU map of that host's libvirt, when it differs from O(cpu_map_dir).
        type: path
  hypervisors:
    description:
      - Facts of hosts, the RV(hvmaint.libvirt.hypervisor_info#module:hypervisor) results of
        M(hvmaint.libvirt.hypervisor_info).
      - Each becomes a destination (its capabilities CPU) and each of its VMs a guest whose source is that host.
    type: list
    elements: dict
    default: []
  cpu_map_dir:
    description:
      - libvirt's CPU map directory on the host that runs the module (it needs C(index.xml)).
      - Resolve each CPU through the map of the libvirt that produced it; mixing libvirt versions needs
        O(guests[].cpu_map_dir) or O(hosts[].cpu_map_dir). libvirt 9.0's map has no C(-vN) models, for example.
    type: path
    default: /usr/share/libvirt/cpu_map
  live_hosts:
    description:
      - Destinations to read over libvirt. Their host CPU comes from their capabilities, and their libvirt is
        asked about every guest too (C(compareHypervisorCPU)), which fills RV(matrix[].libvirt_result).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the host, used in the results.
        type: str
        required: true
      uri:
        description: libvirt URI of the host, for example V(qemu+tls://hv2.example.com/system).
        type: str
        required: true
      cpu_map_dir:
        description: CPU map of that host's libvirt, when it differs from O(cpu_map_dir).
        type: path
  live_guests:
    description:
      - Guests to read over libvirt (their live XML), with the host they run on as their source.
    type: list
    elements: dict
    default: []
    suboptions:
      uri:
        description: libvirt URI of the host the guests run on.
        type: str
        required: true
      names:
        description: Only these VMs. Default is every VM defined there.
        type: list
        elements: str
      cpu_map_dir:
        description: CPU map of that host's libvirt, when it differs from O(cpu_map_dir).
        type: path
  baseline:
    description:
      - Also compute RV(baseline), the most capable CPU every host can run.
      - With O(live_hosts), the first of them is also asked (C(baselineHypervisorCPU)).
    type: bool
    default: false
requirements:
  - libvirt-python on the host that runs the module, for O(live_hosts) and O(live_guests) only.
notes:
  - The verdicts follow libvirt's CPU comparison. The guest needs its model's features and its C(require)
    features; C(disable), C(forbid), C(optional) and C(force) features are not needed from the host. A host with
    more features than the guest lists is V(superset) and fine, except with C(match=strict), which libvirt
    treats as V(incompatible).
  - A named model's vendor counts as a requirement, as does C(vmx) (Intel) or C(svm) (AMD, Hygon); live
    migration across vendors is not supported.
  - Guests with C(host-model) and no resolved model in their XML are V(identical); libvirt computes their CPU
    from the destination when they start. A running guest keeps the CPU it started with, so give its live XML.
  - C(host-passthrough) and C(maximum) guests need the capabilities of their source host
    (O(guests[].source_host_xml), O(live_guests) or O(hypervisors)); without it their verdict is V(error).
  - Host capabilities list features KVM may not give guests; libvirt's C(compareHypervisorCPU) compares with what
    QEMU can give. Disagreements between the two are shown in RV(matrix[].reasons).
  - Runs locally; for many guests and hosts run it once on the controller (C(delegate_to=localhost),
    C(run_once=true)) with the CPU maps of the fleet's libvirt versions there.
seealso:
  - module: hvmaint.libvirt.hypervisor_info
  - module: hvmaint.libvirt.migration_readiness
  - name: libvirt domain XML, CPU model and topology
    description: The meaning of mode, match and feature policies.
    link: https://libvirt.org/formatdomain.html#cpu-model-and-topology
"""

EXAMPLES = r"""
- name: Gather facts of every hypervisor
  hvmaint.libvirt.hypervisor_info:
  register: hv

- name: Check every VM against every hypervisor, offline
  hvmaint.libvirt.cpu_compat:
    hypervisors: "{{ ansible_play_hosts | map('extract', hostvars, ['hv', 'hypervisor']) | list }}"
  delegate_to: localhost
  run_once: true
  register: cpu

- name: Stop when some VM fits no host
  ansible.builtin.assert:
    that: cpu.summary.guests_without_host | length == 0
    fail_msg: "No host can run the CPU of {{ cpu.summary.guests_without_host | join(', ') }}"
  run_once: true

- name: Compare recorded XML, resolving each side through its own libvirt's CPU map
  hvmaint.libvirt.cpu_compat:
    guests:
      - name: db1
        xml: "{{ lookup('ansible.builtin.file', 'xml/db1.xml') }}"
        cpu_map_dir: /srv/cpu_maps/libvirt-11.3
    hosts:
      - name: hv3
        xml: "{{ lookup('ansible.builtin.file', 'xml/hv3-capabilities.xml') }}"
    cpu_map_dir: /srv/cpu_maps/libvirt-9.0
  delegate_to: localhost

- name: Read the VMs of hv1 and ask hv2's libvirt as well
  hvmaint.libvirt.cpu_compat:
    live_guests:
      - uri: qemu+tls://hv1.example.com/system
    live_hosts:
      - name: hv2
        uri: qemu+tls://hv2.example.com/system
  delegate_to: localhost
  register: live

- name: Show the pairs where libvirt and the offline check disagree
  ansible.builtin.debug:
    msg: "{{ live.matrix | selectattr('disagreement', 'defined') | selectattr('disagreement') | list }}"

- name: The CPU both hosts can run (EVC-style), from what their QEMU can give guests
  hvmaint.libvirt.cpu_compat:
    hosts:
      - name: hv1
        xml: "{{ hostvars['hv1'].hv.hypervisor.cpu.host_model_xml }}"
      - name: hv2
        xml: "{{ hostvars['hv2'].hv.hypervisor.cpu.host_model_xml }}"
    baseline: true
  delegate_to: localhost
  run_once: true
  register: evc

- name: Show the CPU definition to give guests
  ansible.builtin.debug:
    msg: "{{ evc.baseline.xml }}"
  run_once: true
"""

RETURN = r"""
matrix:
  description: One entry per guest and host, guests first (every host for the first guest, then the next).
  returned: success
  type: list
  elements: dict
  contains:
    guest:
      description: Guest name.
      type: str
      sample: db1
    host:
      description: Host name.
      type: str
      sample: hv3
    result:
      description:
        - V(identical) when the host has exactly what the guest lists, V(superset) when it has more,
          V(incompatible) when the guest cannot run there, V(error) when the pair cannot be judged (an unknown
          model or feature, or a C(host-passthrough) guest without its source host).
      type: str
      sample: incompatible
    compatible:
      description: V(true) for V(identical) and V(superset).
      type: bool
      sample: false
    missing_features:
      description: Features the guest needs and the host lacks, sorted.
      type: list
      elements: str
      sample: [avx512bw, avx512f]
    reasons:
      description: Why, in sentences that say what to do; also notes on compatible pairs worth knowing.
      type: list
      elements: str
      sample:
        - "vendor mismatch: the guest requires Intel (its CPU exposes vmx, Intel VT-x); hv3 is AMD"
    guest_model:
      description: The guest's CPU model, or V(null) (host-passthrough, host-model without model, no C(<cpu>)).
      type: str
      sample: Skylake-Server
    host_model:
      description: The host's CPU model as libvirt names it.
      type: str
      sample: EPYC-Rome-v3
    extra_features:
      description:
        - Features the host has beyond the guest, when that makes the pair incompatible (C(match=strict),
          C(host-passthrough)).
      type: list
      elements: str
      returned: when they make the pair incompatible
    unverified_features:
      description:
        - VMX capabilities that libvirt added to the guest's model later (C(added=yes) in the CPU map) and the
          host does not report. They do not block.
      type: list
      elements: str
      returned: when there are some
    libvirt_result:
      description: The destination libvirt's verdict (C(compareHypervisorCPU)), same values as RV(matrix[].result).
      type: str
      returned: for hosts in O(live_hosts)
      sample: superset
    libvirt_message:
      description: libvirt's explanation of an V(incompatible) or V(error) verdict.
      type: str
      returned: when libvirt gave one
    disagreement:
      description: V(true) when RV(matrix[].result) and RV(matrix[].libvirt_result) differ; a reason explains.
      type: bool
      returned: for hosts in O(live_hosts)
summary:
  description: Counts over RV(matrix).
  returned: success
  type: dict
  contains:
    guests:
      description: Number of guests.
      type: int
    hosts:
      description: Number of hosts.
      type: int
    pairs:
      description: Number of pairs in RV(matrix).
      type: int
    identical:
      description: Pairs with result V(identical).
      type: int
    superset:
      description: Pairs with result V(superset).
      type: int
    incompatible:
      description: Pairs with result V(incompatible).
      type: int
    error:
      description: Pairs with result V(error).
      type: int
    compatible:
      description: Pairs that are V(identical) or V(superset).
      type: int
    disagreements:
      description: Pairs where the offline check and libvirt differ.
      type: int
    guests_without_host:
      description: Guests that fit no host.
      type: list
      elements: str
      sample: [db1]
baseline:
  description: The most capable CPU definition every host can run.
  returned: when O(baseline=true)
  type: dict
  contains:
    vendor:
      description: The hosts' vendor, or V(null) when they mix vendors.
      type: str
      sample: Intel
    model:
      description:
        - The most capable named model whose features every host has; vendor-neutral (such as V(kvm64)) when
          the hosts mix vendors.
        - V(null) when no baseline could be computed; RV(baseline.reasons) says why.
      type: str
      sample: Skylake-Server
    features:
      description: Features beyond the model that all hosts share and that libvirt can migrate.
      type: list
      elements: str
    disabled_features:
      description: Late-added VMX capabilities of the model that not every host reports, disabled.
      type: list
      elements: str
    xml:
      description: A C(<cpu mode='custom' match='exact'>) element to put in guests' definitions, or V(null).
      type: str
    reasons:
      description: How the model was chosen, and what to watch.
      type: list
      elements: str
    libvirt_host:
      description: The host of O(live_hosts) whose libvirt was asked.
      type: str
      returned: with O(live_hosts)
    libvirt_xml:
      description: The baseline libvirt computed (C(baselineHypervisorCPU)), or V(null) when it failed.
      type: str
      returned: with O(live_hosts)
    libvirt_message:
      description: libvirt's error when it could not compute a baseline.
      type: str
      returned: when libvirt failed
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_compat import run
from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import DEFAULT_CPU_MAP_DIR
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    fail_from,
    require_libvirt,
)


def argument_spec():
    return dict(
        guests=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            xml=dict(type="str", required=True),
            cpu_map_dir=dict(type="path"),
            domain_type=dict(type="str", choices=["kvm", "qemu"]),
            source_host=dict(type="str"),
            source_host_xml=dict(type="str"),
        )),
        hosts=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            xml=dict(type="str", required=True),
            cpu_map_dir=dict(type="path"),
        )),
        hypervisors=dict(type="list", elements="dict", default=[]),
        cpu_map_dir=dict(type="path", default=DEFAULT_CPU_MAP_DIR),
        live_hosts=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            uri=dict(type="str", required=True),
            cpu_map_dir=dict(type="path"),
        )),
        live_guests=dict(type="list", elements="dict", default=[], options=dict(
            uri=dict(type="str", required=True),
            names=dict(type="list", elements="str"),
            cpu_map_dir=dict(type="path"),
        )),
        baseline=dict(type="bool", default=False),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    if params["live_hosts"] or params["live_guests"]:
        require_libvirt(module)
    try:
        result = run(
            guests=params["guests"],
            hosts=params["hosts"],
            cpu_map_dir=params["cpu_map_dir"],
            live_hosts=params["live_hosts"],
            live_guests=params["live_guests"],
            want_baseline=params["baseline"],
            hypervisors=params["hypervisors"],
        )
    except HvmaintError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
