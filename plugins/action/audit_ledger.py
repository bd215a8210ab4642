# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.audit_ledger: when the task runs on the controller (the roles delegate it to
localhost, where the ledger lives), appends in the controller's own worker instead of starting the module in a
new Python process (about 1.3 s a run on the 2-core lab machine, paid before the first change and after every
wave); on any other host, or with become or a task environment, it runs the module there as usual."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.hvmaint.libvirt.plugins.modules import audit_ledger
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import in_controller_process


class ActionModule(ActionBase):

    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        if not in_controller_process(self._connection, self._play_context, self._task):
            result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
            return result
        validated = ArgumentSpecValidator(audit_ledger.argument_spec()).validate(dict(self._task.args))
        if validated.error_messages:
            return dict(result, failed=True, msg="; ".join(validated.error_messages))
        params = validated.validated_parameters
        try:
            result.update(audit_ledger.record(params, self._task.check_mode))
        except (OSError, ValueError) as exc:
            return dict(result, failed=True, msg=audit_ledger.failure_message(params["path"], exc))
        return result
