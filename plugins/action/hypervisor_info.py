# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.hypervisor_info: runs the module on the host, or, for a simulated host (the
inventory variable hvmaint_recorded_facts, for tests and benchmarks), returns its recorded facts."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._recorded import load_facts, recorded_facts_path


class ActionModule(ActionBase):

    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        recorded = recorded_facts_path(task_vars, self._task.delegate_to)
        if not recorded:
            result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
            return result
        try:
            facts = load_facts(self._templar.template(recorded), self._task.args.get("vms"))
        except (OSError, ValueError) as exc:
            return dict(result, failed=True, msg="recorded facts %s: %s" % (recorded, exc))
        return dict(result, changed=False, hypervisor=facts, recorded=True)
