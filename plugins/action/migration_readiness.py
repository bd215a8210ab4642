# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.migration_readiness: assesses on the controller, with the fleet's facts from
hostvars when the task gives no hosts (plugins/plugin_utils/_controller_module.py)."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules import migration_readiness
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    COMPANIONS = {"host_overrides": "host_overrides"}
    argument_spec = staticmethod(migration_readiness.argument_spec)
    work = staticmethod(migration_readiness.readiness)
