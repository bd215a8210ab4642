#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: audit_ledger
short_description: Append VM moves to an audit ledger, or read it
version_added: 0.1.0
description:
  - The ledger is a JSON-lines file at a path you choose; each line is one move with its time, VM, UUID, source,
    destination, tier, outcome, duration, downtime and data moved.
  - Appends take an exclusive lock on the file, so two jobs that append at once never interleave their lines.
  - The collection's roles call it on the controller (delegated to C(localhost)) after every wave.
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run with O(state=present) appends its entries again; a ledger records events, not state.
options:
  path:
    description: The ledger file. Its directory is created when missing.
    type: path
    required: true
  entries:
    description:
      - Entries to append. Known keys are C(time), C(vm), C(uuid), C(source), C(destination), C(tier), C(outcome),
        C(duration_s), C(downtime_ms), C(data_bytes), C(job), C(by), C(operation); other keys are kept as given.
    type: list
    elements: dict
    default: []
  migrations:
    description:
      - The RV(hvmaint.libvirt.live_migrate#module:migrations) results of M(hvmaint.libvirt.live_migrate), turned into
        entries (check-mode results are skipped). Appended after O(entries).
    type: list
    elements: dict
    default: []
  actions:
    description:
      - The RV(hvmaint.libvirt.evacuation_plan#module:actions) of M(hvmaint.libvirt.evacuation_plan) (VMs shut
        down, suspended or left running because they could go nowhere), turned into entries.
    type: list
    elements: dict
    default: []
  tiers:
    description: VM name to tier, for the entries made from O(migrations).
    type: dict
    default: {}
  operation:
    description: What the moves were part of (for example V(drain) or V(return)), recorded in each entry.
    type: str
  job:
    description:
      - An identifier of the job, recorded in the entries made from O(migrations) and O(actions) (defaults to the
        C(JOB_ID) environment variable, when there is one).
      - The roles pass the AWX job id from the P(hvmaint.libvirt.actor#lookup) lookup.
    type: str
  by:
    description:
      - Who made the moves, recorded in the entries made from O(migrations) and O(actions).
      - The roles pass the AWX user, or the controller's user, from the P(hvmaint.libvirt.actor#lookup) lookup.
    type: str
    version_added: 0.1.0
  state:
    description:
      - V(present) appends O(entries); V(read) returns the ledger in RV(entries) and changes nothing.
      - V(ready) creates the ledger and its directory when missing, takes its lock and appends nothing. The roles
        run it before their first change, so a ledger that cannot be written stops them with nothing changed.
        In check mode it only checks that the file could be created or appended to.
    type: str
    choices: [present, read, ready]
    default: present
"""

EXAMPLES = r"""
- name: Record the moves of a wave
  hvmaint.libvirt.audit_ledger:
    path: /var/log/hvmaint/ledger.jsonl
    migrations: "{{ wave_result.migrations }}"
    operation: drain
  delegate_to: localhost

- name: Record a move made by other means
  hvmaint.libvirt.audit_ledger:
    path: /var/log/hvmaint/ledger.jsonl
    entries:
      - {time: "2026-11-25T12:00:00Z", vm: web1, source: hv1, destination: hv2, outcome: migrated}
  delegate_to: localhost
"""

RETURN = r"""
appended:
  description: How many entries were appended.
  returned: O(state=present) and O(state=ready)
  type: int
  sample: 3
entries:
  description: The ledger's entries, oldest first.
  returned: O(state=read)
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

import os

from ansible_collections.hvmaint.libvirt.plugins.module_utils._ledger import (
    append_entries,
    entries_from_actions,
    entries_from_migrations,
    make_ready,
    read_entries,
)


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        entries=dict(type="list", elements="dict", default=[]),
        migrations=dict(type="list", elements="dict", default=[]),
        actions=dict(type="list", elements="dict", default=[]),
        tiers=dict(type="dict", default={}),
        operation=dict(type="str"),
        job=dict(type="str"),
        by=dict(type="str"),
        state=dict(type="str", choices=["present", "read", "ready"], default="present"),
    )


def record(params, check_mode, environ=None):
    """The module's result for validated `params`; raises OSError or ValueError. The action plugin calls it too,
    in the controller's own process, when the task runs on the controller."""
    path = params["path"]
    if params["state"] == "read":
        return dict(changed=False, entries=read_entries(path))
    if params["state"] == "ready":
        return dict(changed=make_ready(path, check_mode), appended=0)
    job = params["job"] or (os.environ if environ is None else environ).get("JOB_ID")
    by = params["by"]
    entries = list(params["entries"]) + entries_from_migrations(
        params["migrations"], params["tiers"], params["operation"], job, by=by
    ) + entries_from_actions(params["actions"], params["operation"], job, by=by)
    appended = len(entries) if check_mode else append_entries(path, entries)
    return dict(changed=bool(appended), appended=appended)


def failure_message(path, exc):
    return "cannot use the audit ledger at %s: %s" % (path, exc)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = record(module.params, module.check_mode)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=failure_message(module.params["path"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
