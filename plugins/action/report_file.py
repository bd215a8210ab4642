# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.report_file: when the task runs on the controller (the roles delegate it to
localhost, where the reports live), makes the directory or writes the file in the controller's own worker instead
of starting a module in a new Python process (ansible.builtin.file and template cost 0.5-1.5 s a run on the 2-core
lab machine, once before the first change and once at the end); elsewhere it runs the module there as usual."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._report_file import ReportFileError
from ansible_collections.hvmaint.libvirt.plugins.modules import report_file
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import InControllerProcessAction


class ActionModule(InControllerProcessAction):

    argument_spec = staticmethod(report_file.argument_spec)
    work = staticmethod(report_file.write)
    REQUIRED_IF = report_file.REQUIRED_IF
    ERRORS = (ReportFileError,)

    @staticmethod
    def failure(params, exc):
        return {"msg": str(exc), "path": params["path"]}
