# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.report_file: when the task runs on the controller (the roles delegate it to
localhost, where the reports live), makes the directory or writes the file in the controller's own worker instead
of starting a module in a new Python process (ansible.builtin.file and template cost 0.5-1.5 s a run on the 2-core
lab machine, once before the first change and once at the end); elsewhere it runs the module there as usual."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._report_file import ReportFileError
from ansible_collections.hvmaint.libvirt.plugins.modules import report_file
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import in_controller_process


class ActionModule(ActionBase):

    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        if not in_controller_process(self._connection, self._play_context, self._task):
            result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
            return result
        validated = ArgumentSpecValidator(report_file.argument_spec(), required_if=report_file.REQUIRED_IF).validate(
            dict(self._task.args))
        if validated.error_messages:
            return dict(result, failed=True, msg="; ".join(validated.error_messages))
        params = validated.validated_parameters
        try:
            result.update(report_file.write(params, self._task.check_mode))
        except ReportFileError as exc:
            return dict(result, failed=True, msg=str(exc), path=params["path"])
        return result
