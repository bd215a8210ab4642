# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.audit_ledger: when the task runs on the controller (the roles delegate it to
localhost, where the ledger lives), appends in the controller's own worker instead of starting the module in a
new Python process (about 1.3 s a run on the 2-core lab machine, paid before the first change and after every
wave); on any other host, or with become or a task environment, it runs the module there as usual."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules import audit_ledger
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import InControllerProcessAction


class ActionModule(InControllerProcessAction):

    argument_spec = staticmethod(audit_ledger.argument_spec)
    work = staticmethod(audit_ledger.record)
    ERRORS = (OSError, ValueError)

    @staticmethod
    def failure(params, exc):
        return {"msg": audit_ledger.failure_message(params["path"], exc)}
