# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_facts
short_description: The facts the role fleet_facts read, held once, for the planner, the CPU check and reports
version_added: 0.1.0
description:
  - The role P(hvmaint.libvirt.fleet_facts#role) registers each host's M(hvmaint.libvirt.hypervisor_info) result
    on that host alone. This lookup reads those results from C(hostvars) on the controller, in one pass over the
    play's hosts, and returns what a task needs, so no host holds a copy of the whole fleet.
  - Hosts whose facts could not be read (unreachable, or M(hvmaint.libvirt.hypervisor_info) failed) are left out
    of RV(_raw) for O(_terms=hypervisors) and named by O(_terms=left_out).
  - Fails when two hosts report the same libvirt host name.
author: hvmaint.libvirt maintainers (@hvmaint)
options:
  _terms:
    description:
      - What to return; one term.
      - V(hypervisors), the list of each reachable host's facts.
      - V(cpus), the same trimmed to what M(hvmaint.libvirt.cpu_compat)'s O(hvmaint.libvirt.cpu_compat#module:hypervisors)
        reads (the one CPU definition each host is compared by, each VM's name, domain type and CPU), far lighter
        to pass to a module.
      - V(left_out), the hosts left out, as a list of C({host, error}).
      - V(names), inventory name to libvirt host name; V(inventory_names), the reverse.
      - V(host_overrides), libvirt host name to the sizes declared by the inventory variables C(hvmaint_memory_mib)
        and C(hvmaint_vcpus).
      - V(migration_uris), libvirt host name to the inventory variable C(hvmaint_migration_uri), where set.
      - V(summary_lines), how many hosts were read and which were left out, as lines to show.
      - V(loads), each host's measured load (M(hvmaint.libvirt.host_load)'s RV(hvmaint.libvirt.host_load#module:load)),
        when the role's entry point C(load) measured it; hosts whose load could not be measured are missing.
    type: list
    elements: str
    required: true
  hosts:
    description: Inventory hosts to read. Default is the play's hosts that are still running (C(ansible_play_hosts)).
    type: list
    elements: str
  vms_of:
    description:
      - With V(hypervisors) or V(cpus), keep only the VMs of these inventory hosts (every host stays, with its CPU, as a
        destination), for a CPU check that concerns one drained host.
    type: list
    elements: str
  vms_homed_on:
    description:
      - With V(hypervisors) or V(cpus), keep only the VMs whose home is this inventory host, for the CPU check of a return.
    type: str
seealso:
  - module: hvmaint.libvirt.hypervisor_info
"""

EXAMPLES = r"""
- name: Read every hypervisor
  ansible.builtin.include_role:
    name: hvmaint.libvirt.fleet_facts

- name: Plan the drain of kvm01
  hvmaint.libvirt.evacuation_plan:
    hosts: "{{ lookup('hvmaint.libvirt.fleet_facts', 'hypervisors') }}"
    source: "{{ lookup('hvmaint.libvirt.fleet_facts', 'names')['kvm01'] }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_raw:
  description: What O(_terms) asked for (with C(query), a list of one element).
  type: raw
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet import WHAT, Fleet, FleetError


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1 or terms[0] not in WHAT:
            raise AnsibleLookupError("give one of %s" % ", ".join(WHAT))
        variables = variables or {}
        hostvars = variables["hostvars"]
        hosts = self.get_option("hosts") or variables.get("ansible_play_hosts") or []
        try:
            fleet = Fleet(hosts, hostvars.raw_get, template=self._templar.template)
            return [fleet.get(terms[0], vms_of=self.get_option("vms_of"),
                              vms_homed_on=self.get_option("vms_homed_on"))]
        except FleetError as exc:
            raise AnsibleLookupError(str(exc)) from exc
