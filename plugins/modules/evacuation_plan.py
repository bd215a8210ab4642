#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: evacuation_plan
short_description: Plan where each VM goes, and in which order, to empty a hypervisor or bring its VMs home
version_added: 0.1.0
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
  - hvmaint.libvirt.capacity
description:
  - With O(source), plans the drain of that host; with O(return_to), plans bringing back every VM whose
    C(metadata.home) is that host, wherever it now runs.
  - Pure computation on hypervisor facts (the RV(hvmaint.libvirt.hypervisor_info#module:hypervisor) results of
    M(hvmaint.libvirt.hypervisor_info)); it talks to no host, so run it on the controller
    (C(delegate_to=localhost), C(run_once=true)). The same facts always give the same plan, whatever their
    order.
  - Tier by tier in O(tier_order), most important first, and within a tier the biggest VM first, each VM goes to
    the compatible host with the most free memory. For the first tier (V(critical) by default), hosts holding no
    VM of that tier come first, so the most important VMs spread out.
  - A destination is compatible when M(hvmaint.libvirt.migration_readiness) finds no blocker for the pair
    (networks, bridges, storage pools, machine type, KVM, architecture, CPU from O(cpu_matrix)), and it has room
    for the VM's memory and vCPUs given what the plan has already put there.
  - Moves come in waves, one tier per wave (split further by O(max_wave_size)); shut-off VMs (definition-only
    moves) come in waves of their own after the live ones.
options:
  source:
    description:
      - Name of the host to drain. Exactly one of O(source) and O(return_to) is required.
    type: str
  return_to:
    description:
      - Name of the host to bring VMs home to. Every VM whose C(metadata.home) is this host and that runs
        elsewhere is planned to come back, most important first, as long as the host has room.
      - VMs that do not fit are listed in RV(cannot_return).
    type: str
  ignore_home_mark:
    description:
      - With O(return_to), plan as if the home host's own maintenance mark were already cleared. The role
        C(hvmaint.libvirt.return_host) plans this way and clears the mark only once the plan and the dry-run
        succeed, so a return refused on bad input leaves the host marked.
      - Only the home host's mark is ignored; hosts under maintenance still send VMs home, as always. Only with
        O(return_to).
    type: bool
    default: false
    version_added: 0.2.0
  tier_order:
    description:
      - Tier names, most important first.
    type: list
    elements: str
    default: [critical, high, normal, low]
  tiers:
    description:
      - Tier name to a list of VM names or shell-style patterns (V(db*)).
      - This mapping wins over the VM's C(metadata.tier); a VM matching several tiers gets the most important.
      - A tier not in O(tier_order) fails the task, and so does a C(metadata.tier) not in O(tier_order) on a VM
        to be moved.
    type: dict
  default_tier:
    description:
      - Tier of VMs that neither O(tiers) nor C(metadata.tier) place.
    type: str
    default: normal
  anti_affinity:
    description:
      - Group name to a list of VM names or patterns. VMs of a group avoid hosts that already run a member,
        including members that are not being moved.
      - This mapping wins over the VM's C(metadata.group) when it names the VM.
    type: dict
  strict_anti_affinity:
    description:
      - When no host with room is free of the group, V(false) places the VM anyway and warns, V(true) makes it
        unplaceable.
    type: bool
    default: false
  unplaceable_policy:
    description:
      - Tier name to what to do with a running VM that has nowhere to go.
      - V(fail) makes the whole plan not OK (RV(ok=false)) and plans no move at all.
      - V(shutdown) shuts it down on the drained host (start it again on return), V(suspend) saves it to disk
        there (restore on return), V(leave) leaves it running (the host will not be empty); these come back in
        RV(actions).
      - Tiers not named get V(fail).
      - Only used with O(source).
    type: dict
  shutoff_vms:
    description:
      - V(move) moves the definition of shut-off VMs (offline migration, nothing runs) to a compatible host,
        keeping room to start them there when it can; V(leave) leaves them defined where they are.
      - A shut-off VM that cannot move (host-local disk, passthrough device, no compatible host) is left, with a
        warning; it never makes the plan fail.
    type: str
    choices: [move, leave]
    default: move
  exclude_hosts:
    description:
      - Hosts that must never be destinations. Hosts under maintenance never are.
    type: list
    elements: str
  max_parallel_per_source:
    description:
      - Migrations a source host runs at once, for the predicted times.
    type: int
    default: 2
  max_wave_size:
    description:
      - Split a tier's moves into waves of at most this many VMs. Default is one wave per tier.
    type: int
  ledger:
    description:
      - Path of an audit ledger (M(hvmaint.libvirt.audit_ledger)) on the host that runs the module, to learn the
        predicted times from. It learns per host pair a fixed cost per migration and a rate, and per VM the
        bytes its migrations sent (its memory plus what it dirtied meanwhile), how long its recent moves took,
        how long the source's clean-up went on after its switch-over, and whether it needed escalation.
        The VMs'
        own history, C(metadata.moves), counts for VMs the ledger does not know.
      - A VM with moves of its own on the same host pair is predicted at the median of its recent ones there;
        a VM that moved only on other pairs at the pair's figure plus how much longer or shorter its own moves
        ran than their pairs' figures; a VM never moved at the pair's fixed cost plus its memory at the pair's
        rate.
      - Moves made under a bandwidth limit (throttled) or that ran into a fault (M(hvmaint.libvirt.live_migrate)'s
        RV(hvmaint.libvirt.live_migrate#module:migrations[].faulted)) teach no times, since they measure the limit or
        the fault; they still say whether the VM needed escalation.
      - With no history yet (or a ledger that does not exist), the default model applies, 2 s per migration plus
        one pass over memory and copied disks at O(bandwidth_mib_s); RV(prediction_model) says which applied.
      - Without this option, predicted times are the lower bound of the notes below.
    type: path
    version_added: 0.1.0
  migration_uris:
    description:
      - Migration URI of each destination that needs one, by host name (the inventory variable
        C(hvmaint_migration_uri); the lookup P(hvmaint.libvirt.fleet_facts#lookup) returns them as V(migration_uris)).
      - Copied into RV(live_migrate_moves), so the plan is M(hvmaint.libvirt.live_migrate)'s input as it is.
    type: dict
    default: {}
  site_from:
    description:
      - Plan a site evacuation instead of a drain; every host of the site to empty (with O(site_to), the hosts of
        the other site). Each VM's facts are first rewritten with O(site_mapping) as they would be at the other
        site, then placed by the drain's rules (tiers, capacity, CPU from O(cpu_matrix), the mapped networks,
        pools and their space for every copied disk). A VM the mapping cannot place stops the plan with an error.
      - With O(site_failback=true), the hosts VMs come back from.
    type: list
    elements: str
    version_added: 0.2.0
  site_to:
    description:
      - The hosts of the other site, the only destinations. With O(site_failback=true), the home hosts VMs go
        back to.
    type: list
    elements: str
    version_added: 0.2.0
  site_mapping:
    description:
      - Names at the destination site of the source site's networks, bridges and pools - C(networks),
        C(bridges) and C(pools), each a dictionary of source name to target name, and C(default_network),
        C(default_bridge) and C(default_pool) for names they do not list. For a failback, the evacuation's
        mapping, which the plan reverses; RV(site_mapping) is the mapping the moves take.
    type: dict
    version_added: 0.2.0
  site_failback:
    description:
      - Plan the failback of O(site_from) to O(site_to) - every VM there whose home is a host of O(site_to) goes
        home, each home host planned as O(return_to) plans one; the returns to all home hosts then share one set of
        waves, tier by tier.
    type: bool
    default: false
    version_added: 0.2.0
notes:
  - Free memory of a host is O(memory_overcommit) times its declared memory, minus O(memory_reserve_mib), minus
    the memory of the VMs it runs and of the VMs the plan sends there.
  - Without O(ledger), predicted times are lower bounds, one pass over each VM's memory (and host-local disks to
    copy) at O(bandwidth_mib_s); with it, what earlier migrations took. Either way O(max_parallel_per_source) at
    once, waves one after the other, and within a wave the longest predicted move first.
  - VMs in a state that cannot move (crashed, guest-suspended, shutting down) and VMs with passthrough devices are
    unplaceable and get their tier's O(unplaceable_policy).
seealso:
  - module: hvmaint.libvirt.migration_readiness
  - module: hvmaint.libvirt.hypervisor_info
"""

EXAMPLES = r"""
- name: Plan the drain of hv1
  hvmaint.libvirt.evacuation_plan:
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, ['hv', 'hypervisor']) | list }}"
    source: hv1
    tiers:
      critical: ["db*", dns1]
    anti_affinity:
      dns: ["dns*"]
    unplaceable_policy:
      critical: fail
      high: fail
      normal: shutdown
      low: leave
    max_wave_size: 10
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show the plan
  ansible.builtin.debug:
    var: plan.summary_lines
  run_once: true

