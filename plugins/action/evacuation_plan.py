# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.evacuation_plan: plans on the controller, with the fleet's facts from hostvars
when the task gives no hosts (plugins/plugin_utils/_controller_module.py)."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules import evacuation_plan
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    COMPANIONS = {"host_overrides": "host_overrides", "migration_uris": "migration_uris"}
    MUTUALLY_EXCLUSIVE = evacuation_plan.MUTUALLY_EXCLUSIVE
    REQUIRED_ONE_OF = evacuation_plan.REQUIRED_ONE_OF
    argument_spec = staticmethod(evacuation_plan.argument_spec)
    work = staticmethod(evacuation_plan.plan)
