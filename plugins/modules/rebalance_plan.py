#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rebalance_plan
short_description: Plan moves that even out a fleet's load, or that pack its VMs onto fewer hypervisors
version_added: 0.2.0
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
  - hvmaint.libvirt.capacity
description:
  - Pure computation on hypervisor facts (M(hvmaint.libvirt.hypervisor_info)) and measured load
    (M(hvmaint.libvirt.host_load)); it talks to no host. Its action plugin runs it on the controller and takes the
    facts and loads that the role P(hvmaint.libvirt.fleet_facts#role) read when O(hosts) and O(loads) are left out.
  - With O(strategy=balance), moves VMs from the most loaded hosts to the least loaded ones while the fleet's
    imbalance is above O(threshold). Imbalance is O(cpu_weight) times the coefficient of variation (standard
    deviation over mean) of the hosts' CPU load plus the rest times that of their memory load, each host's load
    normalised by its capacity (CPUs; memory after overcommit and reserve). A move is kept only when it removes at
    least O(min_improvement) of the share of the imbalance of the two hosts it touches (all of it when two hosts
    take part); among those, the move removing most imbalance per second of predicted migration wins, so small,
    idle and quick VMs go first. At most O(max_moves) moves; a second run on the placement reached plans none.
  - With O(strategy=consolidate), empties hosts whole, the cheapest to empty first, packing their VMs first-fit,
    biggest first, onto the fullest hosts that can take them; lists the hosts left empty and, for each host it
    cannot empty, why. RV(ok) is V(false) when no host can be emptied.
  - Both use the evacuation planner's rules (M(hvmaint.libvirt.evacuation_plan)) for compatibility (CPU from
    O(cpu_matrix), networks, bridges, storage, machine type), capacity, anti-affinity (always strict here) and
    tiers; VMs of the first tier of O(tier_order) move only with O(move_critical). Hosts under maintenance or held
    by another job's lease are neither sources nor destinations. Every move says why this VM, why this host, and
    the imbalance before and after it.