- name: Stop when the plan cannot be carried out
  ansible.builtin.assert:
    that: plan.ok
    fail_msg: "{{ plan.unplaceable }}"
  run_once: true

- name: Plan bringing hv1's VMs home after the maintenance
  hvmaint.libvirt.evacuation_plan:
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, ['hv', 'hypervisor']) | list }}"
    return_to: hv1
  delegate_to: localhost
  run_once: true
  register: homecoming
"""

RETURN = r"""
ok:
  description:
    - Drain - V(false) when a VM whose tier policy is V(fail) cannot be placed; then RV(waves), RV(moves) and
      RV(actions) are empty and nothing should move.
    - Return - V(false) when the home host cannot take VMs at all (still under maintenance, or without known
      memory); VMs that do not fit are in RV(cannot_return) and do not make it V(false).
  returned: success
  type: bool
direction:
  description: V(drain) or V(return).
  returned: success
  type: str
waves:
  description: Moves grouped in the order to run them.
  returned: success
  type: list
  elements: dict
  contains:
    wave:
      description: Wave number, from 1.
      type: int
    tier:
      description: Tier of every VM in the wave.
      type: str
    mode:
      description: V(live) or V(offline) (definition-only moves of shut-off VMs).
      type: str
    predicted_seconds:
      description: Predicted duration of the wave.
      type: float
    moves:
      description: The moves, as in RV(moves).
      type: list
      elements: dict
    live_migrate_moves:
      description: The wave's moves as M(hvmaint.libvirt.live_migrate)'s O(hvmaint.libvirt.live_migrate#module:moves).
      type: list
      elements: dict
live_migrate_moves:
  description:
    - Every move as an item of M(hvmaint.libvirt.live_migrate)'s O(hvmaint.libvirt.live_migrate#module:moves),
      with C(name), C(destination) and C(destination_uri) (from O(migration_uris), else V(null)).
  returned: success
  type: list
  elements: dict
  sample: [{name: web1, destination: hv2, destination_uri: "qemu+tls://hv2.example.com/system"}]
moved_lines:
  description: One line per move (C(vm -> destination (tier)) for a drain, C(vm <- holding host) for a return).
  returned: success
  type: list
  elements: str
moves:
  description: Every move, in order.
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
      description: Host the VM leaves.
      type: str
    destination:
      description: Host the VM goes to.
      type: str
    tier:
      description: The VM's tier.
      type: str
    mode:
      description: V(live) or V(offline).
      type: str
    state:
      description: The VM's state.
      type: str
    reason:
      description: Why that host, in words.
      type: str
      sample: most free memory among 3 compatible hosts (12.1 GiB free after)
    memory_mib:
      description: The VM's memory.
      type: int
    vcpus:
      description: The VM's vCPUs.
      type: int
    estimated_seconds:
      description: Predicted duration of the move (0 for an offline move).
      type: float
    prediction:
      description: With O(ledger), what the predicted duration rests on.
      type: str
      returned: with O(ledger), for live moves
      sample: "hv1->hv2 over 12 migrations: 1.8 s + 96 MiB at 110 MiB/s"
    last_escalation:
      description:
        - With O(ledger), when the VM's last migration needed escalation, the policy that finally worked
          (C(downtime_limit_ms), C(postcopy)). M(hvmaint.libvirt.live_migrate) starts its next migration there.
      type: dict
      returned: with O(ledger), for VMs whose last migration escalated
    warnings:
      description: Readiness warnings for this move, as C(code) and C(reason).
      type: list
      elements: dict
    wave:
      description: Wave number.
      type: int
    order:
      description: Position in RV(moves), from 1.
      type: int
unplaceable:
  description: Running VMs of the drained host with nowhere to go, with their tier's policy and the reasons.
  returned: success
  type: list
  elements: dict
actions:
  description: >-
    What to do with VMs that stay on their host: C(action) is V(shutdown), V(suspend) or V(leave), with C(vm),
    C(uuid), C(host), C(tier) and C(reason).
  returned: success
  type: list
  elements: dict
cannot_return:
  description: With O(return_to), VMs that cannot come home and why.
  returned: success
  type: list
  elements: dict
plan_warnings:
  description:
    - What to read before carrying out the plan (anti-affinity not honoured, disks to copy, older QEMU, CPU not
      checked, ...). Named so because Ansible reserves C(warnings).
  returned: success
  type: list
  elements: str
excluded_destinations:
  description: Hosts that were not destinations and why (maintenance, O(exclude_hosts), unknown memory).
  returned: success
  type: list
  elements: dict
predicted_seconds:
  description: Predicted duration of all waves, one after the other.
  returned: success
  type: float
prediction_model:
  description:
    - With O(ledger), what the predictions were learned from; C(default) is the model for no history,
      C(all_pairs) what all migrations together show, C(pairs) each host pair's C(fixed_s), C(rate_mib_s) and
      number of C(migrations), C(left_out) how many moves taught no times, by why (C(throttled), C(faulted)).
    - C(tail_after_switchover_s) is how long a pair's migrations went on after the VM already ran on the
      destination (the source's clean-up; 0 when no ledger entry says when the switch-over came). A move holds
      its slot for its predicted time minus its VM's own tail (median of its recent moves, on the pair first),
      else its pair's, else all pairs', so a wave's prediction lets the next move start then.
    - C(vms_with_history) counts the VMs predicted from their own moves, C(vms_with_own_tail) those whose moves
      said when they switched over, and C(vm_tail_after_switchover_s) the range (C(min), C(max)) of their
      tails; each move's C(prediction) names what its figure rests on.
  returned: with O(ledger)
  type: dict
site_mapping:
  description:
    - With O(site_from), the mapping the moves take (normalized, every key present; for a failback the reverse of
      O(site_mapping)), for the moves of RV(live_migrate_moves).
  returned: with O(site_from)
  type: dict
  version_added: 0.2.0
summary_lines:
  description: The plan as a plain-text table, for C(ansible.builtin.debug).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._argspec import CAPACITY_ARGUMENT_SPEC
from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import (
    plan_evacuation,
    plan_return,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._ledger import history_for_predictions
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, fail_from
from ansible_collections.hvmaint.libvirt.plugins.module_utils._site_plan import (
    plan_site_evacuation,
    plan_site_failback,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._plan_output import (
    add_live_migrate_moves,
    drain_lines,
    return_lines,
)


def argument_spec():
    return dict(
        **CAPACITY_ARGUMENT_SPEC,
        source=dict(type="str"),
        return_to=dict(type="str"),
        ignore_home_mark=dict(type="bool", default=False),
        tier_order=dict(type="list", elements="str", default=["critical", "high", "normal", "low"]),
        tiers=dict(type="dict"),
        default_tier=dict(type="str", default="normal"),
        anti_affinity=dict(type="dict"),
        strict_anti_affinity=dict(type="bool", default=False),
        unplaceable_policy=dict(type="dict"),
        shutoff_vms=dict(type="str", choices=["move", "leave"], default="move"),
        exclude_hosts=dict(type="list", elements="str"),
        max_parallel_per_source=dict(type="int", default=2),
        max_wave_size=dict(type="int"),
        ledger=dict(type="path"),
        migration_uris=dict(type="dict", default={}),
        site_from=dict(type="list", elements="str"),
        site_to=dict(type="list", elements="str"),
        site_mapping=dict(type="dict"),
        site_failback=dict(type="bool", default=False),
    )


MUTUALLY_EXCLUSIVE = [("source", "return_to", "site_from")]
REQUIRED_ONE_OF = [("source", "return_to", "site_from")]
REQUIRED_TOGETHER = [("site_from", "site_to")]


def plan(params, warn=None):
    """The module's result for validated `params`; raises HvmaintError; `warn(message)` reports what the task
    should show as a warning. The action plugin calls it too."""
    if params["hosts"] is None:
        raise HvmaintError("no hosts: give hosts, or read them with the role hvmaint.libvirt.fleet_facts first")
    options = dict(params)
    hosts = options.pop("hosts")
    source = options.pop("source")
    return_to = options.pop("return_to")
    ignore_home_mark = options.pop("ignore_home_mark")
    if ignore_home_mark and return_to is None:
        raise HvmaintError("ignore_home_mark applies only with return_to (a return's own home host)")
    ledger = options.pop("ledger")
    migration_uris = options.pop("migration_uris")
    if ledger is not None:
        options["history"] = history_for_predictions(ledger, warn)
    site = {key: options.pop(key) for key in ("site_from", "site_to", "site_mapping", "site_failback")}
    if site["site_from"] is not None:
        if not site["site_to"]:
            raise HvmaintError("site_from needs site_to (the hosts of the other site)")
        if site["site_failback"]:
            result = plan_site_failback(hosts, site["site_from"], site["site_to"], site["site_mapping"], **options)
            return_to = result["return_to"]
        else:
            result = plan_site_evacuation(hosts, site["site_from"], site["site_to"], site["site_mapping"],
                                          **options)
            source = result["source"]
    elif source is not None:
        result = plan_evacuation(hosts, source, **options)
    else:
        result = plan_return(hosts, return_to, ignore_home_mark=ignore_home_mark, **options)
    # Ansible treats a top-level "warnings" key as the module's own warnings.
    result["plan_warnings"] = result.pop("warnings")
    add_live_migrate_moves(result, migration_uris)
    result["moved_lines"] = drain_lines(result["moves"]) if source is not None else return_lines(result["moves"],
                                                                                                 return_to)
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE,
                           required_one_of=REQUIRED_ONE_OF, required_together=REQUIRED_TOGETHER,
                           supports_check_mode=True)
    try:
        result = plan(module.params, module.warn)
    except HvmaintError as exc:
        fail_from(module, exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