options:
  strategy:
    description: V(balance) evens out the load; V(consolidate) packs VMs onto fewer hosts.
    type: str
    choices: [balance, consolidate]
    default: balance
  measure:
    description:
      - V(measured) plans with what the VMs use (O(loads)); V(allocated) with what they are given (vCPUs over
        CPUs times O(vcpu_overcommit), memory over usable memory), which needs no measurement.
    type: str
    choices: [measured, allocated]
    default: measured
  loads:
    description:
      - Each host's RV(hvmaint.libvirt.host_load#module:load). Default is what the role
        P(hvmaint.libvirt.fleet_facts#role) measured (its entry point C(load)). A host without a measured
        load takes no part.
    type: list
    elements: dict
  threshold:
    description: Imbalance at or below which nothing moves (a coefficient of variation; 0.2 is a fifth of the mean).
    type: float
    default: 0.2
  min_improvement:
    description:
      - Share (above 0, at most 1) of the imbalance of the two hosts a move touches that the move must remove to
        be kept (their share of the fleet's imbalance is 2 / the number of hosts taking part, at most all of it).
    type: float
    default: 0.1
  max_moves:
    description: At most this many moves per run (for consolidation, a host is emptied whole or not at all).
    type: int
    default: 5
  cpu_weight:
    description: Weight of CPU in the imbalance, 0 to 1; memory gets the rest.
    type: float
    default: 0.5
  min_load:
    description:
      - A dimension (CPU or memory) whose mean normalised load is below this counts as balanced, so a nearly idle
        fleet does not move VMs for noise.
    type: float
    default: 0.02
  move_critical:
    description: Let VMs of the first tier of O(tier_order) (V(critical) by default) move.
    type: bool
    default: false
  tier_order:
    description: Tier names, most important first.
    type: list
    elements: str
    default: [critical, high, normal, low]
  tiers:
    description: Tier name to a list of VM names or shell-style patterns; wins over the VM's C(metadata.tier).
    type: dict
  default_tier:
    description: Tier of VMs that neither O(tiers) nor C(metadata.tier) place.
    type: str
    default: normal
  anti_affinity:
    description:
      - Group name to a list of VM names or patterns; a VM never moves to a host that runs a member of its group
        (nor does C(metadata.group)).
    type: dict
  exclude_hosts:
    description: Host names (as libvirt names them) that take no part, neither sending nor taking VMs.
    type: list
    elements: str
  lease_break_job:
    description: A dead job whose leases do not count (the role passes C(rebalance_lease_break)).
    type: str
  max_parallel_per_source:
    description: Migrations at once from one host, for the predicted time of each wave.
    type: int
    default: 2
  max_wave_size:
    description: Split waves to at most this many moves.
    type: int
  ledger:
    description:
      - Path of an audit ledger (M(hvmaint.libvirt.audit_ledger)) to learn migration times from, as
        M(hvmaint.libvirt.evacuation_plan) does; a VM whose migrations took long costs more to move.
    type: path
  migration_uris:
    description: Host name to migration URI, for RV(live_migrate_moves).
    type: dict
    default: {}
seealso:
  - module: hvmaint.libvirt.host_load
  - module: hvmaint.libvirt.evacuation_plan
  - module: hvmaint.libvirt.live_migrate
"""

EXAMPLES = r"""
- name: Plan a balance of the fleet the role fleet_facts read and measured (its entry points main, then load)
  hvmaint.libvirt.rebalance_plan:
    strategy: balance
    threshold: 0.2
    max_moves: 5
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show it
  ansible.builtin.debug:
    msg: "{{ plan.summary_lines }}"

- name: Which hosts could be powered down?
  hvmaint.libvirt.rebalance_plan:
    strategy: consolidate
    measure: allocated
    max_moves: 50
  delegate_to: localhost
  run_once: true
  register: packing
"""

RETURN = r"""
ok:
  description: V(false) when a consolidation can empty no host (RV(refusals) say why); nothing should move then.
  returned: success
  type: bool
strategy:
  description: The strategy planned.
  returned: success
  type: str
measure:
  description: V(measured) or V(allocated).
  returned: success
  type: str
imbalance_before:
  description: The imbalance, and for a balance its CPU and memory coefficients of variation, before the moves.
  returned: success
  type: dict
  sample: {imbalance: 0.61, cpu_cv: 0.71, memory_cv: 0.51}
imbalance_after:
  description: The same once every planned move is done.
  returned: success
  type: dict
balanced:
  description: With O(strategy=balance), whether the imbalance after the moves is at or below O(threshold).
  returned: with O(strategy=balance)
  type: bool
stop_reason:
  description: Why a balance planned no more moves.
  returned: success
  type: str
moves:
  description:
    - The moves, in wave order, with C(vm), C(source), C(destination), C(tier), C(mode), C(memory_mib),
      C(estimated_seconds), C(wave), C(plan_step) (the order the planner chose them in), C(why_vm), C(why_host),
      C(imbalance_before) and C(imbalance_after) (balance), C(cpu_cores) and C(memory_used_mib) (its load),
      C(warnings), C(phase) and C(leg) (1 for a VM's first move in the plan). Within a phase no host both
      sends and takes VMs, so a phase's moves hold in any order; every wave of a phase runs before the next
      phase's. A VM moves again (C(leg) 2) only in a later phase, from where its earlier move took it.
  returned: success
  type: list
  elements: dict
waves:
  description: The moves grouped by phase, then by tier, most important first, as M(hvmaint.libvirt.evacuation_plan)
    groups them; each wave has its C(phase).
  returned: success
  type: list
  elements: dict
live_migrate_moves:
  description: The moves as M(hvmaint.libvirt.live_migrate)'s O(hvmaint.libvirt.live_migrate#module:moves).
  returned: success
  type: list
  elements: dict
hosts_after:
  description: Each host taking part with its normalised CPU and memory load once the moves are done.
  returned: success
  type: list
  elements: dict
hosts_emptied:
  description: With O(strategy=consolidate), the hosts the plan empties.
  returned: with O(strategy=consolidate)
  type: list
  elements: str
hosts_left_empty:
  description: With O(strategy=consolidate), the hosts empty after the plan (already empty, or emptied).
  returned: with O(strategy=consolidate)
  type: list
  elements: str
refusals:
  description: With O(strategy=consolidate), each host that cannot be emptied, with C(reasons).
  returned: with O(strategy=consolidate)
  type: list
  elements: dict
fixed:
  description: VMs that may not move (critical without O(move_critical), passthrough devices, state), and why.
  returned: success
  type: list
  elements: dict
excluded_hosts:
  description: Hosts taking no part and why (maintenance, another job's lease, O(exclude_hosts), no measured load).
  returned: success
  type: list
  elements: dict
plan_warnings:
  description: What to read before carrying out the plan.
  returned: success
  type: list
  elements: str
predicted_seconds:
  description: Predicted duration of all waves, one after the other.
  returned: success
  type: float
summary_lines:
  description: The plan as lines of text, every move explained, for C(ansible.builtin.debug).
  returned: success
  type: list
  elements: str
moved_lines:
  description: "One line per move: C(vm: source -> destination)."
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._argspec import CAPACITY_ARGUMENT_SPEC
from ansible_collections.hvmaint.libvirt.plugins.module_utils._ledger import history_for_predictions
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, fail_from
from ansible_collections.hvmaint.libvirt.plugins.module_utils._plan_output import add_live_migrate_moves
from ansible_collections.hvmaint.libvirt.plugins.module_utils._rebalance_plan import (
    DEFAULT_CPU_WEIGHT,
    DEFAULT_MAX_MOVES,
    DEFAULT_MIN_IMPROVEMENT,
    DEFAULT_MIN_LOAD,
    DEFAULT_THRESHOLD,
    STRATEGIES,
    plan_rebalance,
)


def argument_spec():
    return dict(
        **CAPACITY_ARGUMENT_SPEC,
        strategy=dict(type="str", choices=list(STRATEGIES), default="balance"),
        measure=dict(type="str", choices=["measured", "allocated"], default="measured"),
        loads=dict(type="list", elements="dict"),
        threshold=dict(type="float", default=DEFAULT_THRESHOLD),
        min_improvement=dict(type="float", default=DEFAULT_MIN_IMPROVEMENT),
        max_moves=dict(type="int", default=DEFAULT_MAX_MOVES),
        cpu_weight=dict(type="float", default=DEFAULT_CPU_WEIGHT),
        min_load=dict(type="float", default=DEFAULT_MIN_LOAD),
        move_critical=dict(type="bool", default=False),
        tier_order=dict(type="list", elements="str", default=["critical", "high", "normal", "low"]),
        tiers=dict(type="dict"),
        default_tier=dict(type="str", default="normal"),
        anti_affinity=dict(type="dict"),
        exclude_hosts=dict(type="list", elements="str"),
        lease_break_job=dict(type="str"),
        max_parallel_per_source=dict(type="int", default=2),
        max_wave_size=dict(type="int"),
        ledger=dict(type="path"),
        migration_uris=dict(type="dict", default={}),
    )


def plan(params, warn=None):
    """The module's result for validated `params`; raises HvmaintError. The action plugin calls it too."""
    if params["hosts"] is None:
        raise HvmaintError("no hosts: give hosts, or read them with the role hvmaint.libvirt.fleet_facts first")
    options = dict(params)
    hosts = options.pop("hosts")
    measure = options.pop("measure")
    ledger = options.pop("ledger")
    migration_uris = options.pop("migration_uris")
    if measure == "allocated":
        options["loads"] = None
    elif not options.get("loads"):
        raise HvmaintError("measure is measured but no host's load was measured: run hvmaint.libvirt.host_load (the"
                           " role fleet_facts does with tasks_from: load), or set measure: allocated")
    if ledger is not None:
        options["history"] = history_for_predictions(ledger, warn)
    result = plan_rebalance(hosts, **options)
    result["plan_warnings"] = result.pop("warnings")
    add_live_migrate_moves(result, migration_uris)
    result["moved_lines"] = ["%s: %s -> %s" % (m["vm"], m["source"], m["destination"]) for m in result["moves"]] \
        or ["nothing to move"]
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = plan(module.params, module.warn)
    except HvmaintError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
